//! `weakalign runs`: every run with its status and test PCK.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::experiment::compare::find_runs;

/// Arguments of `weakalign runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Runs folder.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
}

/// Runs `weakalign runs`.
pub fn run(args: RunsArgs) -> Result<i32> {
    let found = find_runs(&args.runs);
    if found.is_empty() {
        println!("no runs under {}", args.runs.display());
    }
    for r in found {
        let pck = r
            .summary
            .as_ref()
            .and_then(|s| s["test_pck"].as_f64())
            .map_or(String::new(), |v| format!("  test PCK {v:.4}"));
        println!(
            "{:<12} step {:>6}  {}{pck}",
            r.status,
            r.step,
            r.dir.display()
        );
    }
    Ok(0)
}
