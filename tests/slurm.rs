//! Sweeps through a real Slurm (a single-node cluster: `tools/slurm_local.sh start`): a 2 × 2
//! smoke sweep submitted as a job array completes with the same per-cell results as the same
//! sweep run here, byte for byte; a task requeued mid-run (`scontrol requeue`: SIGTERM, then a
//! new start) or signalled at its time limit (SIGUSR1 to the batch shell, which checkpoints and
//! requeues) resumes from its checkpoint and ends byte-identical to an uninterrupted run; cells
//! completed earlier are not submitted again. Skipped with a message where no Slurm answers,
//! except in CI running as root, which must start one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests share one small cluster: one at a time.
static CLUSTER: Mutex<()> = Mutex::new(());

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_weakalign")
}

fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether a Slurm node answers (see the module documentation for when its absence fails).
fn slurm_up() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && {
                let s = String::from_utf8_lossy(&o.stdout);
                s.contains("idle") || s.contains("mixed") || s.contains("allocated")
            }
        });
    if !up {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        assert!(
            std::env::var_os("CI").is_none() || !root,
            "CI runs as root and must start Slurm (tools/slurm_local.sh start)"
        );
        eprintln!(
            "skipping: no Slurm answers (start one with `tools/slurm_local.sh start`, as root)"
        );
    }
    up
}

/// An experiment file `name` under `dir`: the smoke experiment plus `extra` lines.
fn experiment(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let smoke = std::fs::read_to_string(project().join("experiments/smoke.toml")).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("name = \"{name}\"\n{smoke}\n{extra}")).unwrap();
    path
}

/// `weakalign exp FILE --root ROOT ARGS`.
fn exp(file: &Path, root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("exp")
        .arg(file)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

/// Submits through `--launcher slurm` and returns the job id.
fn submit(file: &Path, root: &Path, args: &[&str]) -> String {
    let mut all = vec!["--launcher", "slurm", "--cpus-per-task", "1"];
    all.extend(args);
    let out = exp(file, root, &all);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    t.split("submitted job ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no job id in {t}"))
        .to_string()
}

/// Waits until job `id` has left the queue.
fn wait_job(id: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let out = Command::new("squeue")
            .args(["-h", "-j", id])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Per run (config hash): the test PCK and the final checkpoint's model, optimizer and state
/// bytes and `metrics.jsonl`.
fn results(root: &Path, name: &str) -> Vec<(String, String, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join("runs").join(name))
        .unwrap()
        .flatten()
    {
        let run = e.path();
        if !run.join("status.json").exists() {
            continue; // the slurm/ folder
        }
        let hash = run.file_name().unwrap().to_string_lossy().to_string();
        let summary = std::fs::read_to_string(run.join("summary.json"))
            .unwrap_or_else(|_| panic!("{} did not complete", run.display()));
        let pck: serde_json::Value = serde_json::from_str(&summary).unwrap();
        let ckpt = root.join("checkpoints").join(format!("{name}-{hash}"));
        let last = weakalign::experiment::checkpoint::list(&ckpt).remove(0);
        let mut bytes: Vec<Vec<u8>> = ["model.bpk", "optimizer.bin", "state.json"]
            .iter()
            .map(|f| std::fs::read(last.join(f)).unwrap())
            .collect();
        bytes.push(std::fs::read(run.join("metrics.jsonl")).unwrap());
        out.push((hash, pck["test_pck"].to_string(), bytes));
    }
    out.sort();
    out
}

#[test]
fn a_slurm_sweep_matches_the_local_sweep_and_completed_cells_are_not_resubmitted() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if !slurm_up() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sweep = "[sweep]\n\"loss.inlier\" = [\"soft\", \"hard\"]\nseed = [1, 2]\n";
    let file = experiment(dir.path(), "slurm_sweep", sweep);
    let (cluster, here) = (dir.path().join("cluster"), dir.path().join("here"));
    let id = submit(&file, &cluster, &["--max-parallel", "2"]);
    let local = exp(&file, &here, &[]);
    assert!(local.status.success(), "{}", text(&local));
    wait_job(&id);
    let (a, b) = (
        results(&cluster, "slurm_sweep"),
        results(&here, "slurm_sweep"),
    );
    assert_eq!(a.len(), 4);
    for ((ha, pa, fa), (hb, pb, fb)) in a.iter().zip(&b) {
        assert_eq!((ha, pa), (hb, pb), "per-cell test PCK");
        assert!(fa == fb, "cell {ha}: final checkpoint or metrics differ");
    }
    let runs = Command::new(binary())
        .args(["runs", "--runs"])
        .arg(cluster.join("runs"))
        .output()
        .unwrap();
    let listed = text(&runs);
    assert_eq!(
        listed.matches(&format!("slurm {id}_")).count(),
        4,
        "{listed}"
    );
    // Submitting again submits nothing: every cell is complete.
    let again = exp(&file, &cluster, &["--launcher", "slurm"]);
    let t = text(&again);
    assert!(again.status.success(), "{t}");
    assert!(
        t.contains("nothing to submit") && t.matches("already COMPLETED").count() == 4,
        "{t}"
    );
}

#[test]
fn a_requeued_slurm_task_resumes_and_ends_identical_to_an_uninterrupted_run() {
    // Preemption or an operator: `scontrol requeue` (SIGTERM to the task, then a new start).
    requeued_task_ends_identical(|id| vec!["scontrol".into(), "requeue".into(), format!("{id}_0")]);
}

#[test]
fn a_task_at_its_time_limit_checkpoints_requeues_itself_and_ends_identical() {
    // What `--signal=B:USR1@120` sends before the limit: the batch shell checkpoints and requeues.
    requeued_task_ends_identical(|id| {
        vec![
            "scancel".into(),
            "--batch".into(),
            "--signal=USR1".into(),
            format!("{id}_0"),
        ]
    });
}

/// Submits a one-cell run, interrupts it mid-training with the command `interrupt(job id)`, and
/// checks it resumed after the requeue and ended byte-identical to an uninterrupted local run.
fn requeued_task_ends_identical(interrupt: impl Fn(&str) -> Vec<String>) {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if !slurm_up() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = experiment(dir.path(), "slurm_requeue", "");
    let sets = [
        "--set",
        "strong.steps=20",
        "--set",
        "checkpoint.every=4",
        "--set",
        "eval.every=100",
    ];
    let (cluster, here) = (dir.path().join("cluster"), dir.path().join("here"));
    let id = submit(&file, &cluster, &sets);
    // Requeue once training is under way (step ≥ 10 of 43).
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let step = std::fs::read_dir(cluster.join("runs/slurm_requeue"))
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("status.json")).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter_map(|v| v["step"].as_u64())
            .next()
            .unwrap_or(0);
        if step >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "the task did not start training");
        std::thread::sleep(Duration::from_millis(200));
    }
    let command = interrupt(&id);
    let requeue = Command::new(&command[0])
        .args(&command[1..])
        .output()
        .unwrap();
    assert!(requeue.status.success(), "{command:?}: {}", text(&requeue));
    let local = exp(&file, &here, &sets);
    assert!(local.status.success(), "{}", text(&local));
    wait_job(&id);
    let log = std::fs::read_to_string(cluster.join(format!("runs/slurm_requeue/slurm/{id}_0.out")))
        .unwrap();
    assert!(
        log.contains("Interrupted at step") && log.contains("resuming from"),
        "{log}"
    );
    let (a, b) = (
        results(&cluster, "slurm_requeue"),
        results(&here, "slurm_requeue"),
    );
    assert_eq!(a.len(), 1);
    assert_eq!((&a[0].0, &a[0].1), (&b[0].0, &b[0].1));
    assert!(
        a[0].2 == b[0].2,
        "final checkpoint or metrics differ after the requeue"
    );
    let slurm: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            cluster
                .join("runs/slurm_requeue")
                .join(&a[0].0)
                .join("slurm.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(slurm["restart_count"], "1", "{slurm}");
}

#[test]
fn launcher_options_come_from_the_file_flags_override_them_and_the_hash_ignores_them() {
    let dir = tempfile::tempdir().unwrap();
    let plain = experiment(dir.path(), "launch_opts", "");
    let with = dir.path().join("with_launcher.toml");
    std::fs::write(
        &with,
        std::fs::read_to_string(&plain).unwrap()
            + "\n[launcher]\npartition = \"gpu\"\ntime = \"01:00:00\"\ncpus_per_task = 4\n",
    )
    .unwrap();
    let hash = |file: &Path| {
        let out = exp(file, dir.path(), &["--dry-run"]);
        text(&out).split("hash ").nth(1).unwrap()[..16].to_string()
    };
    assert_eq!(
        hash(&plain),
        hash(&with),
        "[launcher] must not change the hash"
    );
    let out = exp(
        &with,
        dir.path(),
        &[
            "--launcher",
            "slurm",
            "--dry-run",
            "--time",
            "02:00:00",
            "--reuse-strong",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let script = std::fs::read_dir(dir.path().join("runs/launch_opts/slurm"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .next()
        .unwrap();
    for line in [
        "#SBATCH --partition=gpu",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --time=02:00:00",
        "#SBATCH --array=0",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
        "--cell \"$SLURM_ARRAY_TASK_ID\" --resume --reuse-strong",
    ] {
        assert!(script.contains(line), "{line:?} missing from\n{script}");
    }
    // A bad time limit is refused naming the flag, and nothing is written for it.
    let bad = exp(
        &with,
        dir.path(),
        &["--launcher", "slurm", "--dry-run", "--time", "soon"],
    );
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("--time \"soon\""), "{}", text(&bad));
}
