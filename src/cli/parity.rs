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
    /// The device to check: `cuda`, `cuda:N`, `wgpu`, `wgpu:N` (or `cpu`, which checks the harness).
    #[arg(long, default_value = "cuda", value_parser = choice::<DeviceChoice>)]
    pub device: DeviceChoice,
    /// Backbones whose two-stage model is compared (comma-separated; `--backbones` alone for none).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "vgg16,resnet101,efficientnet_lite0", value_parser = choice::<BackboneKind>)]
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
    // The device opens first, so the adapter can head the table.
    args.device.inference()?;
    println!("{}: {}\n", args.device, args.device.describe());
    println!(
        "| operation | forward rel. error | tolerance | gradient rel. error | tolerance | | device s |\n|---|---|---|---|---|---|---|"
    );
    let results = parity(args.device, &args.backbones, args.size, &mut |r| {
        let (gradient, gradient_tolerance) = match r.gradient {
            Some(g) => (format!("{g:.2e}"), format!("{:.0e}", r.gradient_tolerance)),
            None => ("– (forward only)".to_string(), "–".to_string()),
        };
        println!(
            "| {} | {:.2e} | {:.0e} | {gradient} | {gradient_tolerance} | {} | {:.1} |",
            r.op,
            r.forward,
            r.tolerance,
            if r.pass { "ok" } else { "FAIL" },
            r.seconds
        );
    })?;
    if let Some(out) = &args.out {
        let json = serde_json::json!({
            "device": args.device.to_string(),
            "backend": args.device.describe(),
            "results": results,
        });
        crate::fsutil::write_atomic(out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    let failed = results.iter().filter(|r| !r.pass).count();
    if failed > 0 {
        bail!("{failed} of {} operations outside tolerance", results.len());
    }
    Ok(0)
}
