//! `weakalign eval`: benchmark metrics of a checkpoint, as the authors define them.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::choice;
use crate::backbone::BackboneKind;
use crate::data::embedded::Split;
use crate::device::DeviceChoice;
use crate::eval::keypoints::Procedure;
use crate::eval::{Benchmark, EvalOptions, benchmark};
use crate::experiment::trained::{load_checkpoint, load_official};

/// Arguments of `weakalign eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint: a `checkpoints/<run>/step-N` folder, its model.bpk, or the run's folder.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Or the authors' two-stage checkpoint converted with tools/convert_checkpoint.py.
    #[arg(long, conflicts_with = "checkpoint")]
    pub official: Option<PathBuf>,
    /// Backbone of an official checkpoint (`resnet101` or `vgg16`).
    #[arg(long, default_value = "resnet101", value_parser = choice::<BackboneKind>)]
    pub backbone: BackboneKind,
    /// `embedded`, `pf-willow`, `pf-pascal`, `tss` or `caltech-101`.
    #[arg(long, default_value = "embedded", value_parser = choice::<Benchmark>)]
    pub dataset: Benchmark,
    /// PCK threshold α.
    #[arg(long, default_value_t = 0.1, value_parser = super::pck_alpha)]
    pub alpha: f64,
    /// PF-PASCAL procedure: `scnet` (camera-ready, 224 frame) or `pf` (keypoint bounding box).
    #[arg(long, default_value = "scnet", value_parser = choice::<Procedure>)]
    pub procedure: Procedure,
    /// TPS λ for point transfer (reference eval.py: 0).
    #[arg(long, default_value_t = 0.0, value_parser = super::tps_lambda)]
    pub tps_lambda: f64,
    /// Passes of the affine head: 1 is the paper's model; more refine θ_aff on the source warped
    /// by the θ_aff so far (an extension; see `TwoStage::forward_refined`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub affine_passes: u32,
    /// `embedded` only: which of its splits, `test` (336 pairs) or `validation` (the pairs a
    /// training run validates on; disjoint from every test set).
    #[arg(long, default_value = "test", value_parser = choice::<Split>)]
    pub split: Split,
    /// `datasets/` folder.
    #[arg(long, default_value = "datasets")]
    pub datasets: PathBuf,
    /// Output folder (default: `runs/<experiment>/<hash>/eval` for the run's final checkpoint,
    /// `…/eval/step-N` for an earlier one).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the model runs: `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N` (a GPU needs a `make
    /// build-cuda` or `make build-wgpu` binary).
    #[arg(long, default_value = "cpu", value_parser = choice::<DeviceChoice>)]
    pub device: DeviceChoice,
}

/// Runs `weakalign eval`: the report goes to `<out>/<dataset>.{json,md}` and stdout.
pub fn run(args: EvalArgs) -> Result<i32> {
    let trained = match (&args.checkpoint, &args.official) {
        (Some(c), None) => load_checkpoint(c, args.device)?,
        (None, Some(file)) => load_official(file, args.backbone, args.device)?,
        _ => bail!("give exactly one of --checkpoint and --official"),
    };
    for w in &trained.warnings {
        eprintln!("warning: {w}");
    }
    let out = args.out.clone().unwrap_or_else(|| trained.eval_dir());
    let options = EvalOptions {
        alpha: args.alpha,
        procedure: args.procedure,
        tps_lambda: args.tps_lambda,
        affine_passes: args.affine_passes as usize,
        split: args.split,
        datasets: args.datasets.clone(),
    };
    let bar = indicatif::ProgressBar::new(0);
    let report = benchmark::evaluate(
        trained.subject(),
        args.dataset,
        &options,
        &out,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    report.write(&out)?;
    print!("{}", report.markdown);
    println!(
        "\nwritten to {}",
        out.join(format!("{}.{{json,md}}", report.name)).display()
    );
    Ok(0)
}
