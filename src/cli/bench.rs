//! `weakalign bench`: speed of the two-stage model on a device ([`crate::bench`]); what
//! `make bench-gpu` runs on the GPU machine.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::choice;
use crate::backbone::BackboneKind;
use crate::bench::{BenchOptions, bench_models};
use crate::device::DeviceChoice;

/// Arguments of `weakalign bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Where: `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N`.
    #[arg(long, default_value = "cpu", value_parser = choice::<DeviceChoice>)]
    pub device: DeviceChoice,
    /// Pairs per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Input side.
    #[arg(long, default_value_t = 240)]
    pub size: usize,
    /// Timed runs after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Backbones (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "vgg16,resnet101,efficientnet_lite0", value_parser = choice::<BackboneKind>)]
    pub backbones: Vec<BackboneKind>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also time each part of the training step alone (backbone, correlation, heads, warp,
    /// inlier loss, Adam).
    #[arg(long)]
    pub profile: bool,
}

/// Runs `weakalign bench`.
pub fn run(args: BenchArgs) -> Result<i32> {
    let options = BenchOptions {
        device: args.device,
        batch: args.batch,
        size: args.size,
        runs: args.runs,
        backbones: args.backbones,
        profile: args.profile,
    };
    let results = bench_models(&options, &mut |r| {
        println!(
            "{}: two-stage forward {:.4} s, weak training step {:.4} s (medians of {})",
            r.backbone, r.forward_s, r.train_step_s, options.runs
        )
    })?;
    if let Some(out) = &args.out {
        let json = serde_json::json!({
            "framework": format!("weakalign (burn 0.22, {})", options.device.describe()),
            "device": options.device.to_string(),
            "batch": options.batch, "size": options.size, "runs": options.runs,
            "threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into()),
            "results": results,
        });
        crate::fsutil::write_atomic(out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(0)
}
