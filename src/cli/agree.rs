//! `weakalign agree FILE --device wgpu`: one experiment trained on a device and on the CPU from
//! the same seed, per-step losses and the final test PCK compared
//! ([`crate::experiment::agreement`]).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::choice;
use crate::device::DeviceChoice;
use crate::experiment::agreement::{Tolerances, agree};
use crate::experiment::config::Roots;

/// Arguments of `weakalign agree`.
#[derive(Debug, Args)]
pub struct AgreeArgs {
    /// The experiment, e.g. `experiments/agreement.toml` (one configuration, no sweep).
    pub file: PathBuf,
    /// The device to compare with the CPU: `wgpu`, `wgpu:N`, `cuda` or `cuda:N`.
    #[arg(long, value_parser = choice::<DeviceChoice>)]
    pub device: DeviceChoice,
    /// Override a key of the experiment on both sides: `--set strong.steps=20`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The first global steps whose losses must agree.
    #[arg(long, default_value_t = 10)]
    pub steps: u64,
    /// Largest relative loss error over those steps (`|device − cpu| / max(|cpu|, 1e-3)`).
    #[arg(long, default_value_t = 1e-3)]
    pub loss_tolerance: f64,
    /// Largest difference of the final test PCK.
    #[arg(long, default_value_t = 0.01)]
    pub pck_band: f64,
    /// Root for `runs/`, `checkpoints/`, `datasets/`; completed runs there are reused.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Also write the comparison as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `weakalign agree`; fails when the runs disagree beyond the tolerances.
pub fn run(args: AgreeArgs) -> Result<i32> {
    let tolerances = Tolerances {
        steps: args.steps,
        loss: args.loss_tolerance,
        pck: args.pck_band,
    };
    let a = agree(
        &args.file,
        &args.set,
        args.device,
        &Roots::under(&args.root),
        tolerances,
    )?;
    println!(
        "CPU run {}\n{} run {}\n",
        a.cpu_run.display(),
        args.device,
        a.device_run.display()
    );
    println!(
        "| step | stage | CPU loss | {} loss | rel. error |\n|---|---|---|---|---|",
        args.device
    );
    for s in &a.steps {
        let held = if s.step <= tolerances.steps {
            ""
        } else {
            " (not held)"
        };
        println!(
            "| {} | {} | {:.6} | {:.6} | {:.1e}{held} |",
            s.step, s.stage, s.cpu, s.device, s.error
        );
    }
    println!(
        "\nlosses, first {} steps: worst rel. error {:.2e} (tolerance {:.0e}); all {} steps: {:.2e}",
        tolerances.steps,
        a.loss_error,
        tolerances.loss,
        a.steps.len(),
        a.loss_error_all
    );
    println!(
        "test PCK: CPU {:.4}, {} {:.4}, difference {:+.4} (band ±{})",
        a.cpu_pck,
        args.device,
        a.device_pck,
        a.device_pck - a.cpu_pck,
        tolerances.pck
    );
    if let Some(out) = &args.out {
        let json = serde_json::json!({"device": args.device.to_string(), "agreement": a});
        crate::fsutil::write_atomic(out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    if !a.pass {
        bail!(
            "{} and the CPU disagree beyond the tolerances above",
            args.device
        );
    }
    println!("agreement: ok");
    Ok(0)
}
