//! `weakalign exp FILE`: run an experiment (each cell of its sweep), or print its resolved
//! configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};
use clap::Args;

use crate::device::DeviceChoice;
use crate::error::exit_code;
use crate::experiment::config::Roots;
use crate::experiment::runner::RunOptions;
use crate::experiment::sweep::{Cell, Event, cells, run_cells};

/// Arguments of `weakalign exp`.
#[derive(Debug, Args)]
pub struct ExpArgs {
    /// The experiment, e.g. `experiments/affine_tps_soft.toml`.
    pub file: PathBuf,
    /// Override a key: `--set weak.lr=1e-4` (TOML values; bare words are strings).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from the newest valid checkpoint (or of the run directory given).
    #[arg(long, value_name = "RUN_DIR", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Accept a changed configuration on resume (the diff is recorded in the run).
    #[arg(long)]
    pub allow_config_change: bool,
    /// Print the resolved configuration and its hash, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Root for `runs/`, `checkpoints/`, `datasets/` (default: the current directory).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Where to train: `cpu`, `cuda` or `cuda:N` (the experiment's `device` key; CUDA needs a
    /// `make build-cuda` binary).
    #[arg(long, value_parser = super::choice::<DeviceChoice>)]
    pub device: Option<DeviceChoice>,
    /// Test hook: abort the process without any cleanup right after this global step (a crash).
    #[arg(long, hide = true, value_name = "STEP")]
    pub crash_after_step: Option<u64>,
}

/// The resolved configuration of each cell, as `--dry-run` prints it.
fn print_cell(cell: &Cell) {
    let (r, axes) = (&cell.resolved, &cell.axes);
    println!(
        "# {} — hash {} (cell {}){}",
        r.experiment.name,
        r.hash,
        r.cell_hash,
        if axes.is_empty() {
            String::new()
        } else {
            format!(" — {}", axes.join(", "))
        }
    );
    println!("{}", r.experiment.to_toml());
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP set the returned flag (the runner checkpoints at the
/// current step, marks the run INTERRUPTED and stops); a second signal exits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(exit_code::INTERRUPTED); // second signal: leave now
        }
        eprintln!("\ninterrupted: writing a checkpoint, then stopping (a second signal aborts)");
    });
    interrupt
}

/// Prints a sweep's progress.
fn report(event: Event<'_>) {
    match event {
        Event::Start { index, total, cell } if total > 1 => eprintln!(
            "== cell {}/{total}: {} ({})",
            index + 1,
            cell.resolved.hash,
            cell.axes.join(", ")
        ),
        Event::Start { .. } => {}
        Event::Finished { cell, outcome: o } => {
            let exp = &cell.resolved.experiment;
            let test = o.test.map_or(String::new(), |t| {
                format!(
                    " — test PCK@{} {:.4} (identity {:.4})",
                    exp.eval.alpha, t.pck, t.identity
                )
            });
            println!(
                "{}: {:?} at step {}{test} — {}",
                exp.name,
                o.status,
                o.step,
                o.dir.display()
            );
        }
        Event::Failed { cell, error } => {
            eprintln!("error: cell {}: {error}", cell.resolved.hash)
        }
    }
}

/// Runs `weakalign exp`.
pub fn run(args: ExpArgs) -> Result<i32> {
    let mut overrides = args.set.clone();
    if let Some(device) = args.device {
        overrides.push(format!("device=\"{device}\""));
    }
    let cells = cells(&args.file, &overrides)?;
    let warnings: std::collections::BTreeSet<&String> =
        cells.iter().flat_map(|c| &c.resolved.warnings).collect();
    for w in warnings {
        eprintln!("warning: {}: {w}", args.file.display());
    }
    if args.dry_run {
        cells.iter().for_each(print_cell);
        return Ok(0);
    }
    let opts = RunOptions {
        resume: args.resume.is_some(),
        resume_dir: args.resume.flatten(),
        allow_config_change: args.allow_config_change,
        roots: Roots::under(&args.root),
        interrupt: Some(interrupt_flag()),
        cell_label: String::new(),
        crash_after_step: args.crash_after_step,
    };
    let outcome = run_cells(&cells, &opts, &mut report)?;
    if outcome.interrupted {
        return Ok(exit_code::INTERRUPTED);
    }
    if outcome.failed > 0 {
        bail!("{} of {} sweep cells failed", outcome.failed, outcome.total);
    }
    Ok(0)
}
