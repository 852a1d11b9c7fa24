//! `weakalign align A B`: align your own images with a checkpoint and show the result
//! (see [`crate::eval::align`] for the files written).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::data::image::load_rgb;
use crate::data::points::read_points_csv;
use crate::device::DeviceChoice;
use crate::eval::align::align;
use crate::experiment::trained::load_checkpoint;

/// Arguments of `weakalign align`.
#[derive(Debug, Args)]
pub struct AlignArgs {
    /// Source image (warped onto the target).
    pub source: PathBuf,
    /// Target image.
    pub target: PathBuf,
    /// Checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// CSV of target points `x,y` (1-based pixels) to transfer into the source.
    #[arg(long)]
    pub points: Option<PathBuf>,
    /// TPS λ of the warp.
    #[arg(long, default_value_t = 0.0, value_parser = super::tps_lambda)]
    pub tps_lambda: f64,
    /// Passes of the affine head: 1 is the paper's model; more refine θ_aff on the source warped
    /// by the θ_aff so far (an extension; see `TwoStage::forward_refined`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub affine_passes: u32,
    /// Where the model runs: `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N` (a GPU needs a `make
    /// build-cuda` or `make build-wgpu` binary).
    #[arg(long, default_value = "cpu", value_parser = super::choice::<DeviceChoice>)]
    pub device: DeviceChoice,
}

/// Runs `weakalign align`: every input is read and checked before anything is written.
pub fn run(args: AlignArgs) -> Result<i32> {
    let trained = load_checkpoint(&args.checkpoint, args.device)?;
    for w in &trained.warnings {
        eprintln!("warning: {w}");
    }
    let (source, target) = (load_rgb(&args.source)?, load_rgb(&args.target)?);
    let points = args.points.as_deref().map(read_points_csv).transpose()?;
    let alignment = align(
        &trained.model,
        trained.resolved.normalization(),
        &source,
        &target,
        points.as_deref(),
        args.tps_lambda,
        args.affine_passes as usize,
    )?;
    let written = alignment.write(&args.out, &args.source, &args.target)?;
    println!("wrote {} to {}", written.join(", "), args.out.display());
    Ok(0)
}
