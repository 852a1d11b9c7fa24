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

/// `  slurm JOB_TASK (job J, restart R)` for a run a Slurm array task wrote (its `slurm.json`).
fn slurm_ids(dir: &std::path::Path) -> String {
    let Some(ids) = std::fs::read_to_string(dir.join("slurm.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return String::new();
    };
    let field = |k: &str| ids[k].as_str().map(str::to_string);
    let task = match (field("array_job_id"), field("array_task_id")) {
        (Some(a), Some(t)) => format!("{a}_{t}"),
        _ => field("job_id").unwrap_or_default(),
    };
    format!(
        "  slurm {task} (job {}, restart {})",
        field("job_id").unwrap_or_default(),
        field("restart_count").unwrap_or_else(|| "0".into())
    )
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
            "{:<12} step {:>6}  {}{pck}{}",
            r.status,
            r.step,
            r.dir.display(),
            slurm_ids(&r.dir)
        );
    }
    Ok(0)
}
