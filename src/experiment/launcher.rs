//! Sweeps on a Slurm cluster: one job array per submission, one array task per cell that is not
//! yet complete (`weakalign exp FILE --cell INDEX --resume`), on the shared filesystem the runs
//! already use.
//!
//! Time limits and preemption: each task asks Slurm for `SIGUSR1` to its batch shell
//! [`SIGNAL_LEAD_S`] seconds before its limit (`--signal=B:USR1@…`); the shell forwards SIGTERM to
//! `weakalign` (which checkpoints at the current step, marks the run INTERRUPTED and exits 130)
//! and requeues the task (`scontrol requeue`). Preemption and `scontrol requeue` send SIGTERM to
//! the task's processes directly, with the same effect; `--requeue` lets Slurm start the task
//! again, and `--resume` continues it from its checkpoint, bit-exact. A cell already complete is
//! not submitted; a cell whose run is held by a live task is not submitted again (and a second
//! task on it would be refused by the run's lock).

use std::path::{Path, PathBuf};

use super::config::{LauncherSection, Roots};
use super::run_dir::{RunDir, Status};
use super::runner::run_paths;
use super::sweep::Cell;
use crate::error::{Error, Result};

/// Seconds before the time limit at which a task is told to checkpoint and requeue.
pub const SIGNAL_LEAD_S: u32 = 120;

/// What a submission needs besides the cells.
#[derive(Clone, Debug)]
pub struct SlurmJob {
    /// The `weakalign` binary the tasks run (absolute).
    pub binary: PathBuf,
    /// The experiment file (absolute).
    pub file: PathBuf,
    /// The `--root` of the runs (absolute).
    pub root: PathBuf,
    /// The `--set` overrides every task passes on.
    pub overrides: Vec<String>,
    /// Tasks pass `--reuse-strong` on (a task whose sibling has finished identical strong
    /// stages starts from their end).
    pub reuse_strong: bool,
    /// Slurm options (flags over the file's `[launcher]`).
    pub options: LauncherSection,
}

/// Which cells to submit: those neither complete nor held by a live task, with why the others
/// are left out.
pub fn pending(cells: &[Cell], roots: &Roots) -> (Vec<usize>, Vec<String>) {
    let mut submit = Vec::new();
    let mut skipped = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        let (run, _) = run_paths(&cell.resolved, roots);
        if RunDir::read_status(&run).is_some_and(|s| s.status == Status::Completed) {
            skipped.push(format!(
                "cell {i} ({}): already COMPLETED",
                cell.resolved.hash
            ));
        } else if let Some(holder) = RunDir::live_holder(&run) {
            skipped.push(format!(
                "cell {i} ({}): running (held by {holder})",
                cell.resolved.hash
            ));
        } else {
            submit.push(i);
        }
    }
    (submit, skipped)
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The sbatch script of `job` for the cells `indices` (array task id = cell index), writing its
/// logs to `logs/%A_%a.out`.
pub fn script(job: &SlurmJob, name: &str, indices: &[usize], logs: &Path) -> String {
    let o = &job.options;
    let mut array = indices
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if let Some(k) = o.max_parallel {
        array += &format!("%{k}");
    }
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("# weakalign sweep `{name}`: one array task per cell (task id = cell index)."),
        format!("#SBATCH --job-name={}", quote(&format!("weakalign-{name}"))),
        format!("#SBATCH --array={array}"),
        format!(
            "#SBATCH --output={}",
            quote(&logs.join("%A_%a.out").to_string_lossy())
        ),
        "#SBATCH --open-mode=append".into(),
        "#SBATCH --requeue".into(),
        format!("#SBATCH --signal=B:USR1@{SIGNAL_LEAD_S}"),
    ];
    if let Some(p) = &o.partition {
        lines.push(format!("#SBATCH --partition={}", quote(p)));
    }
    if let Some(n) = o.gpus_per_task {
        lines.push(format!("#SBATCH --gpus-per-task={n}"));
    }
    if let Some(n) = o.cpus_per_task {
        lines.push(format!("#SBATCH --cpus-per-task={n}"));
    }
    if let Some(t) = &o.time {
        lines.push(format!("#SBATCH --time={}", quote(t)));
    }
    let sets: String = job
        .overrides
        .iter()
        .map(|s| format!(" --set {}", quote(s)))
        .collect();
    lines.push(String::new());
    lines.push(
        "echo \"task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} (job ${SLURM_JOB_ID}, restart \
         ${SLURM_RESTART_COUNT:-0}) on $(hostname) at $(date -Is)\""
            .into(),
    );
    lines.push(
        "export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-${RAYON_NUM_THREADS:-1}}\"".into(),
    );
    lines.push(format!(
        "{} exp {} --root {} --cell \"$SLURM_ARRAY_TASK_ID\" --resume{reuse}{sets} &",
        quote(&job.binary.to_string_lossy()),
        quote(&job.file.to_string_lossy()),
        quote(&job.root.to_string_lossy()),
        reuse = if job.reuse_strong {
            " --reuse-strong"
        } else {
            ""
        },
    ));
    lines.push("child=$!".into());
    lines.push(
        "# Near the time limit: weakalign checkpoints on SIGTERM (exit 130); then requeue the task."
            .into(),
    );
    lines.push(
        "on_limit() { kill -TERM \"$child\"; wait \"$child\"; \
         scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"; exit 0; }"
            .into(),
    );
    lines.push("trap on_limit USR1".into());
    lines.push("wait \"$child\"".into());
    lines.push(String::new());
    lines.join("\n")
}

/// Submits `script` with `sbatch`; returns the job id.
pub fn submit(script: &Path) -> Result<String> {
    let out = std::process::Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| Error::io(Path::new("sbatch"), e))?;
    if !out.status.success() {
        return Err(Error::data(
            script,
            None,
            format!(
                "sbatch refused it: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let id = String::from_utf8_lossy(&out.stdout);
    Ok(id.trim().split(';').next().unwrap_or_default().to_string())
}

/// The Slurm ids of the task this process runs in, if any (`slurm.json` in its run folder).
pub fn task_ids() -> Option<serde_json::Value> {
    let var = |k: &str| std::env::var(k).ok();
    let job = var("SLURM_JOB_ID")?;
    Some(serde_json::json!({
        "job_id": job,
        "array_job_id": var("SLURM_ARRAY_JOB_ID"),
        "array_task_id": var("SLURM_ARRAY_TASK_ID"),
        "restart_count": var("SLURM_RESTART_COUNT"),
        "node": var("SLURMD_NODENAME"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell_only_where_needed() {
        assert_eq!(quote("weak.lr=1e-4"), "weak.lr=1e-4");
        assert_eq!(quote("loss.inlier=\"hard\""), "'loss.inlier=\"hard\"'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
