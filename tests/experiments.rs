//! Experiments: every shipped file resolves (broken ones: tests/bad_input_corpus.rs),
//! crash + resume is bit-exact, TensorBoard files read back with TensorBoard's own reader,
//! checkpoints survive corruption, and runs refuse what they must.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use weakalign::experiment::config::{expand_sweep, load};
use weakalign::experiment::resolve::resolve;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weakalign"))
}

fn smoke() -> PathBuf {
    root().join("experiments/smoke.toml")
}

fn exp(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("exp")
        .arg(smoke())
        .arg("--root")
        .arg(dir)
        .args(extra)
        .current_dir(root())
        .output()
        .expect("run weakalign")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_dir(root: &Path) -> PathBuf {
    let exp = root.join("runs/smoke");
    std::fs::read_dir(&exp)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// A smoke run under `root` crashed (aborted without cleanup) right after step 5, with its
/// checkpoint at step 4: its run directory.
fn crashed_after_step_5(root: &Path) -> PathBuf {
    let crashed = exp(root, &["--crash-after-step", "5"]);
    assert!(!crashed.status.success());
    run_dir(root)
}

fn checkpoint_root(root: &Path) -> PathBuf {
    std::fs::read_dir(root.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap()
}

#[test]
fn every_experiment_file_parses_and_resolves() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("experiments")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (e, _) in expand_sweep(&path, &text, &[]).unwrap_or_else(|e| panic!("{e}")) {
                resolve(&e, &path).unwrap_or_else(|e| panic!("{e}"));
            }
            n += 1;
        }
    }
    assert!(n >= 6, "{n} experiment files");
}

#[test]
fn overrides_are_checked_as_they_are_applied() {
    // Overrides are checked too.
    let e = load(&smoke(), &["weak.lerning_rate=1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("weak.lerning_rate"), "{e}");
    let e = load(&smoke(), &["weak.steps=many".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("steps") || e.contains("invalid type"), "{e}");
    assert_eq!(
        load(&smoke(), &["weak.steps=7".into()]).unwrap().weak.steps,
        7
    );
}

#[test]
fn dry_run_prints_resolved_config_and_hash() {
    let out = Command::new(binary())
        .args(["exp", "--dry-run"])
        .arg(smoke())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let e = load(&smoke(), &[]).unwrap();
    assert!(
        t.contains(&e.hash()) && t.contains("image_size = 176"),
        "{t}"
    );
}

/// All float parameters of a model record, as raw bytes in visiting order.
fn parameter_bytes(path: &Path) -> Vec<u8> {
    struct Bytes(Vec<u8>);
    impl ModuleVisitor for Bytes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().as_bytes());
        }
    }
    let mut v = Bytes(Vec::new());
    smoke_model(path).visit(&mut v);
    v.0
}

/// The smoke experiment's model with the record at `path`.
fn smoke_model(path: &Path) -> weakalign::model::TwoStage {
    let exp = load(&smoke(), &[]).unwrap();
    let r = resolve(&exp, &smoke()).unwrap();
    let mut model = r
        .model
        .init_two_stage(&weakalign::device::inference())
        .unwrap();
    weakalign::weights::load_record(&mut model, path).unwrap();
    model
}

#[test]
fn crash_and_resume_is_bit_exact_and_identical_state_gives_identical_checkpoint_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = exp(a.path(), &[]);
    assert!(full.status.success(), "{}", text(&full));
    // Crash without any cleanup after step 5 (a checkpoint exists at step 4).
    let crashed = exp(b.path(), &["--crash-after-step", "5"]);
    assert!(!crashed.status.success());
    let runs = Command::new(binary())
        .args(["runs", "--runs"])
        .arg(b.path().join("runs"))
        .output()
        .unwrap();
    assert!(text(&runs).contains("CRASHED"), "{}", text(&runs));
    // Without --resume the run is refused; with it, it completes.
    let refused = exp(b.path(), &[]);
    assert!(!refused.status.success() && text(&refused).contains("--resume"));
    assert_eq!(refused.status.code(), Some(5), "resume conflict exit code");
    let resumed = exp(b.path(), &["--resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    let (ra, rb) = (run_dir(a.path()), run_dir(b.path()));
    let ma = std::fs::read(ra.join("metrics.jsonl")).unwrap();
    assert!(!ma.is_empty());
    assert_eq!(
        ma,
        std::fs::read(rb.join("metrics.jsonl")).unwrap(),
        "metrics.jsonl must be identical"
    );
    let last = |root: &Path| checkpoint_root(root).join("step-00000009/model.bpk");
    assert_eq!(
        parameter_bytes(&last(a.path())),
        parameter_bytes(&last(b.path())),
        "parameters must be identical"
    );
    // Identical state gives byte-identical checkpoint files (canonical parameter ids), the
    // resumed run's included.
    for f in [
        "model.bpk",
        "optimizer.bin",
        "state.json",
        "config.toml",
        "manifest.json",
    ] {
        let file = |root: &Path| std::fs::read(checkpoint_root(root).join("step-00000009").join(f));
        assert!(
            file(a.path()).unwrap() == file(b.path()).unwrap(),
            "{f} differs between the uninterrupted and the resumed run"
        );
    }
    let sa: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ra.join("summary.json")).unwrap()).unwrap();
    let sb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rb.join("summary.json")).unwrap()).unwrap();
    assert_eq!(sa["test_pck"], sb["test_pck"]);
    // Resumed in the environment it was trained in: no change to record.
    assert!(
        !rb.join("environment-change-at-step-4.json").exists(),
        "{}",
        text(&resumed)
    );
    // Bit-reproducibility holds for a thread count, so the run records it, and the processor.
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ra.join("environment.json")).unwrap())
            .unwrap();
    assert!(env["threads"].as_u64().unwrap() >= 1, "{env}");
    assert!(env.get("rayon_threads").is_some(), "{env}");
    if cfg!(target_os = "linux") {
        assert!(!env["cpu"].as_str().unwrap().is_empty(), "{env}");
    }
    // A completed run is skipped on rerun.
    let again = exp(a.path(), &[]);
    assert!(
        again.status.success() && text(&again).contains("already COMPLETED"),
        "{}",
        text(&again)
    );
}

#[test]
fn the_strong_stages_hash_ignores_the_weak_stage_and_nothing_else() {
    let hashes = |set: &str| {
        let e = load(&smoke(), &[set.to_string()]).unwrap();
        (e.hash(), e.strong_stages_hash())
    };
    let (hash, strong) = hashes("seed=1");
    for weak_only in [
        "weak.lr=1e-3",
        "weak.steps=0",
        "weak.flip=true",
        "loss.inlier=hard",
        "loss.hard_radius=2.0",
        "loss.normalize=false",
    ] {
        let (h, s) = hashes(weak_only);
        assert_ne!(h, hash, "{weak_only} changes the configuration");
        assert_eq!(s, strong, "{weak_only} changes only the weak stage");
    }
    for shared in [
        "seed=2",
        "strong.lr=5e-4",
        "strong.steps=4",
        "strong.backbone_trainable=all",
        "model.transform=affine",
        "model.normalize_matches=false",
        "loss.tps_lambda=0.1",
        "eval.every=3",
    ] {
        assert_ne!(
            hashes(shared).1,
            strong,
            "{shared} changes the strong stages"
        );
    }
}

/// `weakalign exp smoke.toml --root UNDER --set S...` with `RAYON_NUM_THREADS=threads` and `extra`
/// arguments: the output, the run directory and the checkpoint folder.
fn smoke_variant(
    under: &Path,
    set: &[&str],
    threads: &str,
    extra: &[&str],
) -> (std::process::Output, PathBuf, PathBuf) {
    variant(&smoke(), under, set, threads, extra)
}

/// [`smoke_variant`] of the experiment file `file` (its stem names the experiment).
fn variant(
    file: &Path,
    under: &Path,
    set: &[&str],
    threads: &str,
    extra: &[&str],
) -> (std::process::Output, PathBuf, PathBuf) {
    let name = file.file_stem().unwrap().to_string_lossy().to_string();
    let hash = load(file, &set.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .unwrap()
        .hash();
    let mut cmd = Command::new(binary());
    cmd.arg("exp").arg(file).arg("--root").arg(under);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd
        .args(extra)
        .env("RAYON_NUM_THREADS", threads)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out,
        under.join("runs").join(&name).join(&hash),
        under.join("checkpoints").join(format!("{name}-{hash}")),
    )
}

/// Bits repeat only for one thread count: a resume with another continues the run, says so, and
/// records both environments, since `environment.json` then names only the new one.
#[test]
fn a_resume_with_another_thread_count_is_warned_about_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (crashed, run, _) = smoke_variant(dir.path(), &[], "2", &["--crash-after-step", "5"]);
    assert!(!crashed.status.success(), "{}", text(&crashed));
    let (resumed, _, _) = smoke_variant(dir.path(), &[], "1", &["--resume"]);
    let t = text(&resumed);
    assert!(resumed.status.success(), "{t}");
    assert!(
        t.contains("step 4") && t.contains("threads: 2 → 1") && t.contains("bit for bit"),
        "{t}"
    );
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("environment-change-at-step-4.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["checkpoint"]["rayon_threads"], "2", "{record}");
    assert_eq!(record["resumed_with"]["rayon_threads"], "1", "{record}");
    assert_eq!(
        record["differences"],
        serde_json::json!(["threads: 2 → 1"]),
        "{record}"
    );
}

#[test]
fn a_run_reusing_a_siblings_strong_stages_equals_one_that_trains_them() {
    let (shared, alone) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The smoke run: strong stages end at step 6, the weak stage runs steps 7–9.
    let (sibling, sibling_run, sibling_ckpt) = smoke_variant(shared.path(), &[], "1", &[]);
    assert!(sibling.status.success(), "{}", text(&sibling));
    assert!(
        sibling_ckpt.join("step-00000006").is_dir(),
        "the end of the strong stages is kept for reuse"
    );
    // Another weak learning rate: reuses the sibling's steps 1–6 ...
    let faster = ["weak.lr=1e-3"];
    let (reused, reused_run, reused_ckpt) =
        smoke_variant(shared.path(), &faster, "1", &["--reuse-strong"]);
    assert!(reused.status.success(), "{}", text(&reused));
    assert!(
        text(&reused).contains("reusing steps 1–6"),
        "{}",
        text(&reused)
    );
    let from: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reused_run.join("strong-stages-from.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(from["step"], 6);
    assert_eq!(from["run"].as_str().unwrap(), sibling_run.to_str().unwrap());
    // A run of another experiment (the file copied under another name) reuses them too: the
    // name is not in the hash.
    let lever = shared.path().join("smoke_lever.toml");
    std::fs::copy(smoke(), &lever).unwrap();
    let (other, other_run, _) = variant(
        &lever,
        shared.path(),
        &["weak.lr=3e-3"],
        "1",
        &["--reuse-strong"],
    );
    assert!(other.status.success(), "{}", text(&other));
    assert!(
        text(&other).contains("reusing steps 1–6"),
        "{}",
        text(&other)
    );
    let other_from: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(other_run.join("strong-stages-from.json")).unwrap(),
    )
    .unwrap();
    assert!(
        Path::new(other_from["run"].as_str().unwrap())
            .starts_with(shared.path().join("runs/smoke")),
        "{other_from}"
    );
    // ... and gives the bits of training them, in another root.
    let (trained, trained_run, trained_ckpt) = smoke_variant(alone.path(), &faster, "1", &[]);
    assert!(trained.status.success(), "{}", text(&trained));
    let metrics = |run: &Path| std::fs::read(run.join("metrics.jsonl")).unwrap();
    assert!(!metrics(&trained_run).is_empty());
    assert!(
        metrics(&reused_run) == metrics(&trained_run),
        "metrics.jsonl differs between the reused and the trained strong stages"
    );
    for f in [
        "model.bpk",
        "optimizer.bin",
        "state.json",
        "config.toml",
        "environment.json",
        "manifest.json",
    ] {
        let file = |ckpt: &Path| std::fs::read(ckpt.join("step-00000009").join(f)).unwrap();
        assert!(
            file(&reused_ckpt) == file(&trained_ckpt),
            "{f} differs between the reused and the trained strong stages"
        );
    }
    let pck = |run: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
    };
    assert_eq!(pck(&reused_run)["test_pck"], pck(&trained_run)["test_pck"]);
    // The weak stage did run with its own learning rate: the final weights are not the sibling's.
    let last = |ckpt: &Path| parameter_bytes(&ckpt.join("step-00000009/model.bpk"));
    assert!(last(&reused_ckpt) != last(&sibling_ckpt));
    // Other strong stages, or another thread count, are trained, not reused.
    for (set, threads) in [("strong.lr=5e-4", "1"), ("weak.lr=2e-3", "2")] {
        let (out, run, _) = smoke_variant(shared.path(), &[set], threads, &["--reuse-strong"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("no run has a checkpoint"),
            "{set}, {threads} thread(s): {}",
            text(&out)
        );
        assert!(!run.join("strong-stages-from.json").exists());
    }
}

#[test]
fn corrupted_checkpoint_falls_back_and_changed_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = exp(dir.path(), &["--crash-after-step", "7"]);
    assert!(!crashed.status.success());
    let ckpt = checkpoint_root(dir.path());
    let newest = weakalign::experiment::checkpoint::list(&ckpt)[0].clone();
    assert!(newest.ends_with("step-00000006"), "{}", newest.display());
    let model = newest.join("model.bpk");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap(); // truncated
    // A changed configuration is refused on resume...
    let changed = exp(
        dir.path(),
        &[
            "--resume",
            run_dir(dir.path()).to_str().unwrap(),
            "--set",
            "weak.lr=0.5",
        ],
    );
    assert!(
        !changed.status.success() && text(&changed).contains("--allow-config-change"),
        "{}",
        text(&changed)
    );
    assert_eq!(changed.status.code(), Some(5), "resume conflict exit code");
    // ... and the corrupted checkpoint is skipped with a message, falling back to step 4.
    let resumed = exp(dir.path(), &["--resume"]);
    let t = text(&resumed);
    assert!(resumed.status.success(), "{t}");
    assert!(
        t.contains("skipping checkpoint") && t.contains("step-00000006") && t.contains("checksum"),
        "{t}"
    );
    assert!(t.contains("(step 4)"), "{t}");
}

#[test]
fn a_locked_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(&smoke(), &[]).unwrap();
    let run = dir.path().join("runs/smoke").join(e.hash());
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("LOCK"), std::process::id().to_string()).unwrap();
    let out = exp(dir.path(), &[]);
    assert!(
        !out.status.success() && text(&out).contains("locked by running process"),
        "{}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(4), "locked run exit code");
    // The message says what to do when the holder is a reused PID: delete this LOCK file.
    let lock = run.join("LOCK");
    assert!(
        text(&out).contains(&format!("delete {}", lock.display())),
        "{}",
        text(&out)
    );
}

#[test]
fn non_finite_loss_fails_the_run_and_keeps_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let out = exp(
        dir.path(),
        &["--set", "strong.lr=1e30", "--set", "checkpoint.every=1"],
    );
    let t = text(&out);
    assert!(
        !out.status.success() && t.contains("non-finite loss"),
        "{t}"
    );
    assert_eq!(out.status.code(), Some(3), "diverged exit code");
    let status = std::fs::read_to_string(
        std::fs::read_dir(dir.path().join("runs/smoke"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("status.json"),
    )
    .unwrap();
    assert!(status.contains("FAILED"), "{status}");
    let ckpt = checkpoint_root(dir.path());
    let valid = weakalign::experiment::checkpoint::latest_valid(&ckpt, |_| {});
    assert!(valid.is_some(), "the last good checkpoint must remain");
}

#[test]
fn tensorboard_reads_our_event_files() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_tb = Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_tb {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must `pip install tensorboard`"
        );
        eprintln!("skipping: python tensorboard not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = exp(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let script = root().join("tools/read_tensorboard.py");
    let check = Command::new(&python)
        .arg(script)
        .arg(run_dir(dir.path()))
        .output()
        .unwrap();
    let t = text(&check);
    assert!(check.status.success(), "{t}");
    for needle in [
        "scalars train: loss",
        "images train: images/overlay",
        "text info: config",
        "hparams: session_start",
        "hparams: session_end",
        "scalars valid: pck",
    ] {
        assert!(t.contains(needle), "missing `{needle}` in:\n{t}");
    }
}

#[test]
fn sigint_sigterm_and_sighup_write_a_checkpoint_and_mark_the_run_interrupted() {
    for signal in ["INT", "TERM", "HUP"] {
        interrupted_by(signal);
    }
}

#[test]
fn sigterm_during_the_final_evaluation_marks_the_run_interrupted_and_a_resume_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .arg("exp")
        .arg(smoke())
        .arg("--root")
        .arg(dir.path())
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The last step (9) is checkpointed before the test evaluation (336 pairs) starts.
    wait_for_step(dir.path(), 9);
    let last = checkpoint_root(dir.path()).join("step-00000009/manifest.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !last.exists() {
        assert!(std::time::Instant::now() < deadline, "no final checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let run = run_dir(dir.path());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("status.json")).unwrap()).unwrap();
    assert_eq!(
        (s["status"].as_str(), s["step"].as_u64()),
        (Some("INTERRUPTED"), Some(9))
    );
    assert!(!run.join("summary.json").exists());
    let resumed = exp(dir.path(), &["--resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(
        text(&resumed).contains("Completed at step 9"),
        "{}",
        text(&resumed)
    );
    assert!(run.join("summary.json").exists());
}

/// Waits until the run under `root` reports global step `step` or later in its status.
fn wait_for_step(root: &Path, step: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let at = std::fs::read_dir(root.join("runs/smoke"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.unwrap().path().join("status.json")).ok())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["step"].as_u64())
            .unwrap_or(0);
        if at >= step {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not reach step {step}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts a run, sends `signal` once training is under way, and checks the run stopped with a
/// checkpoint at its current step, INTERRUPTED, exit 130.
fn interrupted_by(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .arg("exp")
        .arg(smoke())
        .arg("--root")
        .arg(dir.path())
        .args([
            "--set",
            "strong.steps=400",
            "--set",
            "checkpoint.every=1000",
            "--set",
            "eval.every=1000",
        ])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until training is under way, then send the signal.
    wait_for_step(dir.path(), 2);
    Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "SIG{signal}");
    let run = run_dir(dir.path());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("status.json")).unwrap()).unwrap();
    assert_eq!(s["status"], "INTERRUPTED", "SIG{signal}");
    let step = s["step"].as_u64().unwrap();
    let (ckpt, state) =
        weakalign::experiment::checkpoint::latest_valid(&checkpoint_root(dir.path()), |_| {})
            .unwrap();
    assert_eq!(state.step, step, "{}", ckpt.display());
}

#[test]
fn eval_of_an_earlier_checkpoint_keeps_the_final_checkpoints_reports() {
    let dir = tempfile::tempdir().unwrap();
    let trained = exp(dir.path(), &[]);
    assert!(trained.status.success(), "{}", text(&trained));
    let mut steps: Vec<PathBuf> = std::fs::read_dir(checkpoint_root(dir.path()))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step-")
        })
        .collect();
    steps.sort();
    assert!(steps.len() >= 2, "{steps:?}");
    let (earlier, last) = (&steps[0], steps.last().unwrap());
    // `weakalign eval` without --out, from the folder holding runs/ (its default is relative).
    let eval = |checkpoint: &Path| {
        let out = Command::new(binary())
            .args(["eval", "--dataset", "embedded", "--split", "validation"])
            .arg("--checkpoint")
            .arg(checkpoint)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    let reports = run_dir(dir.path()).join("eval");
    let report = "embedded-validation.json";
    eval(last);
    let final_report = std::fs::read(reports.join(report)).unwrap();
    eval(earlier);
    let step = earlier.file_name().unwrap();
    let earlier_report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join(step).join(report)).unwrap())
            .unwrap();
    assert_eq!(earlier_report["pairs"], 180);
    assert_eq!(
        std::fs::read(reports.join(report)).unwrap(),
        final_report,
        "the final checkpoint's report is where compare reads it, unchanged"
    );
}

#[test]
fn eval_and_align_use_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let trained = exp(dir.path(), &[]);
    assert!(trained.status.success(), "{}", text(&trained));
    let ckpt = checkpoint_root(dir.path());
    // `weakalign eval ARGS --checkpoint <the run's> --out <out>`.
    let out = dir.path().join("eval");
    let eval = |args: &[&str]| {
        Command::new(binary())
            .arg("eval")
            .args(args)
            .arg("--checkpoint")
            .arg(&ckpt)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    // eval on the embedded test pairs: JSON + Markdown with the protocol beside the numbers.
    let e = eval(&["--dataset", "embedded"]);
    assert!(e.status.success(), "{}", text(&e));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("embedded.json")).unwrap()).unwrap();
    assert_eq!(report["pairs"], 336);
    assert_eq!(report["protocol"]["alpha"], 0.1);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir(dir.path()).join("summary.json")).unwrap(),
    )
    .unwrap();
    let (ours, runner) = (
        report["pck"]["aff_tps"]["overall"].as_f64().unwrap(),
        summary["test_pck"].as_f64().unwrap(),
    );
    assert!(
        (ours - runner).abs() < 1e-12,
        "eval {ours} vs runner {runner}: one implementation"
    );
    assert!(report["pck"]["identity"]["per_class"]["fish"].is_number());
    // One row per pair, whose mean is the overall score.
    let rows = report["per_pair"].as_array().unwrap();
    assert_eq!(rows.len(), 336);
    let mean = rows
        .iter()
        .map(|r| r["aff_tps"].as_f64().unwrap())
        .sum::<f64>()
        / 336.0;
    assert!((mean - ours).abs() < 1e-12, "{mean} vs {ours}");
    assert!(
        rows[0]["source"].as_str().unwrap().ends_with(".png"),
        "{}",
        rows[0]
    );
    // Affine refinement on the validation split: a report of its own beside the one-pass test one.
    let before = std::fs::read(out.join("embedded.json")).unwrap();
    let refined = eval(&[
        "--dataset",
        "embedded",
        "--split",
        "validation",
        "--affine-passes",
        "2",
    ]);
    assert!(refined.status.success(), "{}", text(&refined));
    let file = out.join("embedded-validation-affine-passes-2.json");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(report["protocol"]["affine_passes"], 2);
    assert_eq!(report["pairs"], 180);
    assert_eq!(std::fs::read(out.join("embedded.json")).unwrap(), before);
    let wrong_split = eval(&["--dataset", "pf-willow", "--split", "validation"]);
    let msg = text(&wrong_split);
    assert_eq!(wrong_split.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("split") && msg.contains("only embedded") && !msg.contains("panicked"),
        "{msg}"
    );
    // TSS: flows written as .flo at each target image's resolution, scored with the kit's metric.
    if root().join("datasets/tss-sample").is_dir() {
        let datasets = root().join("datasets");
        let t = eval(&["--dataset", "tss", "--datasets", datasets.to_str().unwrap()]);
        assert!(t.status.success(), "{}", text(&t));
        let tss: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("tss.json")).unwrap()).unwrap();
        assert!(tss["subsets"]["PASCAL"]["identity"].is_number());
        // The overall score is the mean over the sample's pairs, whatever their subset.
        let subsets = tss["subsets"].as_object().unwrap();
        let pairs: f64 = subsets.values().map(|v| v["pairs"].as_f64().unwrap()).sum();
        let weighted: f64 = subsets
            .values()
            .map(|v| v["pairs"].as_f64().unwrap() * v["aff_tps"].as_f64().unwrap())
            .sum();
        assert_eq!(tss["overall"]["pairs"].as_f64(), Some(pairs));
        let overall = tss["overall"]["aff_tps"].as_f64().unwrap();
        assert!((overall - weighted / pairs).abs() < 1e-12, "{tss}");
        let flow =
            weakalign::data::tss::read_flo(&out.join("tss/aff_tps/PASCAL/bike_01_02/flow1.flo"))
                .unwrap();
        let (w, h) = ::image::image_dimensions(
            root().join("datasets/tss-sample/TSS_CVPR2016/PASCAL/bike_01_02/image1.png"),
        )
        .unwrap();
        assert_eq!((flow.width, flow.height), (w as usize, h as usize));
    }
    // align two embedded images, with keypoints.
    let images = dir.path().join("images");
    let emb = Command::new(binary())
        .args(["data", "embedded", "--out"])
        .arg(&images)
        .output()
        .unwrap();
    assert!(emb.status.success());
    let points = dir.path().join("points.csv");
    std::fs::write(&points, "x,y\n120,120\n10.5,200\n").unwrap();
    let aligned = dir.path().join("aligned");
    let run_align = |a: &Path, b: &Path| {
        Command::new(binary())
            .arg("align")
            .args([a, b])
            .arg("--checkpoint")
            .arg(&ckpt)
            .arg("--out")
            .arg(&aligned)
            .arg("--points")
            .arg(&points)
            .output()
            .unwrap()
    };
    let ok = run_align(
        &images.join("images/fish_030.png"),
        &images.join("images/fish_031.png"),
    );
    assert!(ok.status.success(), "{}", text(&ok));
    for f in [
        "theta.json",
        "warped.png",
        "checkerboard.png",
        "matches.png",
        "points.csv",
    ] {
        assert!(aligned.join(f).is_file(), "{f} missing");
    }
    let (w, h) = ::image::image_dimensions(aligned.join("warped.png")).unwrap();
    assert_eq!((w, h), (240, 240));
    assert_eq!(
        std::fs::read_to_string(aligned.join("points.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    // Grayscale input works; a missing or corrupt image is a clear error.
    let gray = dir.path().join("gray.png");
    ::image::open(images.join("images/car_030.png"))
        .unwrap()
        .to_luma8()
        .save(&gray)
        .unwrap();
    let g = run_align(&gray, &images.join("images/car_031.png"));
    assert!(g.status.success(), "{}", text(&g));
    let missing = run_align(&dir.path().join("nope.png"), &gray);
    assert!(
        !missing.status.success()
            && text(&missing).contains("nope.png")
            && !text(&missing).contains("panicked")
    );
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG not really").unwrap();
    let bad = run_align(&gray, &corrupt);
    assert!(
        !bad.status.success()
            && text(&bad).contains("corrupt.png")
            && !text(&bad).contains("panicked"),
        "{}",
        text(&bad)
    );
}

#[test]
fn stages_follow_the_transform_on_one_step_counter() {
    use weakalign::experiment::stage::{Stage, plan};
    let stages = |transform: &str| {
        let e = load(&smoke(), &[format!("model.transform={transform}")]).unwrap();
        plan(&resolve(&e, &smoke()).unwrap())
            .iter()
            .map(|p| (p.stage, p.begin, p.end, p.batch_size))
            .collect::<Vec<_>>()
    };
    // smoke: 3 strong steps per head, 3 weak steps, batches of 2.
    assert_eq!(
        stages("affine_tps"),
        [
            (Stage::StrongAffine, 0, 3, 2),
            (Stage::StrongTps, 3, 6, 2),
            (Stage::Weak, 6, 9, 2)
        ]
    );
    assert_eq!(
        stages("affine"),
        [(Stage::StrongAffine, 0, 3, 2), (Stage::Weak, 3, 6, 2)]
    );
    assert_eq!(
        stages("tps"),
        [(Stage::StrongTps, 0, 3, 2), (Stage::Weak, 3, 6, 2)]
    );
    // A cosine stage starts at its base rate and ends near a hundredth of it.
    let e = load(
        &smoke(),
        &["weak.schedule=cosine".into(), "weak.lr=1e-3".into()],
    )
    .unwrap();
    let weak = plan(&resolve(&e, &smoke()).unwrap())[2];
    assert_eq!(weak.lr_at(weak.begin), 1e-3);
    assert!(
        weak.lr_at(weak.end - 1) < 0.3e-3,
        "{}",
        weak.lr_at(weak.end - 1)
    );
}

#[test]
fn a_batch_carries_typed_ground_truth() {
    use weakalign::data::ground_truth::{GroundTruth, SampleTruth};
    use weakalign::geometry::Theta;
    let device = weakalign::device::inference();
    let dtype = burn::tensor::DType::F32;
    let a = SampleTruth::Affine([1.0, 0.0, 0.1, 0.0, 1.0, -0.1]);
    let truth = GroundTruth::collect(&[Some(a), Some(a)]).unwrap();
    assert_eq!(
        truth.affine(&device, dtype).unwrap().tensor().dims(),
        [2, 6]
    );
    assert!(
        truth.tps(&device, dtype).is_err(),
        "an affine θ is not a TPS θ"
    );
    assert_eq!(
        GroundTruth::collect(&[None, None]).unwrap(),
        GroundTruth::None
    );
    assert!(GroundTruth::None.affine(&device, dtype).is_err());
    let t = SampleTruth::Tps([0.0; 18]);
    assert!(GroundTruth::collect(&[Some(a), None]).is_err());
    assert!(GroundTruth::collect(&[Some(a), Some(t)]).is_err());
    assert!(GroundTruth::collect(&[None, Some(t)]).is_err());
}

#[test]
fn choices_have_one_name_in_files_and_on_the_command_line() {
    use weakalign::backbone::{BackboneKind, Trainable};
    use weakalign::choice::{name, parse};
    use weakalign::eval::Benchmark;
    for b in [Benchmark::PfWillow, Benchmark::Caltech101, Benchmark::Tss] {
        assert_eq!(parse::<Benchmark>(&name(&b)).unwrap(), b);
    }
    assert_eq!(name(&Benchmark::PfWillow), "pf-willow");
    assert_eq!(
        parse::<BackboneKind>("resnet101").unwrap(),
        BackboneKind::ResNet101
    );
    assert_eq!(
        parse::<Trainable>("last:3").unwrap(),
        Trainable::LastBlocks(3)
    );
    assert_eq!(name(&Trainable::LastBlocks(3)), "last:3");
    let e = parse::<BackboneKind>("alexnet").unwrap_err();
    assert!(e.contains("alexnet") && e.contains("vgg16"), "{e}");
    // The CLI uses the same names.
    let out = Command::new(binary())
        .args(["eval", "--dataset", "pf-wilow", "--checkpoint", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("pf-willow"), "{}", text(&out));
}

#[test]
fn the_device_is_a_checked_choice_and_cpu_keeps_the_hash() {
    use weakalign::device::DeviceChoice;
    assert_eq!("cuda:1".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(1)));
    assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
    assert_eq!("wgpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Wgpu(None)));
    assert_eq!(
        "wgpu:2".parse::<DeviceChoice>(),
        Ok(DeviceChoice::Wgpu(Some(2)))
    );
    for d in ["cpu", "cuda:0", "wgpu", "wgpu:1"] {
        assert_eq!(d.parse::<DeviceChoice>().unwrap().to_string(), d);
    }
    assert!("gpu".parse::<DeviceChoice>().is_err());
    assert!("wgpu:x".parse::<DeviceChoice>().is_err());
    let plain = load(&smoke(), &[]).unwrap();
    let cpu = load(&smoke(), &["device=cpu".into()]).unwrap();
    let gpu = load(&smoke(), &["device=cuda".into()]).unwrap();
    assert_eq!(plain.hash(), cpu.hash(), "device = cpu is the default");
    assert!(!plain.to_toml().contains("device"), "{}", plain.to_toml());
    assert_ne!(plain.hash(), gpu.hash(), "a GPU run is a run of its own");
    let wgpu = load(&smoke(), &["device=wgpu".into()]).unwrap();
    assert_ne!(wgpu.hash(), gpu.hash(), "a wgpu run is not a CUDA run");
    assert!(
        wgpu.to_toml().contains("device = \"wgpu\""),
        "{}",
        wgpu.to_toml()
    );
    let e = load(&smoke(), &["device=gpu".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(key `device`)") && e.contains("cuda:N") && e.contains("wgpu:N"),
        "{e}"
    );
}

#[test]
fn weak_pair_knobs_keep_older_hashes_and_apply_to_caltech_pairs_only() {
    let caltech = root().join("experiments/affine_tps_soft_caltech_weaklr.toml");
    let plain = load(&caltech, &[]).unwrap();
    let defaults = load(
        &caltech,
        &["weak.random_crop=true".into(), "weak.flip=false".into()],
    )
    .unwrap();
    // The first round's winner's hash as written in experiments/README.md, from before these keys
    // existed.
    assert_eq!(plain.hash(), "c61b7795110c2bec");
    assert_eq!(defaults.hash(), plain.hash());
    let text = plain.to_toml();
    assert!(
        !text.contains("random_crop") && !text.contains("flip"),
        "{text}"
    );
    for (set, key) in [
        ("weak.flip=true", "weak.flip"),
        ("weak.random_crop=false", "weak.random_crop"),
    ] {
        let changed = load(&caltech, &[set.into()]).unwrap();
        assert_ne!(changed.hash(), plain.hash(), "{set}");
        resolve(&changed, &caltech).unwrap();
        let on_embedded = load(&smoke(), &[set.into()]).unwrap();
        let e = resolve(&on_embedded, &smoke()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("(key `{key}`)")) && e.contains("Caltech-101 weak pairs only"),
            "{e}"
        );
    }
}

#[test]
fn affine_passes_keep_older_hashes_and_must_be_at_least_one() {
    let file = root().join("experiments/affine_tps_soft_caltech_narrow.toml");
    let plain = load(&file, &[]).unwrap();
    // The winner's hash as written in experiments/README.md, from before this key existed.
    assert_eq!(plain.hash(), "5a32b27b64e824ee");
    let one = load(&file, &["eval.affine_passes=1".into()]).unwrap();
    assert_eq!(one.hash(), plain.hash());
    assert!(!plain.to_toml().contains("affine_passes"));
    let two = load(&file, &["eval.affine_passes=2".into()]).unwrap();
    assert_ne!(two.hash(), plain.hash());
    assert_eq!(two.eval.affine_passes, 2);
    resolve(&two, &file).unwrap();
    let zero = load(&smoke(), &["eval.affine_passes=0".into()]).unwrap();
    let e = resolve(&zero, &smoke()).unwrap_err().to_string();
    assert!(
        e.contains("(key `eval.affine_passes`)") && e.contains("must be ≥ 1"),
        "{e}"
    );
}

#[test]
fn max_test_pairs_keeps_older_hashes_and_cuts_the_test_set_evenly() {
    let file = root().join("experiments/affine_tps_soft_caltech_narrow.toml");
    let plain = load(&file, &[]).unwrap();
    assert_eq!(plain.hash(), "5a32b27b64e824ee");
    assert!(!plain.to_toml().contains("max_test_pairs"));
    let all = load(&file, &["eval.max_test_pairs=0".into()]).unwrap();
    assert_eq!(all.hash(), plain.hash());
    let cut = load(&file, &["eval.max_test_pairs=48".into()]).unwrap();
    assert_ne!(cut.hash(), plain.hash());

    // On the embedded data (no datasets needed): all 336 test pairs, or 48 of them.
    use weakalign::experiment::sources::Sources;
    let datasets = tempfile::tempdir().unwrap();
    let test_pairs = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let exp = load(&smoke(), &sets).unwrap();
        let sources = Sources::build(&resolve(&exp, &smoke()).unwrap(), datasets.path()).unwrap();
        sources.test.pairs
    };
    let every = test_pairs(&[]);
    let some = test_pairs(&["eval.max_test_pairs=48"]);
    assert_eq!(every.len(), 336);
    assert_eq!(some.len(), 48);
    // Spread over the set (the embedded test set is ordered by category), not its first 48.
    assert_eq!(some[0].source, every[0].source);
    assert_eq!(some[47].source, every[329].source);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_in_a_cpu_build_is_a_clear_error_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = exp(dir.path(), &["--device", "cuda"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("built without CUDA")
            && t.contains("make build-cuda")
            && !t.contains("panicked"),
        "{t}"
    );
    assert!(!dir.path().join("runs").exists(), "nothing may be written");
}

#[cfg(not(feature = "wgpu"))]
#[test]
fn wgpu_in_a_cpu_build_is_a_clear_error_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    for device in ["wgpu", "wgpu:1"] {
        let out = exp(dir.path(), &["--device", device]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains(&format!("{device}: this binary was built without wgpu"))
                && t.contains("make build-wgpu")
                && !t.contains("panicked"),
            "{t}"
        );
    }
    assert!(!dir.path().join("runs").exists(), "nothing may be written");
}

#[test]
fn the_parity_harness_runs_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("parity.json");
    let out = Command::new(binary())
        .args([
            "parity",
            "--device",
            "cpu",
            "--backbones",
            "efficientnet_lite0",
        ])
        .args(["--size", "176", "--out"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    // 25 operations, then the model trained and evaluated.
    assert_eq!(results.len(), 27, "{report}");
    assert!(
        report["backend"].as_str().unwrap().contains("flex"),
        "{report}"
    );
    // The same backend on both sides: exact agreement, or the harness is broken. Inference rows
    // check the forward only (no gradient), the others both.
    for r in results {
        assert_eq!(r["forward"], 0.0, "{r}");
        let inference = r["op"].as_str().unwrap().contains("inference");
        if inference {
            assert!(r["gradient"].is_null(), "{r}");
        } else {
            assert_eq!(r["gradient"], 0.0, "{r}");
        }
    }
    let names: Vec<&str> = results.iter().map(|r| r["op"].as_str().unwrap()).collect();
    for expected in [
        "warp at an affine θ's grid (inference)",
        "depthwise convolution over a zero region, ReLU6 (gradient at exactly 0)",
        "two-stage efficientnet_lite0 (176²)",
        "two-stage efficientnet_lite0 (176², inference)",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
}

#[test]
fn unsafe_experiment_names_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root_dir = dir.path().join("root");
    std::fs::create_dir(&root_dir).unwrap();
    for file in [
        "bad_name_traversal.toml",
        "bad_name_absolute.toml",
        "nan_tps_range.toml",
    ] {
        let out = Command::new(binary())
            .arg("exp")
            .arg(root().join("tests/bad_inputs/configs").join(file))
            .arg("--root")
            .arg(&root_dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{file}: {}", text(&out));
        assert_eq!(
            std::fs::read_dir(&root_dir).unwrap().count(),
            0,
            "{file}: nothing may be written under --root"
        );
    }
    assert!(!dir.path().join("escaped").exists());
    assert!(!std::path::Path::new("/tmp/weakalign-escaped").exists());
}

#[test]
fn resume_with_a_mistyped_run_path_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("runs/smoke/0123456789abcdef");
    let out = exp(dir.path(), &["--resume", typo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("no run here"), "{}", text(&out));
    assert!(!typo.exists() && !dir.path().join("runs").exists());
    assert!(!dir.path().join("checkpoints").exists());
}

#[test]
fn resume_is_refused_when_every_checkpoint_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let first = exp(dir.path(), &[]);
    assert!(first.status.success(), "{}", text(&first));
    let ckpts = checkpoint_root(dir.path());
    for c in std::fs::read_dir(&ckpts).unwrap().flatten() {
        let model = c.path().join("model.bpk");
        if model.exists() {
            std::fs::write(&model, b"truncated").unwrap();
        }
    }
    let run = run_dir(dir.path());
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let out = exp(dir.path(), &["--resume", run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("none valid"), "{}", text(&out));
    assert_eq!(
        std::fs::read(run.join("metrics.jsonl")).unwrap(),
        metrics,
        "nothing rewritten"
    );
}

#[test]
fn a_damaged_status_file_is_reported_not_retrained() {
    let dir = tempfile::tempdir().unwrap();
    let first = exp(dir.path(), &[]);
    assert!(first.status.success(), "{}", text(&first));
    let run = run_dir(dir.path());
    std::fs::write(run.join("status.json"), b"{\"status\": \"COMPL").unwrap();
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let out = exp(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("status.json") && text(&out).contains("--resume"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(run.join("metrics.jsonl")).unwrap(),
        metrics,
        "nothing rewritten"
    );
}

#[test]
fn out_of_range_cli_values_are_usage_errors_naming_the_flag() {
    for (args, flag) in [
        (&["eval", "--alpha", "0"][..], "--alpha"),
        (&["eval", "--alpha=-1", "--dataset=embedded"][..], "--alpha"),
        (&["eval", "--alpha", "NaN"][..], "--alpha"),
        (&["eval", "--tps-lambda", "inf"][..], "--tps-lambda"),
        (&["eval", "--affine-passes", "0"][..], "--affine-passes"),
        (
            &["align", "--affine-passes=0", "a.png", "b.png"][..],
            "--affine-passes",
        ),
        (
            &["align", "--tps-lambda=-0.5", "a.png", "b.png"][..],
            "--tps-lambda",
        ),
    ] {
        let out = Command::new(binary()).args(args).output().unwrap();
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {msg}");
        assert!(
            msg.contains(flag) && !msg.contains("panicked"),
            "{args:?}: {msg}"
        );
    }
}

#[test]
fn unfinished_writes_are_removed_when_the_run_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = exp(dir.path(), &[]);
    assert!(first.status.success(), "{}", text(&first));
    let ckpts = checkpoint_root(dir.path());
    let leftover = ckpts.join(".tmp-step-00000003-999999");
    std::fs::create_dir(&leftover).unwrap();
    std::fs::write(leftover.join("model.bpk"), vec![0u8; 1 << 16]).unwrap();
    let run = run_dir(dir.path());
    // And a status write a kill cut short.
    let half_written = run.join("status.json.tmp-999999");
    std::fs::write(&half_written, b"{\"status\": \"RUN").unwrap();
    let again = exp(dir.path(), &["--resume", run.to_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        !leftover.exists() && !half_written.exists(),
        "{}",
        text(&again)
    );
    assert!(
        text(&again).contains("removed 2 unfinished write(s)"),
        "{}",
        text(&again)
    );
}

#[test]
fn a_checkpoints_configuration_is_covered_by_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let first = exp(dir.path(), &[]);
    assert!(first.status.success(), "{}", text(&first));
    let newest = weakalign::experiment::checkpoint::list(&checkpoint_root(dir.path()))
        .into_iter()
        .next()
        .unwrap();
    let manifest = std::fs::read_to_string(newest.join("manifest.json")).unwrap();
    assert!(manifest.contains("config.toml"), "{manifest}");
    let config = newest.join("config.toml");
    let text0 = std::fs::read_to_string(&config).unwrap();
    assert!(text0.contains("normalize_matches = true"), "{text0}");
    std::fs::write(
        &config,
        text0.replace("normalize_matches = true", "normalize_matches = false"),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["eval", "--dataset", "embedded", "--checkpoint"])
        .arg(&newest)
        .arg("--out")
        .arg(dir.path().join("eval"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("config.toml does not match its checksum"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_second_start_while_the_run_is_live_is_told_it_is_locked_not_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = crashed_after_step_5(dir.path());
    // A live process holds the run (this test process stands in for it).
    std::fs::write(run.join("LOCK"), std::process::id().to_string()).unwrap();
    let out = exp(dir.path(), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(
        t.contains("locked by running process") && !t.contains("pass --resume"),
        "{t}"
    );
}

#[test]
fn a_failed_run_reports_the_step_it_reached() {
    let dir = tempfile::tempdir().unwrap();
    // Diverges in the weak stage, after the 6 strong steps.
    let out = exp(dir.path(), &["--set", "weak.lr=1e30"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir(dir.path()).join("status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["status"], "FAILED", "{status}");
    let step = status["step"].as_u64().unwrap();
    assert!(
        step >= 6,
        "FAILED at step {step}: must be the step reached, not 0"
    );
    let runs = Command::new(binary())
        .args(["runs", "--runs"])
        .arg(dir.path().join("runs"))
        .output()
        .unwrap();
    assert!(
        text(&runs).contains("FAILED") && text(&runs).contains(&step.to_string()),
        "{}",
        text(&runs)
    );
}

#[test]
fn a_missing_dataset_is_refused_naming_its_key_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    for (set, key) in [
        ("data.test=pf-willow", "key `data.test`"),
        ("data.validation=pf-willow", "key `data.validation`"),
        ("data.train=caltech-101", "key `data.train`"),
    ] {
        let out = exp(dir.path(), &["--set", set]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{set}: {t}");
        assert!(t.contains(key) && t.contains("make datasets"), "{set}: {t}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{set}: nothing may be written under --root"
        );
    }
}

#[test]
fn a_learning_rate_far_out_of_range_is_warned_about_before_the_run() {
    let out = Command::new(binary())
        .args(["exp", "--dry-run"])
        .arg(smoke())
        .args(["--set", "weak.lr=1e30"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("warning") && t.contains("`weak.lr` = 1000000000000000000000000000000"),
        "{t}"
    );
    let quiet = Command::new(binary())
        .args(["exp", "--dry-run"])
        .arg(smoke())
        .output()
        .unwrap();
    assert!(!text(&quiet).contains("warning"), "{}", text(&quiet));
}

#[test]
fn a_resume_reports_a_truncated_metrics_file_and_tensorboard_never_shows_a_step_twice() {
    use weakalign::experiment::tensorboard::{EventWriter, summary_steps};
    let dir = tempfile::tempdir().unwrap();
    let run = crashed_after_step_5(dir.path());
    // What a crashed process had flushed past its last checkpoint (step 4): steps 5 and 6.
    {
        let mut w = EventWriter::create(&run.join("train")).unwrap();
        w.scalar("loss", 5, 0.5).unwrap();
        w.scalar("loss", 6, 0.25).unwrap();
        w.flush().unwrap();
    }
    // And metrics.jsonl lost records since the checkpoint counted them.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let head: String = metrics.split_inclusive('\n').take(3).collect();
    std::fs::write(run.join("metrics.jsonl"), head).unwrap();
    let resumed = exp(dir.path(), &["--resume"]);
    let t = text(&resumed);
    assert!(resumed.status.success(), "{t}");
    assert!(
        t.contains("metrics.jsonl") && t.contains("records are missing"),
        "{t}"
    );
    assert!(
        t.contains("TensorBoard event(s) logged after step 4"),
        "{t}"
    );
    for split in ["train", "valid", "info"] {
        let steps = summary_steps(&run.join(split)).unwrap();
        let mut seen = std::collections::HashSet::new();
        for p in &steps {
            assert!(seen.insert(p), "{split}: {p:?} appears twice in {steps:?}");
        }
        if split == "train" {
            assert!(steps.contains(&("loss".to_string(), 9)), "{steps:?}");
        }
    }
}

#[test]
fn a_run_locked_on_another_node_counts_as_live_while_its_heartbeat_is_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let run = crashed_after_step_5(dir.path());
    std::fs::write(run.join("LOCK"), "4242 some-other-node").unwrap();
    let status = |heartbeat: u64| {
        let s = serde_json::json!({"status": "RUNNING", "step": 5, "pid": 4242,
            "heartbeat": heartbeat, "message": null, "host": "some-other-node"});
        std::fs::write(run.join("status.json"), s.to_string()).unwrap();
    };
    let now = weakalign::experiment::run_dir::unix_now();
    status(now);
    let out = exp(dir.path(), &["--resume"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("4242 on some-other-node"),
        "{}",
        text(&out)
    );
    // Its heartbeat stopped (a dead task): the run is taken over and resumed.
    status(now - 3600);
    let out = exp(dir.path(), &["--resume"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(step 4)"), "{}", text(&out));
}

/// Checks that `sweep` has `rows` rows × 3 seeds, that its base row of seed s is `parent` with
/// seed s and `schedule` (the overrides that size it) and nothing else, and that every other row
/// changes one knob: one key, or keys of one stem (`strong.backbone_trainable` with
/// `strong.backbone_lr`).
fn assert_one_knob_per_row(sweep: &str, parent: &str, schedule: &[&str], rows: usize) {
    use weakalign::experiment::sweep::cells;
    let ablation = cells(&root().join(sweep), &[]).unwrap();
    assert_eq!(ablation.len(), rows * 3, "{sweep}: {rows} rows × 3 seeds");
    let parent = root().join(parent);
    let base = resolve(&load(&parent, &[]).unwrap(), &parent).unwrap();
    let labels: std::collections::BTreeSet<String> = ablation.iter().map(|c| c.label()).collect();
    assert_eq!(labels.len(), rows, "{sweep}: {labels:?}");
    for cell in &ablation {
        let label = cell.label();
        if label.is_empty() {
            let mut overrides = vec![format!("seed={}", cell.resolved.experiment.seed)];
            overrides.extend(schedule.iter().map(|s| s.to_string()));
            let seeded = load(&parent, &overrides).unwrap();
            assert_eq!(
                cell.resolved.hash,
                seeded.hash(),
                "{sweep}: base row differs from {parent:?} {schedule:?}"
            );
        } else {
            // A key's stem ends at its first `_` (no section name has one): `strong.backbone`.
            let stems: std::collections::BTreeSet<&str> = label
                .split(", ")
                .map(|item| item.split(['=', '_']).next().unwrap())
                .collect();
            assert_eq!(stems.len(), 1, "{sweep}: one knob per row: {label}");
            assert_ne!(cell.resolved.cell_hash, base.cell_hash, "{sweep}: {label}");
        }
    }
}

#[test]
fn the_ablation_sweeps_change_one_knob_per_row_from_their_parent() {
    // The CPU-sized table: the first real-data experiment at a shorter schedule.
    assert_one_knob_per_row(
        "experiments/ablation_caltech.toml",
        "experiments/affine_tps_soft_caltech.toml",
        &["strong.steps=250", "weak.steps=150", "eval.every=125"],
        6,
    );
    // The table at the winner's setup: its base row is the winner itself, seed for seed (the
    // same hashes, so a seed of the winner that already ran is the same run).
    assert_one_knob_per_row(
        "experiments/ablation_caltech_narrow.toml",
        "experiments/affine_tps_soft_caltech_narrow.toml",
        &[],
        6,
    );
    // The weak-stage levers at the winner's setup: the same base row, and every row trains the
    // winner's strong stages (so `--reuse-strong` makes each cost its weak stage alone).
    let (levers, winner) = (
        "experiments/levers_weak_narrow.toml",
        "experiments/affine_tps_soft_caltech_narrow.toml",
    );
    assert_one_knob_per_row(levers, winner, &[], 8);
    // The strong-stage levers, screened on the winner at the CPU-sized schedule.
    assert_one_knob_per_row(
        "experiments/levers_screen_narrow.toml",
        winner,
        &["strong.steps=250", "weak.steps=150", "eval.every=125"],
        4,
    );
    for cell in weakalign::experiment::sweep::cells(&root().join(levers), &[]).unwrap() {
        let seed = format!("seed={}", cell.resolved.experiment.seed);
        assert_eq!(
            cell.resolved.experiment.strong_stages_hash(),
            load(&root().join(winner), &[seed])
                .unwrap()
                .strong_stages_hash(),
            "{levers}: {} changes the strong stages",
            cell.label()
        );
    }
    // The batch-16 follow-up is its parent with the weak stage's rate changed, nothing else, so
    // it reuses the parent's strong stages.
    let (follow_up, parent) = (
        load(
            &root().join("experiments/lever_full_narrow_batch16_weak3e-5.toml"),
            &[],
        )
        .unwrap(),
        root().join("experiments/lever_full_narrow_batch16.toml"),
    );
    assert_eq!(
        follow_up.hash(),
        load(&parent, &["weak.lr=3e-5".into()]).unwrap().hash()
    );
    assert_eq!(
        follow_up.strong_stages_hash(),
        load(&parent, &[]).unwrap().strong_stages_hash()
    );
}

#[test]
fn compare_tabulates_test_pck_and_the_weak_losss_inlier_score() {
    let dir = tempfile::tempdir().unwrap();
    let out = exp(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir(dir.path()).join("summary.json")).unwrap(),
    )
    .unwrap();
    let inlier = summary["weak_inlier_aff_tps"].as_f64().unwrap();
    assert!(inlier > 0.0 && inlier <= 1.0, "{summary}");
    assert!(summary["weak_inlier_aff"].as_f64().is_some(), "{summary}");
    let compare = || {
        let table = Command::new(binary())
            .arg("compare")
            .arg(dir.path().join("runs/smoke"))
            .output()
            .unwrap();
        text(&table)
    };
    let t = compare();
    assert!(t.contains("weak inlier score, final warp"), "{t}");
    assert!(t.contains("| – |"), "no TSS report yet: a dash\n{t}");
    // The validation PCK of the last step, what choices are made on.
    let metrics = std::fs::read_to_string(run_dir(dir.path()).join("metrics.jsonl")).unwrap();
    let valid = metrics
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["tag"] == "valid/pck")
        .unwrap()["value"]
        .as_f64()
        .unwrap();
    // One run: the value alone, no "± 0.0000" (a sample std needs two values).
    assert!(t.contains(&format!("| {valid:.4} |")), "{t}");
    assert!(!t.contains("± 0.0000"), "{t}");
    // With `weakalign eval --dataset tss`'s report in the run's eval folder, its overall T5.
    let eval = run_dir(dir.path()).join("eval");
    std::fs::create_dir_all(&eval).unwrap();
    std::fs::write(
        eval.join("tss.json"),
        r#"{"overall": {"pairs": 6, "aff": 0.25, "aff_tps": 0.3125, "identity": 0.125}}"#,
    )
    .unwrap();
    let t = compare();
    assert!(t.contains("| 0.3125 |"), "{t}");
    let pck = summary["test_pck"].as_f64().unwrap();
    assert!(
        t.contains(&format!("| {pck:.4} |")) && t.contains(&format!("| {inlier:.4} |")),
        "{t}"
    );
}

#[test]
fn a_cell_keeps_its_sweep_label_while_one_of_its_seeds_runs() {
    use weakalign::experiment::compare::{RunInfo, cells};
    let dir = tempfile::tempdir().unwrap();
    let e = load(&smoke(), &[]).unwrap();
    let running_dir = dir.path().join("running");
    std::fs::create_dir_all(&running_dir).unwrap();
    std::fs::write(running_dir.join("config.resolved.toml"), e.to_toml()).unwrap();
    let done = RunInfo {
        dir: dir.path().join("done"),
        experiment: "smoke".into(),
        status: "COMPLETED".into(),
        step: 9,
        summary: Some(serde_json::json!({
            "cell_hash": e.cell_hash(), "cell_label": "loss.inlier=\"hard\"",
            "seed": 1, "test_pck": 0.5, "test_identity_pck": 0.25,
        })),
    };
    let running = RunInfo {
        dir: running_dir,
        experiment: "smoke".into(),
        status: "RUNNING".into(),
        step: 3,
        summary: None,
    };
    for runs in [
        [done.clone(), running.clone()],
        [running.clone(), done.clone()],
    ] {
        let table = cells(&runs);
        assert_eq!(table.len(), 1, "{table:?}");
        let cell = &table[&e.cell_hash()];
        assert_eq!(cell.name, "smoke [loss.inlier=\"hard\"]");
        assert_eq!(cell.pck, vec![(1, 0.5)]);
        assert_eq!(cell.missing.len(), 1, "{:?}", cell.missing);
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `weakalign exp F --dry-run | head -1`: the reader is gone before the listing is written.
    let mut child = Command::new(binary())
        .args(["exp", "--dry-run"])
        .arg(root().join("experiments/ablation_caltech.toml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_sweep_script_trains_shared_strong_stages_once_before_the_cells_that_reuse_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("smoke_levers.toml");
    // Cells 0 and 1 share their strong stages, cell 2 has its own. Run side by side, cells 0
    // and 1 would both train theirs; the script runs 0 and 2 first, then 1 from 0's checkpoint.
    let sweep = "\n[sweep]\nvariant = [{}, { \"weak.lr\" = 1e-3 }, { \"strong.lr\" = 5e-4 }]\n";
    std::fs::write(&file, std::fs::read_to_string(smoke()).unwrap() + sweep).unwrap();
    let out = Command::new("bash")
        .arg(root().join("tools/sweep.sh"))
        .arg(&file)
        .env("BIN", binary())
        .env("PARALLEL", "2")
        .env("THREADS", "1")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let log = |cell: usize| {
        std::fs::read_to_string(
            dir.path()
                .join(format!("logs/sweep/smoke_levers/cell{cell}.log")),
        )
        .unwrap()
    };
    for trained in [0, 2] {
        assert!(
            log(trained).contains("no run has a checkpoint"),
            "cell {trained}: {}",
            log(trained)
        );
    }
    assert!(log(1).contains("reusing steps 1–6"), "{}", log(1));
    assert!(
        text(&out).contains("smoke_levers [weak.lr=0.001]"),
        "{}",
        text(&out)
    );
}

/// The largest change of one parameter between two parameter lists.
fn largest_change(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// The float parameters of the model record at `path`: (the backbone's, the heads').
fn backbone_and_heads(path: &Path) -> (Vec<f32>, Vec<f32>) {
    struct Floats(Vec<f32>);
    impl ModuleVisitor for Floats {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let model = smoke_model(path);
    let (mut backbone, mut heads) = (Floats(Vec::new()), Floats(Vec::new()));
    model.backbone.visit(&mut backbone);
    model.regression_aff.visit(&mut heads);
    model.regression_tps.visit(&mut heads);
    (backbone.0, heads.0)
}

#[test]
fn the_strong_stages_train_the_backbone_blocks_they_are_given() {
    // The backbone after the strong stages (step 6 of the smoke run): frozen by default, the
    // reference's; with `strong.backbone_trainable` its last block moves and nothing before it.
    let backbone_after_strong = |set: &[&str]| -> (Vec<f32>, Vec<f32>) {
        let dir = tempfile::tempdir().unwrap();
        let keep = [set, &["checkpoint.keep_last=10"]].concat();
        let (out, _, ckpt) = smoke_variant(dir.path(), &keep, "1", &[]);
        assert!(out.status.success(), "{set:?}: {}", text(&out));
        let early = backbone_and_heads(&ckpt.join("step-00000002/model.bpk")).0;
        let late = backbone_and_heads(&ckpt.join("step-00000006/model.bpk")).0;
        (early, late)
    };
    // Steps 2 and 6 bracket four strong steps (one affine, three TPS).
    let (early, frozen) = backbone_after_strong(&[]);
    assert_eq!(
        early, frozen,
        "a frozen backbone changed in the strong stages"
    );
    let (_, last) = backbone_after_strong(&["strong.backbone_trainable=\"last:1\""]);
    assert!(
        largest_change(&frozen, &last) > 1e-4,
        "{}",
        largest_change(&frozen, &last)
    );
    // The stem (3 × 32 × 3 × 3 weights, visited first) is outside the last block: untouched.
    assert_eq!(frozen[..864], last[..864]);
    // At its own rate of 1e-9 the block stays within one f32 rounding step or so.
    let (_, slow) = backbone_after_strong(&[
        "strong.backbone_trainable=\"last:1\"",
        "strong.backbone_lr=1e-9",
    ]);
    assert!(
        largest_change(&frozen, &slow) < 1e-6,
        "{}",
        largest_change(&frozen, &slow)
    );
    // A rate for a frozen backbone is refused, naming the key; at their defaults neither key is
    // in the resolved file (so the hashes of earlier runs stand).
    let refused = load(&smoke(), &["strong.backbone_lr=1e-6".into()]).unwrap();
    let e = resolve(&refused, &smoke()).unwrap_err().to_string();
    assert!(
        e.contains("strong.backbone_lr") && e.contains("frozen"),
        "{e}"
    );
    let defaults = load(&smoke(), &[]).unwrap().to_toml();
    let strong = defaults
        .split("[strong]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    assert!(
        strong.contains("tps_range") && !strong.contains("backbone"),
        "{strong}"
    );
}

#[test]
fn the_backbone_trains_at_its_own_rate_where_one_is_set() {
    // How far the weak stage (steps 7–9 of the smoke run) moves the backbone and the heads:
    // the largest change of one parameter in each.
    let moved = |set: &[&str]| -> (f32, f32) {
        let dir = tempfile::tempdir().unwrap();
        let (out, _, ckpt) = smoke_variant(dir.path(), set, "1", &[]);
        assert!(out.status.success(), "{set:?}: {}", text(&out));
        let (b0, h0) = backbone_and_heads(&ckpt.join("step-00000006/model.bpk"));
        let (b1, h1) = backbone_and_heads(&ckpt.join("step-00000009/model.bpk"));
        (largest_change(&b0, &b1), largest_change(&h0, &h1))
    };
    let all = ["weak.backbone_trainable=\"all\"", "weak.lr=1e-3"];
    let (backbone, heads) = moved(&all);
    assert!(backbone > 1e-4 && heads > 1e-4, "{backbone} {heads}");
    // At 1e-9 three Adam steps move a backbone parameter by a few 1e-9 at most (or one f32
    // rounding step of it), while the heads still move at 1e-3.
    let (backbone, heads) = moved(&[all[0], all[1], "weak.backbone_lr=1e-9"]);
    assert!(backbone < 1e-6, "{backbone}");
    assert!(heads > 1e-4, "{heads}");
    // A rate for a frozen backbone is refused, naming the key; unset, it is not in the hash.
    let frozen = load(&smoke(), &["weak.backbone_lr=1e-6".into()]).unwrap();
    let e = resolve(&frozen, &smoke()).unwrap_err().to_string();
    assert!(
        e.contains("weak.backbone_lr") && e.contains("frozen"),
        "{e}"
    );
    let unset = load(&smoke(), &[]).unwrap();
    assert!(!unset.to_toml().contains("backbone_lr"));
}
