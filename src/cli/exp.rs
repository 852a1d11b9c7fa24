//! `weakalign exp FILE`: run an experiment (each cell of its sweep), or print its resolved
//! configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};
use clap::Args;

use crate::device::DeviceChoice;
use crate::error::exit_code;
use crate::experiment::config::{LauncherSection, Roots};
use crate::experiment::launcher::{self, SlurmJob};
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
    /// A run without a checkpoint of its own starts from another run's checkpoint at the end of
    /// the strong stages where their configurations differ only in the weak stage (weak.*,
    /// the inlier count) and it was trained with this device and thread count: the same bits
    /// as training them again, at the cost of the weak stage alone. Runs of the same experiment
    /// are asked first, then those of every other experiment under the runs root. The run
    /// records the donor in `strong-stages-from.json`.
    #[arg(long)]
    pub reuse_strong: bool,
    /// Print the resolved configuration and its hash, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Root for `runs/`, `checkpoints/`, `datasets/` (default: the current directory).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Where to train: `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N` (the experiment's `device`
    /// key; a GPU needs a `make build-cuda` or `make build-wgpu` binary).
    #[arg(long, value_parser = super::choice::<DeviceChoice>)]
    pub device: Option<DeviceChoice>,
    /// Test hook: abort the process without any cleanup right after this global step (a crash).
    #[arg(long, hide = true, value_name = "STEP")]
    pub crash_after_step: Option<u64>,
    /// Run only this cell of the sweep: its index (0-based, as `--dry-run` lists them) or its
    /// configuration hash. What each Slurm array task runs.
    #[arg(long, value_name = "INDEX|HASH")]
    pub cell: Option<String>,
    /// Where the cells run: `local` (here, one after another) or `slurm` (one job array, a task
    /// per cell not yet complete; with --dry-run the script is written, not submitted).
    #[arg(long, value_enum, default_value = "local")]
    pub launcher: Launcher,
    /// Slurm partition (`[launcher] partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per Slurm task (`[launcher] gpus_per_task`).
    #[arg(long)]
    pub gpus_per_task: Option<u32>,
    /// CPUs per Slurm task, also its thread count (`[launcher] cpus_per_task`).
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// Time limit per Slurm task, e.g. `04:00:00` (`[launcher] time`); tasks checkpoint and
    /// requeue shortly before it.
    #[arg(long, value_name = "HH:MM:SS")]
    pub time: Option<String>,
    /// At most this many Slurm tasks at once (`[launcher] max_parallel`).
    #[arg(long, value_name = "K")]
    pub max_parallel: Option<u32>,
}

/// Where `weakalign exp` runs the cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    /// Here, one after another.
    Local,
    /// A Slurm job array.
    Slurm,
}

/// The cell `--cell` names (index or hash) out of `cells`.
fn select(cells: Vec<Cell>, wanted: &str) -> Result<Vec<Cell>> {
    let n = cells.len();
    let found = match wanted.parse::<usize>() {
        Ok(i) if wanted.len() < 16 => cells.into_iter().nth(i),
        _ => cells.into_iter().find(|c| c.resolved.hash == wanted),
    };
    match found {
        Some(cell) => Ok(vec![cell]),
        None => bail!(
            "--cell {wanted}: no such cell (the sweep has {n}: indices 0–{}, or a configuration \
             hash as `--dry-run` prints)",
            n.saturating_sub(1)
        ),
    }
}

/// Writes the sweep's sbatch script under `runs/<name>/slurm/` and submits it (not with
/// `--dry-run`).
fn launch_slurm(args: &ExpArgs, cells: &[Cell], overrides: &[String]) -> Result<i32> {
    let absolute = |p: &Path| -> Result<PathBuf> { Ok(std::path::absolute(p)?) };
    let root = absolute(&args.root)?;
    let roots = Roots::under(&root);
    let (indices, skipped) = launcher::pending(cells, &roots);
    for s in &skipped {
        println!("{s}: not submitted");
    }
    if indices.is_empty() {
        println!("nothing to submit: every cell is complete or running");
        return Ok(0);
    }
    let file_options = &cells[0].resolved.experiment.launcher;
    let options = LauncherSection {
        partition: args.partition.clone().or(file_options.partition.clone()),
        gpus_per_task: args.gpus_per_task.or(file_options.gpus_per_task),
        cpus_per_task: args.cpus_per_task.or(file_options.cpus_per_task),
        time: args.time.clone().or(file_options.time.clone()),
        max_parallel: args.max_parallel.or(file_options.max_parallel),
    };
    if let Some(t) = &options.time {
        crate::experiment::resolve::rule::slurm_time(t)
            .map_err(|m| anyhow::anyhow!("--time {m}"))?;
    }
    if let Some(p) = &options.partition {
        crate::experiment::resolve::rule::slurm_name(p)
            .map_err(|m| anyhow::anyhow!("--partition {m}"))?;
    }
    let job = SlurmJob {
        binary: std::env::current_exe()?,
        file: absolute(&args.file)?,
        root,
        overrides: overrides.to_vec(),
        reuse_strong: args.reuse_strong,
        options,
    };
    let name = &cells[0].resolved.experiment.name;
    let folder = roots.runs.join(name).join("slurm");
    let stamp = crate::experiment::run_dir::unix_now();
    let path = folder.join(format!("sweep-{stamp}.sbatch"));
    let text = launcher::script(&job, name, &indices, &folder);
    crate::fsutil::write_atomic(&path, text.as_bytes())?;
    let cells_list = indices
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if args.dry_run {
        println!(
            "wrote {} (cells {cells_list}); not submitted (--dry-run)",
            path.display()
        );
        return Ok(0);
    }
    let id = launcher::submit(&path)?;
    println!(
        "submitted job {id}: {} task(s), cells {cells_list}; script {}; logs {}/{id}_<cell>.out",
        indices.len(),
        path.display(),
        folder.display()
    );
    Ok(0)
}

/// The resolved configuration of each cell, as `--dry-run` prints it. The header line also
/// names the strong-stages hash, which `tools/sweep.sh` reads to train each set of identical
/// strong stages once before the cells that reuse them.
fn print_cell(cell: &Cell) {
    let (r, axes) = (&cell.resolved, &cell.axes);
    println!(
        "# {} — hash {} (cell {}, strong stages {}){}",
        r.experiment.name,
        r.hash,
        r.cell_hash,
        r.experiment.strong_stages_hash(),
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
    let mut cells = cells(&args.file, &overrides)?;
    let warnings: std::collections::BTreeSet<&String> =
        cells.iter().flat_map(|c| &c.resolved.warnings).collect();
    for w in warnings {
        eprintln!("warning: {}: {w}", args.file.display());
    }
    if args.launcher == Launcher::Slurm {
        if args.cell.is_some() {
            bail!("--cell runs one cell here: it does not combine with --launcher slurm");
        }
        return launch_slurm(&args, &cells, &overrides);
    }
    if let Some(wanted) = &args.cell {
        cells = select(cells, wanted)?;
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
        reuse_strong: args.reuse_strong,
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
