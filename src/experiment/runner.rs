//! The training runner: the resume policy, and a loop that hands each job to a named part —
//! [`super::stage`] (what a stage trains), [`super::sources`] (its batches), [`super::step`] (one
//! optimisation step), [`super::logger`] (TensorBoard, `metrics.jsonl`, progress) and
//! [`super::checkpoint`] (crash-safe checkpoints).
//!
//! A hand-written loop rather than burn-train's `SupervisedTraining`: its checkpoints are written
//! per epoch and in place (not atomic) and its loggers get no global step across resumes.
//!
//! Every sample is a pure function of `(seed, epoch, index)` and the epoch order of
//! `(seed, epoch)`, so the data position is a function of the step: a resume from a checkpoint at
//! step `k` replays exactly the batches an uninterrupted run would see. Model records are saved
//! from the inference copy (`valid()`), with the optimizer state and `state.json`. The same
//! makes another run's checkpoint at the end of identical strong stages a valid start
//! (`--reuse-strong`, [`super::fork`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{Module, ParamGroup};
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::tensor::Device;

use super::checkpoint::{self, TrainState};
use super::config::Roots;
use super::fork;
use super::logger::{Logger, StepTiming};
use super::resolve::Resolved;
use super::run_dir::{RunDir, Status, arithmetic_differences, environment, git_provenance};
use super::sources::Sources;
use super::stage::{StagePlan, configure, plan, strong_end, total_steps};
use super::step::optimize;
use crate::error::{Error, Result};
use crate::eval::keypoints::{KeypointSet, PckResult, evaluate_unless};
use crate::geometry::Tps;
use crate::model::TwoStage;
use crate::weights;

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue from the newest valid checkpoint of this configuration's run.
    pub resume: bool,
    /// Resume this run directory instead (its configuration may differ only with
    /// `allow_config_change`).
    pub resume_dir: Option<PathBuf>,
    /// Accept a changed configuration on resume (the difference is recorded).
    pub allow_config_change: bool,
    /// Where runs, checkpoints, datasets and pretrained weights live.
    pub roots: Roots,
    /// Set by SIGINT, SIGTERM or SIGHUP: checkpoint and stop.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// The sweep values of this run except the seed (e.g. `loss.inlier="hard"`), for `compare`.
    pub cell_label: String,
    /// Test hook: abort the process (no cleanup, like a crash) right after this global step and
    /// its checkpoint, if any.
    pub crash_after_step: Option<u64>,
    /// A run without a checkpoint of its own starts from another run's checkpoint at the end of
    /// identical strong stages (a sibling's first), where one exists ([`super::fork`]).
    pub reuse_strong: bool,
}

impl RunOptions {
    /// Whether this invocation continues a run (`--resume`, with or without a directory).
    fn resuming(&self) -> bool {
        self.resume || self.resume_dir.is_some()
    }

    fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// PCK of the final model on the test set and of the identity transform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestScore {
    /// The model's PCK.
    pub pck: f64,
    /// The identity's PCK.
    pub identity: f64,
}

/// What a run ended with.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The run directory.
    pub dir: PathBuf,
    /// Final status.
    pub status: Status,
    /// Global steps completed.
    pub step: u64,
    /// Test PCK (when evaluated).
    pub test: Option<TestScore>,
    /// The run was already complete: nothing was done.
    pub skipped: bool,
}

/// The run directory and checkpoint folder of a configuration.
pub fn run_paths(r: &Resolved, roots: &Roots) -> (PathBuf, PathBuf) {
    let name = &r.experiment.name;
    (
        roots.runs.join(name).join(&r.hash),
        roots.checkpoints.join(format!("{name}-{}", r.hash)),
    )
}

/// The run and checkpoint folders this invocation works on (`--resume DIR` names the run).
fn target_paths(r: &Resolved, opts: &RunOptions) -> (PathBuf, PathBuf) {
    let Some(dir) = &opts.resume_dir else {
        return run_paths(r, &opts.roots);
    };
    let part = |p: Option<&Path>| {
        p.and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    let (hash, name) = (part(Some(dir)), part(dir.parent()));
    (
        dir.clone(),
        opts.roots.checkpoints.join(format!("{name}-{hash}")),
    )
}

/// A completed run (not named with `--resume DIR`) is not run again: its outcome.
fn already_completed(run_path: &Path, opts: &RunOptions) -> Option<RunOutcome> {
    let s = RunDir::read_status(run_path)?;
    if s.status != Status::Completed || opts.resume_dir.is_some() {
        return None;
    }
    eprintln!(
        "{}: already COMPLETED (step {}); nothing to do",
        run_path.display(),
        s.step
    );
    let summary: Option<serde_json::Value> = std::fs::read_to_string(run_path.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let test = summary.and_then(|v| {
        Some(TestScore {
            pck: v["test_pck"].as_f64()?,
            identity: v["test_identity_pck"].as_f64()?,
        })
    });
    Some(RunOutcome {
        dir: run_path.to_path_buf(),
        status: Status::Completed,
        step: s.step,
        test,
        skipped: true,
    })
}

/// The checkpoint to continue from, if resuming; a changed configuration is refused unless
/// allowed (then its diff is recorded in the run), and a change from the checkpoint's
/// environment to this one (`here`) is recorded.
fn resume_point(
    r: &Resolved,
    run: &RunDir,
    opts: &RunOptions,
    here: &serde_json::Value,
) -> Result<Option<(PathBuf, TrainState)>> {
    if !opts.resuming() {
        return Ok(None);
    }
    let found = checkpoint::latest_valid(&run.checkpoints, |w| eprintln!("warning: {w}"));
    if let Some((_, state)) = &found
        && state.config_hash != r.hash
    {
        if !opts.allow_config_change {
            return Err(Error::ResumeConflict {
                path: run.path.clone(),
                reason: format!(
                    "the configuration changed since the checkpoint (hash {} → {}); pass --allow-config-change to accept it",
                    state.config_hash, r.hash
                ),
            });
        }
        let old =
            std::fs::read_to_string(run.path.join("config.resolved.toml")).unwrap_or_default();
        let diff = line_diff(&old, &r.experiment.to_toml());
        run.write(&format!("config-change-at-step-{}.diff", state.step), &diff)?;
    }
    if let Some((dir, state)) = &found {
        record_environment_change(run, here, dir, state.step)?;
    }
    Ok(found)
}

/// A resume under other arithmetic than its checkpoint was trained with (another thread count,
/// device, backend or processor) continues, but from there on it no longer repeats bit for bit a
/// run that was never interrupted, and `environment.json` will name only the new environment:
/// the change is said on stderr and recorded in the run as `environment-change-at-step-N.json`
/// (the checkpoint's environment, the resume's, and what differs).
fn record_environment_change(
    run: &RunDir,
    here: &serde_json::Value,
    checkpoint: &Path,
    step: u64,
) -> Result<()> {
    let Some(then) = checkpoint::environment(checkpoint) else {
        return Ok(());
    };
    let differences = arithmetic_differences(&then, here);
    if differences.is_empty() {
        return Ok(());
    }
    eprintln!(
        "warning: {}: the checkpoint at step {step} was trained in another environment ({}); the \
         run continues, but from here on it will not repeat bit for bit a run that was never \
         interrupted",
        run.path.display(),
        differences.join(", ")
    );
    run.write(
        &format!("environment-change-at-step-{step}.json"),
        &pretty(&serde_json::json!({
            "checkpoint": then,
            "resumed_with": here,
            "differences": differences,
        })),
    )
}

/// Refuses, before anything is written, what would otherwise start over silently: `--resume DIR`
/// naming no run, a run whose `status.json` is damaged (without `--resume`), and `--resume`
/// where every checkpoint is damaged. Each message says what was found and what to do. (A run
/// that never wrote a checkpoint restarts at step 0 and says so: nothing saved is lost.)
fn check_resume_target(run_path: &Path, ckpt_path: &Path, opts: &RunOptions) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::ResumeConflict {
            path: run_path.to_path_buf(),
            reason,
        })
    };
    let status = match RunDir::check_status(run_path) {
        Ok(status) => status,
        Err(e) if opts.resuming() => {
            eprintln!("warning: {e}; resuming from the newest valid checkpoint");
            None
        }
        Err(e) => {
            return refuse(format!(
                "{e}: pass --resume to continue from the newest valid checkpoint, or remove the \
                 folder to start over"
            ));
        }
    };
    if opts.resume_dir.is_some() && status.is_none() && !run_path.join("status.json").exists() {
        return refuse(
            "no run here (no status.json): check the path; runs are `runs/<name>/<hash>`, and \
             `weakalign runs` lists them"
                .into(),
        );
    }
    if !opts.resuming() {
        return Ok(());
    }
    let mut damaged = 0;
    let found = checkpoint::latest_valid(ckpt_path, |_| damaged += 1).is_some();
    if !found && damaged > 0 {
        return refuse(format!(
            "{} holds {damaged} checkpoint(s), none valid (the warnings above say why): restore \
             one, or remove the run and its checkpoints and start again without --resume",
            ckpt_path.display()
        ));
    }
    if !found {
        let at = status.map_or("no run yet".to_string(), |s| {
            format!("the run reached step {} without a checkpoint", s.step)
        });
        eprintln!(
            "{}: nothing to resume ({at}); starting at step 0",
            run_path.display()
        );
    }
    Ok(())
}

/// Writes the run's resolved and original configuration, git state and environment (`here`).
fn write_provenance(
    r: &Resolved,
    run: &RunDir,
    here: &serde_json::Value,
) -> Result<(String, String)> {
    run.write("config.resolved.toml", &r.experiment.to_toml())?;
    if let Ok(original) = std::fs::read_to_string(&r.file) {
        run.write("config.original.toml", &original)?;
    }
    let (commit, dirty) = git_provenance();
    run.write("git.txt", &format!("commit {commit}\n\n{dirty}"))?;
    run.write("environment.json", &pretty(here))?;
    Ok((commit, dirty))
}

/// Trains one experiment (see the module documentation).
pub fn run(r: &Resolved, opts: &RunOptions) -> Result<RunOutcome> {
    // The device must work before anything is written.
    let device = r.experiment.device.training()?;
    let (run_path, ckpt_path) = target_paths(r, opts);
    check_resume_target(&run_path, &ckpt_path, opts)?;
    if let Some(done) = already_completed(&run_path, opts) {
        return Ok(done);
    }
    if let Some(holder) = RunDir::live_holder(&run_path) {
        // A live run is neither resumed nor restarted: say so before suggesting --resume.
        return Err(Error::Locked {
            path: run_path,
            holder: Some(holder),
        });
    }
    if let Some(s) = RunDir::read_status(&run_path).filter(|_| !opts.resuming()) {
        // A run that never reached a checkpoint has nothing to resume: it starts afresh.
        if checkpoint::latest_valid(&ckpt_path, |_| {}).is_some() {
            return Err(Error::ResumeConflict {
                path: run_path,
                reason: format!(
                    "exists with status {} at step {}: pass --resume to continue it",
                    s.display(),
                    s.step
                ),
            });
        }
    }
    // Every dataset the run needs is found before anything is written.
    let sources = Sources::build(r, &opts.roots.datasets)?;
    let run = RunDir::open(run_path, ckpt_path)?;
    let stages = plan(r);
    let here = environment(r.experiment.device);
    let resume = match resume_point(r, &run, opts, &here)? {
        None if opts.reuse_strong => reuse_strong(r, &run, opts, &stages, &here)?,
        found => found,
    };
    let (start, metrics_lines) = resume
        .as_ref()
        .map_or((0, 0), |(_, s)| (s.step, s.metrics_lines));
    let git = write_provenance(r, &run, &here)?;
    if let Some(ids) = super::launcher::task_ids() {
        run.write(
            "slurm.json",
            &serde_json::to_string_pretty(&ids).expect("JSON values"),
        )?;
    }
    run.set_status(Status::Running, start, None)?;
    let total = total_steps(&stages);
    let mut logger = Logger::open(&run, r, start, metrics_lines, total, &git)?;

    let mut reached = start;
    let outcome = train(
        r,
        &stages,
        &sources,
        &run,
        resume,
        opts,
        &device,
        &mut logger,
        &mut reached,
    );
    let (status, message) = match &outcome {
        Ok(o) => (o.status, None),
        Err(e) => (Status::Failed, Some(e.to_string())),
    };
    // A failed run records the step it reached, not the one it started from.
    let step = outcome.as_ref().map_or(reached, |o| o.step);
    run.set_status(status, step, message)?;
    logger.finish(status)?;
    outcome
}

/// `--reuse-strong` for a run without a checkpoint: another run's checkpoint at the end of the
/// strong stages, trained in this environment (`here`), copied into this run, or `None` (the run
/// trains from step 0).
fn reuse_strong(
    r: &Resolved,
    run: &RunDir,
    opts: &RunOptions,
    stages: &[StagePlan],
    here: &serde_json::Value,
) -> Result<Option<(PathBuf, TrainState)>> {
    let at = strong_end(stages);
    if at == 0 {
        return Ok(None);
    }
    let Some(donor) = fork::find_donor(r, &opts.roots, at, here) else {
        eprintln!(
            "{}: no run has a checkpoint of these strong stages (step {at}) trained with this \
             device and thread count; training them",
            run.path.display()
        );
        return Ok(None);
    };
    let adopted = fork::adopt(&donor, r, run, &pretty(here))?;
    eprintln!(
        "{}: reusing steps 1–{at} (the strong stages) of {}: the same configuration apart from \
         the weak stage, trained with this device and thread count",
        run.path.display(),
        donor.run.display()
    );
    Ok(Some(adopted))
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize")
}

/// The model to train on `device` and the state to train it from: a seeded initialization with
/// ImageNet weights, or the checkpoint's (then also its optimizer file). The model is always
/// built on the CPU, from the CPU's seeded RNG, and then moved: a CPU and a GPU run of one
/// configuration start from the same weights.
fn initial_state(
    r: &Resolved,
    resume: Option<(PathBuf, TrainState)>,
    roots: &Roots,
    device: &Device,
) -> Result<(TwoStage, TrainState, Option<PathBuf>)> {
    let cpu = crate::device::training();
    cpu.seed(r.experiment.seed);
    let mut model = r.model.init_two_stage(&cpu)?;
    let (state, optimizer) = match resume {
        Some((dir, s)) => {
            weights::load_record(&mut model, &dir.join(checkpoint::MODEL))?;
            eprintln!("resuming from {} (step {})", dir.display(), s.step);
            let state = TrainState {
                config_hash: r.hash.clone(),
                ..s
            };
            (state, Some(dir.join(checkpoint::OPTIMIZER)))
        }
        None => {
            if r.experiment.model.pretrained {
                weights::load_imagenet(&mut model.backbone, &roots.pretrained)?;
            }
            let state = TrainState {
                step: 0,
                best_pck: None,
                best_step: None,
                pck: None,
                config_hash: r.hash.clone(),
                metrics_lines: 0,
                seed: r.experiment.seed,
            };
            (state, None)
        }
    };
    // burn initializes parameters lazily, on first use and on the device they are on then:
    // draw them all here, on the CPU, before any move.
    crate::model::materialize(&model);
    if r.experiment.device.is_cpu() {
        return Ok((model, state, optimizer));
    }
    Ok((model.fork(device), state, optimizer))
}

/// Adam, with the saved state when the stage continues from a checkpoint inside it.
fn optimizer(saved: Option<PathBuf>) -> Result<ModuleOptimizer> {
    let optim = AdamConfig::new().init();
    match saved {
        None => Ok(optim),
        Some(path) => optim.load(&path).map_err(|e| Error::Weights {
            path,
            reason: format!("unreadable optimizer state: {e}"),
        }),
    }
}

/// PCK of the inference copy of `model` on `set` under the experiment's protocol.
/// Gives way between batches when `stop()` says so (`None`).
fn pck(
    r: &Resolved,
    model: &TwoStage,
    set: &KeypointSet,
    tps: &Tps,
    stop: &dyn Fn() -> bool,
) -> Result<Option<PckResult>> {
    let exp = &r.experiment;
    evaluate_unless(
        &model.valid(),
        set,
        exp.model.transform,
        r.normalization(),
        exp.eval.alpha,
        tps,
        8,
        exp.eval.affine_passes,
        stop,
    )
}

/// The stages from the resume point on, then the test evaluation; `reached` follows the global
/// step (what a failed run's status reports).
#[allow(clippy::too_many_arguments)]
fn train(
    r: &Resolved,
    stages: &[StagePlan],
    sources: &Sources,
    run: &RunDir,
    resume: Option<(PathBuf, TrainState)>,
    opts: &RunOptions,
    device: &Device,
    logger: &mut Logger,
    reached: &mut u64,
) -> Result<RunOutcome> {
    let exp = &r.experiment;
    let (mut model, mut state, mut optimizer_file) = initial_state(r, resume, &opts.roots, device)?;
    let tps_loss = Tps::new(exp.loss.tps_lambda)?;
    let tps_eval = Tps::new(exp.eval.tps_lambda)?;
    let environment = pretty(&environment(exp.device));
    let retention = checkpoint::Retention {
        keep_last: exp.checkpoint.keep_last,
        keep_best: exp.checkpoint.keep_best,
        pinned: Some(strong_end(stages)).filter(|&s| s > 0),
    };
    for plan in stages {
        if state.step >= plan.end {
            continue;
        }
        model = configure(model, plan);
        let backbone = ParamGroup::ids_from_module(model.backbone.clone());
        let mut optim = optimizer(optimizer_file.take().filter(|_| state.step > plan.begin))?;
        let mut batches = sources.batches(plan, state.step, device)?;
        logger.stage(plan.stage);
        while state.step < plan.end {
            let waited = Instant::now();
            let batch = batches.next_batch()?;
            let data_s = waited.elapsed().as_secs_f64();
            let computed = Instant::now();
            let rates = plan.rates_at(state.step, &backbone);
            let (next, record) = optimize(
                model,
                &mut optim,
                plan.stage,
                &batch,
                r,
                &tps_loss,
                rates,
                state.step + 1,
                logger.due(state.step + 1, plan),
            )?;
            model = next;
            state.step += 1;
            *reached = state.step;
            let step = state.step;
            let timing = StepTiming {
                data_s,
                compute_s: computed.elapsed().as_secs_f64(),
                pairs: batch.indices.len(),
            };
            if logger.step(step, plan, &record, timing)? {
                run.set_status(Status::Running, step, None)?;
            }
            logger.images(step, &batch, record.theta_aff.as_ref())?;
            let interrupted = opts.interrupted();
            let stage_end = step == plan.end;
            let mut pck_now = None;
            if step.is_multiple_of(exp.eval.every as u64) || stage_end {
                let v = pck(r, &model, &sources.validation, &tps_eval, &|| false)?
                    .expect("a validation that is never stopped finishes")
                    .model;
                logger.validation(step, plan.stage, v)?;
                if state.best_pck.is_none_or(|b| v > b) {
                    (state.best_pck, state.best_step) = (Some(v), Some(step));
                }
                pck_now = Some(v);
            }
            if step.is_multiple_of(exp.checkpoint.every as u64) || stage_end || interrupted {
                state.pck = pck_now;
                state.metrics_lines = logger.sync()?;
                let config = exp.to_toml();
                checkpoint::save_training(
                    &run.checkpoints,
                    &state,
                    (&config, &environment),
                    &model.valid(),
                    &optim,
                    retention,
                )?;
            }
            if opts.crash_after_step == Some(step) {
                std::process::abort(); // test hook: a crash without any cleanup
            }
            if interrupted {
                return Ok(outcome(run, Status::Interrupted, step, None));
            }
        }
    }
    // The last checkpoint holds the final step; SIGTERM during the test evaluation stops it, and
    // a resume runs it again.
    let Some(result) = pck(r, &model, &sources.test, &tps_eval, &|| {
        // The evaluation can outlast the heartbeat timeout: keep the run visibly alive.
        let _ = run.set_status(Status::Running, state.step, None);
        opts.interrupted()
    })?
    else {
        return Ok(outcome(run, Status::Interrupted, state.step, None));
    };
    logger.test(state.step, result.model)?;
    write_summary(r, run, &state, &result, opts)?;
    let test = TestScore {
        pck: result.model,
        identity: result.identity,
    };
    Ok(outcome(run, Status::Completed, state.step, Some(test)))
}

fn outcome(run: &RunDir, status: Status, step: u64, test: Option<TestScore>) -> RunOutcome {
    RunOutcome {
        dir: run.path.clone(),
        status,
        step,
        test,
        skipped: false,
    }
}

/// `summary.json`: what `compare` and `runs` read.
fn write_summary(
    r: &Resolved,
    run: &RunDir,
    state: &TrainState,
    result: &PckResult,
    opts: &RunOptions,
) -> Result<()> {
    let exp = &r.experiment;
    // The weak loss's inlier scores at the last logged weak step (none without a weak stage).
    let [inlier_aff, inlier_aff_tps] =
        last_weak_metrics(&run.path, ["inlier_aff", "inlier_aff_tps"]);
    let summary = serde_json::json!({
        "experiment": exp.name,
        "config_hash": r.hash,
        "cell_hash": r.cell_hash,
        "cell_label": opts.cell_label,
        "seed": exp.seed,
        "steps": state.step,
        "test_dataset": exp.data.test.name(),
        "test_pairs": result.pairs,
        "alpha": exp.eval.alpha,
        "test_pck": result.model,
        "test_identity_pck": result.identity,
        "best_valid_pck": state.best_pck,
        "best_step": state.best_step,
        "weak_inlier_aff": inlier_aff,
        "weak_inlier_aff_tps": inlier_aff_tps,
    });
    run.write(
        "summary.json",
        &serde_json::to_string_pretty(&summary).expect("JSON values serialize"),
    )
}

/// The last values of `tags` logged in the weak stage (`metrics.jsonl` of the run at `run`,
/// read once).
fn last_weak_metrics<const N: usize>(run: &Path, tags: [&str; N]) -> [Option<f64>; N] {
    last_metrics(run, Some("weak"), tags)
}

/// The last values of `tags` logged in `stage` (any stage: `None`) in `metrics.jsonl` of the
/// run at `run`, read once.
pub(crate) fn last_metrics<const N: usize>(
    run: &Path,
    stage: Option<&str>,
    tags: [&str; N],
) -> [Option<f64>; N] {
    // Per tag: its last line's value, once that line is seen.
    let mut found: [Option<Option<f64>>; N] = [None; N];
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    let lines = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| stage.is_none_or(|s| v["stage"] == s));
    for v in lines {
        if let Some(i) = tags.iter().position(|&t| v["tag"] == t) {
            found[i] = found[i].or(Some(v["value"].as_f64()));
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.map(Option::flatten)
}

/// A minimal line diff (`-` old, `+` new) for the config-change record.
fn line_diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut out = String::new();
    for l in &a {
        if !b.contains(l) {
            out += &format!("-{l}\n");
        }
    }
    for l in &b {
        if !a.contains(l) {
            out += &format!("+{l}\n");
        }
    }
    out
}
