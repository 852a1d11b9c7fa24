//! `weakalign parity --device cuda`: a device's results against the CPU's ([`crate::parity`]).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::choice;
use crate::backbone::BackboneKind;
use crate::device::DeviceChoice;
use crate::parity::parity;

/// Arguments of `weakalign parity`.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// The device to check: `cuda`, `cuda:N` (or `cpu`, which checks the harness).
    #[arg(long, default_value = "cuda", value_parser = choice::<DeviceChoice>)]
    pub device: DeviceChoice,
    /// Backbones whose two-stage model is compared (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', default_value = "vgg16,resnet101,efficientnet_lite0", value_parser = choice::<BackboneKind>)]
    pub backbones: Vec<BackboneKind>,
    /// Input side of the model comparisons.
    #[arg(long, default_value_t = 240)]
    pub size: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `weakalign parity`; fails when an operation is outside its tolerance.
pub fn run(args: ParityArgs) -> Result<i32> {
    let results = parity(args.device, &args.backbones, args.size)?;
    println!(
        "| operation | forward rel. error | gradient rel. error | tolerance | |\n|---|---|---|---|---|"
    );
    for r in &results {
        println!(
            "| {} | {:.2e} | {:.2e} | {:.0e} | {} |",
            r.op,
            r.forward,
            r.gradient,
            r.tolerance,
            if r.pass { "ok" } else { "FAIL" }
        );
    }
    if let Some(out) = &args.out {
        let json = serde_json::json!({"device": args.device.to_string(), "results": results});
        crate::fsutil::write_atomic(out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    let failed = results.iter().filter(|r| !r.pass).count();
    if failed > 0 {
        bail!("{failed} of {} operations outside tolerance", results.len());
    }
    Ok(0)
}
