//! The training runner: strong (synthetic, grid loss) stages, then the weak (inlier loss) stage,
//! with validation, TensorBoard and `metrics.jsonl` logging, crash-safe checkpoints and
//! bit-exact resume.
//!
//! A hand-written loop rather than burn-train's `SupervisedTraining`: its checkpoints are written
//! per epoch and in place (not atomic) and its loggers get no global step across resumes.
//!
//! Stages run in order on one global step counter: `strong_affine` and `strong_tps` (each
//! `strong.steps`, for the heads the transform uses), then `weak` (`weak.steps`). Every sample is
//! a pure function of `(seed, epoch, index)` and the epoch order of `(seed, epoch)`, so the data
//! position is a function of the step: a resume from a checkpoint at step `k` replays exactly the
//! batches an uninterrupted run would see. Model records are saved from the inference copy
//! (`valid()`), with the optimizer state and `state.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};

use super::checkpoint::{self, TrainState};
use super::config::{Experiment, Roots};
use super::resolve::{Resolved, TransformKind, resolve};
use super::run_dir::{Metrics, RunDir, Status, environment, git_provenance};
use super::tensorboard::{EventWriter, HParam, SessionStatus};
use crate::backbone::{BatchNormMode, Normalization, Trainable};
use crate::data::embedded::{EmbeddedDataset, EmbeddedPairs, Split};
use crate::data::loader::{EpochBatches, Order, PairBatch, PairSource};
use crate::data::synth::{SynthConfig, SynthModel, SynthPairs};
use crate::error::{Error, Result};
use crate::eval::keypoints::{KeypointSet, Scored, evaluate};
use crate::geometry::{
    AffineTheta, Composed, GridFactors, Theta, Tps, TpsTheta, sample, sampling_grid,
};
use crate::loss::{affine_inlier_score, composed_inlier_score, transformed_grid_loss};
use crate::model::{ModelConfig, TwoStage};
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
    /// Set by Ctrl-C: checkpoint and stop.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// The sweep values of this run except the seed (e.g. `loss.inlier="hard"`), for `compare`.
    pub cell_label: String,
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
    /// Test PCK of the final model and of the identity transform (when evaluated).
    pub test: Option<(f64, f64)>,
    /// The run was already complete: nothing was done.
    pub skipped: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    StrongAffine,
    StrongTps,
    Weak,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::StrongAffine => "strong_affine",
            Stage::StrongTps => "strong_tps",
            Stage::Weak => "weak",
        }
    }
}

/// The stages of an experiment with their global step ranges.
fn plan(exp: &Experiment, r: &Resolved) -> Vec<(Stage, u64, u64)> {
    let mut stages = Vec::new();
    let mut at = 0u64;
    let mut push = |s: Stage, n: usize| {
        if n > 0 {
            stages.push((s, at, at + n as u64));
            at += n as u64;
        }
    };
    if r.transform != TransformKind::Tps {
        push(Stage::StrongAffine, exp.strong.steps);
    }
    if r.transform != TransformKind::Affine {
        push(Stage::StrongTps, exp.strong.steps);
    }
    push(Stage::Weak, exp.weak.steps);
    stages
}

/// The run directory of an experiment.
pub fn run_paths(exp: &Experiment, roots: &Roots) -> (PathBuf, PathBuf) {
    let hash = exp.hash();
    (
        roots.runs.join(&exp.name).join(&hash),
        roots.checkpoints.join(format!("{}-{hash}", exp.name)),
    )
}

/// Sums squared gradient entries over a module's parameters.
struct GradNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sum += g.square().sum().into_scalar::<f64>();
        }
    }
}

/// Everything the loop needs about data.
struct Data {
    embedded: Arc<EmbeddedDataset>,
    validation: KeypointSet,
    test: KeypointSet,
    norm: Normalization,
}

fn keypoint_set(
    name: &str,
    data: &Arc<EmbeddedDataset>,
    split: Split,
    roots: &Roots,
) -> Result<KeypointSet> {
    match name {
        "pf-willow" => KeypointSet::pf_willow(&roots.datasets.join("pf-willow")),
        _ => Ok(KeypointSet::embedded(data, split)),
    }
}

/// Builds the stage's pair source.
fn source(
    stage: Stage,
    exp: &Experiment,
    data: &Data,
    roots: &Roots,
) -> Result<Arc<dyn PairSource>> {
    let size = exp.model.image_size;
    let train_images = || -> Result<Vec<crate::data::image::RgbImage>> {
        match exp.data.train.as_str() {
            "caltech-101" => {
                let root = roots.datasets.join("caltech-101/101_ObjectCategories");
                let paths = crate::data::synth::image_paths_in(&root)?;
                paths
                    .iter()
                    .map(|p| crate::data::image::load_rgb(p))
                    .collect()
            }
            _ => Ok(data
                .embedded
                .instances
                .iter()
                .filter(|i| i.index < data.embedded.config.train)
                .map(|i| i.image.clone())
                .collect()),
        }
    };
    Ok(match stage {
        Stage::StrongAffine | Stage::StrongTps => {
            let model = if stage == Stage::StrongAffine {
                SynthModel::Affine
            } else {
                SynthModel::Tps
            };
            let config = SynthConfig {
                random_alpha: exp.strong.random_alpha,
                random_s: exp.strong.random_s,
                random_t: exp.strong.random_t,
                tps_range: exp.strong.tps_range,
                output_size: size,
                ..SynthConfig::default()
            };
            Arc::new(SynthPairs {
                images: train_images()?,
                model,
                config,
                tps: Tps::new(0.0)?,
                seed: exp.seed,
                norm: data.norm,
            })
        }
        Stage::Weak => match exp.data.train.as_str() {
            "caltech-101" => {
                let root = roots.datasets.join("caltech-101/101_ObjectCategories");
                let lists = crate::data::weak::build_pair_lists(
                    &root,
                    40,
                    0.2,
                    exp.seed,
                    &["BACKGROUND_Google"],
                )?;
                Arc::new(crate::data::weak::WeakPairs {
                    root,
                    pairs: lists.train,
                    augment: true,
                    size,
                    norm: data.norm,
                    seed: exp.seed,
                })
            }
            _ => Arc::new(EmbeddedPairs {
                dataset: data.embedded.clone(),
                split: Split::Train,
                size,
                norm: data.norm,
            }),
        },
    })
}

/// Applies a stage's trainability to the model.
fn configure(model: TwoStage, stage: Stage, r: &Resolved) -> TwoStage {
    let mut m = model;
    match stage {
        Stage::StrongAffine | Stage::StrongTps => {
            // The reference: feature extractor frozen and in eval mode; the trained head's BN in
            // train mode.
            m.backbone = m
                .backbone
                .configure(BatchNormMode::Frozen, Trainable::Frozen);
            let train_aff = stage == Stage::StrongAffine;
            m.regression_aff = m.regression_aff.set_require_grad(train_aff);
            m.regression_tps = m.regression_tps.set_require_grad(!train_aff);
        }
        Stage::Weak => {
            m.backbone = m.backbone.configure(r.weak_batch_norm, r.weak_trainable);
            // Frozen BatchNorm: running statistics in the heads too (the reference's model.eval()),
            // while γ/β keep training.
            if r.weak_batch_norm == BatchNormMode::Frozen {
                m.regression_aff = m.regression_aff.freeze();
                m.regression_tps = m.regression_tps.freeze();
            }
            m.regression_aff = m.regression_aff.set_require_grad(true);
            m.regression_tps = m.regression_tps.set_require_grad(true);
        }
    }
    m
}

/// Losses of one step.
struct StepOutput {
    loss: Tensor<1>,
    scores: Vec<(&'static str, Tensor<1>)>,
    theta_aff: Option<AffineTheta>,
}

fn step_loss(
    model: &TwoStage,
    stage: Stage,
    batch: &PairBatch,
    r: &Resolved,
    tps_loss: &Tps,
    device: &Device,
) -> Result<StepOutput> {
    let (source, target) = (batch.source.clone(), batch.target.clone());
    let gt = |n: usize| -> Vec<f64> { batch.theta.iter().flat_map(|t| t[..n].to_vec()).collect() };
    let dtype = source.dtype();
    Ok(match stage {
        Stage::StrongAffine => {
            let out = model.forward_affine(source, target)?;
            let truth = AffineTheta::from_values(&gt(6), device, dtype)?;
            let loss = transformed_grid_loss(&out.theta, &truth)?;
            StepOutput {
                loss,
                scores: Vec::new(),
                theta_aff: Some(out.theta),
            }
        }
        Stage::StrongTps => {
            let out = model.forward_tps(source, target)?;
            let truth = TpsTheta::from_values(&gt(18), device, dtype)?;
            let spline = Tps::new(0.0)?; // TransformedGridLoss uses PointTnf(λ = 0)
            let loss = transformed_grid_loss(&spline.warp(&out.theta), &spline.warp(&truth))?;
            StepOutput {
                loss,
                scores: Vec::new(),
                theta_aff: None,
            }
        }
        Stage::Weak => match r.transform {
            TransformKind::AffineTps => {
                let out = model.forward(source, target)?;
                let s_aff = affine_inlier_score(&out.theta_aff, out.corr_aff.clone(), &r.inlier)?;
                let composed = Composed {
                    affine: &out.theta_aff,
                    tps: tps_loss.warp(&out.theta_tps),
                };
                let s_comp = composed_inlier_score(&composed, out.corr_aff, &r.inlier)?;
                let loss = (s_aff.clone() + s_comp.clone()).neg().mean();
                StepOutput {
                    loss,
                    scores: vec![
                        ("inlier_aff", s_aff.mean()),
                        ("inlier_aff_tps", s_comp.mean()),
                    ],
                    theta_aff: Some(out.theta_aff),
                }
            }
            TransformKind::Affine => {
                let out = model.forward_affine(source, target)?;
                let s = affine_inlier_score(&out.theta, out.corr, &r.inlier)?;
                StepOutput {
                    loss: s.clone().neg().mean(),
                    scores: vec![("inlier_aff", s.mean())],
                    theta_aff: Some(out.theta),
                }
            }
            TransformKind::Tps => {
                let out = model.forward_tps(source, target)?;
                let batch_size = out.theta.batch();
                let identity = AffineTheta::identity(batch_size, device, dtype);
                let composed = Composed {
                    affine: &identity,
                    tps: tps_loss.warp(&out.theta),
                };
                let s = composed_inlier_score(&composed, out.corr, &r.inlier)?;
                StepOutput {
                    loss: s.clone().neg().mean(),
                    scores: vec![("inlier_tps", s.mean())],
                    theta_aff: None,
                }
            }
        },
    })
}

/// De-normalizes the first image of a batch into RGB bytes.
fn to_rgb(images: Tensor<4>, norm: Normalization) -> (usize, usize, Vec<u8>) {
    let [_, _, h, w] = images.dims();
    let v = images
        .slice([0..1, 0..3, 0..h, 0..w])
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32");
    let mut rgb = vec![0u8; h * w * 3];
    for c in 0..3 {
        for i in 0..h * w {
            let x = (v[c * h * w + i] as f64 * norm.std[c] + norm.mean[c]) * 255.0;
            rgb[i * 3 + c] = x.clamp(0.0, 255.0).round() as u8;
        }
    }
    (h, w, rgb)
}

fn hparams(exp: &Experiment) -> Vec<(String, HParam)> {
    vec![
        ("experiment".into(), HParam::Text(exp.name.clone())),
        ("backbone".into(), HParam::Text(exp.model.backbone.clone())),
        (
            "transform".into(),
            HParam::Text(exp.model.transform.clone()),
        ),
        ("inlier".into(), HParam::Text(exp.loss.inlier.clone())),
        (
            "normalize_matches".into(),
            HParam::Bool(exp.model.normalize_matches),
        ),
        ("seed".into(), HParam::Number(exp.seed as f64)),
        (
            "strong.steps".into(),
            HParam::Number(exp.strong.steps as f64),
        ),
        ("weak.steps".into(), HParam::Number(exp.weak.steps as f64)),
        ("weak.lr".into(), HParam::Number(exp.weak.lr)),
    ]
}

/// Trains one experiment (see the module documentation).
pub fn run(file: &Path, exp: &Experiment, opts: &RunOptions) -> Result<RunOutcome> {
    let r = resolve(exp, file)?;
    let roots = &opts.roots;
    let (run_path, ckpt_path) = match &opts.resume_dir {
        Some(dir) => {
            let hash = dir
                .file_name()
                .map(|h| h.to_string_lossy().to_string())
                .unwrap_or_default();
            let name = dir
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            (
                dir.clone(),
                roots.checkpoints.join(format!("{name}-{hash}")),
            )
        }
        None => run_paths(exp, roots),
    };
    let previous = RunDir::read_status(&run_path);
    if let Some(s) = &previous {
        if s.status == Status::Completed && opts.resume_dir.is_none() {
            eprintln!(
                "{}: already COMPLETED (step {}); nothing to do",
                run_path.display(),
                s.step
            );
            let summary: Option<serde_json::Value> =
                std::fs::read_to_string(run_path.join("summary.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
            let test = summary
                .and_then(|v| Some((v["test_pck"].as_f64()?, v["test_identity_pck"].as_f64()?)));
            return Ok(RunOutcome {
                dir: run_path,
                status: Status::Completed,
                step: s.step,
                test,
                skipped: true,
            });
        }
        let (_, ckpt) = run_paths(exp, roots);
        let resumable = checkpoint::latest_valid(&ckpt, |_| {}).is_some();
        // A run that never reached a checkpoint has nothing to resume: start it afresh.
        if resumable && !opts.resume && opts.resume_dir.is_none() {
            return Err(Error::Argument {
                op: "exp",
                arg: "--resume",
                reason: format!(
                    "{} exists with status {} at step {}: pass --resume to continue it",
                    run_path.display(),
                    s.display(),
                    s.step
                ),
            });
        }
    }
    let run = RunDir::open(run_path.clone(), ckpt_path)?;

    // Resume point and configuration check.
    let mut warnings = Vec::new();
    let resume_from = if opts.resume || opts.resume_dir.is_some() {
        checkpoint::latest_valid(&run.checkpoints, |w| warnings.push(w))
    } else {
        None
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if let Some((_, state)) = &resume_from
        && state.config_hash != exp.hash()
    {
        let old =
            std::fs::read_to_string(run.path.join("config.resolved.toml")).unwrap_or_default();
        if !opts.allow_config_change {
            return Err(Error::Argument {
                op: "exp",
                arg: "--resume",
                reason: format!(
                    "the configuration changed since the checkpoint (hash {} → {}); pass --allow-config-change to accept it",
                    state.config_hash,
                    exp.hash()
                ),
            });
        }
        let diff = line_diff(&old, &exp.to_toml());
        run.write(&format!("config-change-at-step-{}.diff", state.step), &diff)?;
    }
    let start = resume_from.as_ref().map_or(0, |(_, s)| s.step);

    // Provenance.
    run.write("config.resolved.toml", &exp.to_toml())?;
    if let Ok(original) = std::fs::read_to_string(file) {
        run.write("config.original.toml", &original)?;
    }
    let (commit, dirty) = git_provenance();
    run.write("git.txt", &format!("commit {commit}\n\n{dirty}"))?;
    run.write(
        "environment.json",
        &serde_json::to_string_pretty(&environment()).unwrap(),
    )?;
    run.set_status(Status::Running, start, None)?;

    // TensorBoard: one writer per split.
    let mut tb_train = EventWriter::create(&run.path.join("train"))?;
    let mut tb_valid = EventWriter::create(&run.path.join("valid"))?;
    let mut tb_info = EventWriter::create(&run.path.join("info"))?;
    tb_train.session_start(start)?;
    tb_valid.session_start(start)?;
    tb_info.text("config", start, &format!("```toml\n{}\n```", exp.to_toml()))?;
    tb_info.text(
        "git",
        start,
        &format!("commit {commit}, {} dirty lines", dirty.lines().count()),
    )?;
    tb_info.text("description", start, &exp.description)?;
    let hp = hparams(exp);
    tb_info.hparams_experiment(&hp, &["valid/pck", "test/pck", "train/loss"])?;
    tb_info.hparams_session_start(&hp, &exp.cell_hash())?;

    let outcome = train(
        exp,
        &r,
        &run,
        resume_from,
        opts,
        &mut tb_train,
        &mut tb_valid,
    );
    let (status, message) = match &outcome {
        Ok(o) => (o.status, None),
        Err(e) => (Status::Failed, Some(e.to_string())),
    };
    let step = outcome.as_ref().map_or(start, |o| o.step);
    run.set_status(status, step, message)?;
    tb_info.hparams_session_end(match status {
        Status::Completed => SessionStatus::Success,
        Status::Failed => SessionStatus::Failure,
        _ => SessionStatus::Running,
    })?;
    for w in [&mut tb_train, &mut tb_valid, &mut tb_info] {
        w.flush()?;
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
fn train(
    exp: &Experiment,
    r: &Resolved,
    run: &RunDir,
    resume_from: Option<(PathBuf, TrainState)>,
    opts: &RunOptions,
    tb_train: &mut EventWriter,
    tb_valid: &mut EventWriter,
) -> Result<RunOutcome> {
    let roots = &opts.roots;
    let device = crate::device::training();
    let norm = r.backbone.normalization();
    let embedded = Arc::new(EmbeddedDataset::generate(
        crate::data::embedded::EmbeddedConfig::default(),
    ));
    let data = Data {
        validation: keypoint_set(&exp.data.validation, &embedded, Split::Validation, roots)?
            .subset(exp.eval.max_validation_pairs),
        test: keypoint_set(&exp.data.test, &embedded, Split::Test, roots)?,
        embedded,
        norm,
    };

    // Model: seeded initialization, ImageNet weights, or the checkpoint.
    device.seed(exp.seed);
    let config = ModelConfig {
        backbone: r.backbone,
        image_size: exp.model.image_size,
        normalize_features: true,
        normalize_matches: exp.model.normalize_matches,
        identity_init: exp.model.identity_init,
    };
    let mut model = config.init_two_stage(&device)?;
    let mut state = TrainState {
        step: 0,
        best_pck: None,
        best_step: None,
        pck: None,
        config_hash: exp.hash(),
        metrics_lines: 0,
        seed: exp.seed,
    };
    let mut optimizer_file: Option<PathBuf> = None;
    match &resume_from {
        Some((dir, s)) => {
            weights::load_record(&mut model, &dir.join(checkpoint::MODEL))?;
            optimizer_file = Some(dir.join(checkpoint::OPTIMIZER));
            state = TrainState {
                config_hash: exp.hash(),
                ..s.clone()
            };
            eprintln!(
                "resuming {} from {} (step {})",
                run.path.display(),
                dir.display(),
                s.step
            );
        }
        None if exp.model.pretrained => {
            weights::load_imagenet(&mut model.backbone, &roots.pretrained)?;
        }
        None => {}
    }
    let mut metrics = Metrics::open(run.path.join("metrics.jsonl"), state.metrics_lines)?;
    let stages = plan(exp, r);
    let total = stages.last().map_or(0, |s| s.2);
    let tps_loss = Tps::new(exp.loss.tps_lambda)?;
    let tps_eval = Tps::new(exp.eval.tps_lambda)?;
    let scored = match r.transform {
        TransformKind::Affine => Scored::Affine,
        TransformKind::Tps => Scored::Tps,
        TransformKind::AffineTps => Scored::AffineTps,
    };
    let progress = if exp.log.progress && total > state.step {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(state.step);
        Some(bar)
    } else {
        None
    };

    let abort_at: Option<u64> = std::env::var("WEAKALIGN_ABORT_AFTER_STEP")
        .ok()
        .and_then(|v| v.parse().ok());
    for &(stage, begin, end) in &stages {
        if state.step >= end {
            continue;
        }
        model = configure(model, stage, r);
        let (base_lr, schedule) = if stage == Stage::Weak {
            (exp.weak.lr, exp.weak.schedule.as_str())
        } else {
            (exp.strong.lr, exp.strong.schedule.as_str())
        };
        // Cosine annealing to lr/100 over the stage, a pure function of the step (resume-safe).
        let lr_at = |local: u64| -> f64 {
            match schedule {
                "cosine" => {
                    let t = local as f64 / (end - begin).max(1) as f64;
                    let floor = base_lr / 100.0;
                    floor + (base_lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
                }
                _ => base_lr,
            }
        };
        let batch_size = if stage == Stage::Weak {
            exp.weak.batch_size
        } else {
            exp.strong.batch_size
        };
        let mut optim = AdamConfig::new().init();
        if let Some(path) = optimizer_file.take().filter(|_| state.step > begin) {
            optim = optim.load(&path).map_err(|e| Error::Weights {
                path: path.clone(),
                reason: format!("unreadable optimizer state: {e}"),
            })?;
        }
        let src = source(stage, exp, &data, roots)?;
        let order = Order {
            seed: exp.seed,
            shuffle: true,
            batch_size,
            keep_last: false,
        };
        let per_epoch = order.batches_per_epoch(src.len()).max(1) as u64;
        if let Some(bar) = &progress {
            bar.set_prefix(stage.name());
        }
        let mut local = state.step - begin;
        let mut epoch = local / per_epoch;
        let mut batches = EpochBatches::new(
            src.clone(),
            order,
            epoch,
            (local % per_epoch) as usize,
            exp.data.prefetch,
            exp.data.workers,
            &device,
        );
        let mut timer = Instant::now();
        let mut pairs_since = 0usize;
        while state.step < end {
            let batch = match batches.next() {
                Some(b) => b?,
                None => {
                    epoch += 1;
                    batches = EpochBatches::new(
                        src.clone(),
                        order,
                        epoch,
                        0,
                        exp.data.prefetch,
                        exp.data.workers,
                        &device,
                    );
                    continue;
                }
            };
            let out = step_loss(&model, stage, &batch, r, &tps_loss, &device)?;
            let loss_value = out.loss.clone().into_scalar::<f64>();
            if !loss_value.is_finite() {
                return Err(Error::Argument {
                    op: "train",
                    arg: "loss",
                    reason: format!(
                        "non-finite loss {loss_value} at step {} ({}); last good checkpoint kept",
                        state.step + 1,
                        stage.name()
                    ),
                });
            }
            let scores: Vec<(&str, f64)> = out
                .scores
                .iter()
                .map(|(n, t)| (*n, t.clone().into_scalar::<f64>()))
                .collect();
            // A loss with no path to a trainable parameter (e.g. the hard inlier count, which gives
            // θ no gradient, with a frozen backbone) has nothing to update: the step is a no-op.
            let tracked = out.loss.is_tracked();
            let grads = if tracked {
                GradientsParams::from_grads(out.loss.backward(), &model)
            } else {
                GradientsParams::new()
            };
            let mut norm_visitor = GradNorm {
                grads: &grads,
                sum: 0.0,
            };
            model.visit(&mut norm_visitor);
            let grad_norm = norm_visitor.sum.sqrt();
            let images = (exp.log.images_every > 0
                && (state.step + 1).is_multiple_of(exp.log.images_every as u64))
            .then(|| out.theta_aff.clone())
            .flatten();
            let lr = lr_at(local);
            if tracked {
                model = optim.step(lr, model, grads);
            }
            state.step += 1;
            local += 1;
            pairs_since += batch.indices.len();
            let step = state.step;

            if step.is_multiple_of(exp.log.every as u64) || step == end {
                let rate = pairs_since as f64 / timer.elapsed().as_secs_f64().max(1e-9);
                timer = Instant::now();
                pairs_since = 0;
                // Wall-clock values go to TensorBoard only: metrics.jsonl stays a pure function of
                // the configuration (the resume test compares it byte for byte).
                tb_train.scalar("pairs_per_s", step, rate)?;
                let mut record = |tag: &str, v: f64| -> Result<()> {
                    tb_train.scalar(tag, step, v)?;
                    metrics.record(step, stage.name(), tag, v)
                };
                record("loss", loss_value)?;
                record(&format!("loss/{}", stage.name()), loss_value)?;
                record("lr", lr)?;
                record("grad_norm", grad_norm)?;
                for (n, v) in &scores {
                    record(n, *v)?;
                }
                run.set_status(Status::Running, step, None)?;
                if let Some(bar) = &progress {
                    bar.set_message(format!("loss {loss_value:.4} · {rate:.1} pairs/s"));
                }
            }
            if let Some(theta) = images {
                let (h, w, src_rgb) = to_rgb(batch.source.clone(), norm);
                let (_, _, tgt_rgb) = to_rgb(batch.target.clone(), norm);
                let theta0 = AffineTheta::new(theta.into_tensor().slice([0..1, 0..6]).detach())?;
                let grid = sampling_grid(&theta0, [h, w], GridFactors::default())?;
                let warped = sample(
                    batch
                        .source
                        .clone()
                        .slice([0..1, 0..3, 0..h, 0..w])
                        .detach(),
                    grid,
                )?;
                let (_, _, warp_rgb) = to_rgb(warped, norm);
                let overlay: Vec<u8> = warp_rgb
                    .iter()
                    .zip(&tgt_rgb)
                    .map(|(a, b)| ((*a as u16 + *b as u16) / 2) as u8)
                    .collect();
                for (tag, img) in [
                    ("images/source", &src_rgb),
                    ("images/target", &tgt_rgb),
                    ("images/warped_source", &warp_rgb),
                    ("images/overlay", &overlay),
                ] {
                    tb_train.image(tag, step, h, w, img)?;
                }
            }
            if let Some(bar) = &progress {
                bar.set_position(step);
            }
            let interrupted = opts
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst));
            let stage_end = step == end;
            let mut pck = None;
            if step.is_multiple_of(exp.eval.every as u64) || stage_end {
                let result = evaluate(
                    &model.valid(),
                    &data.validation,
                    scored,
                    norm,
                    exp.eval.alpha,
                    &tps_eval,
                    8,
                )?;
                tb_valid.scalar("pck", step, result.model)?;
                metrics.record(step, stage.name(), "valid/pck", result.model)?;
                if state.best_pck.is_none_or(|b| result.model > b) {
                    state.best_pck = Some(result.model);
                    state.best_step = Some(step);
                }
                pck = Some(result.model);
            }
            if step.is_multiple_of(exp.checkpoint.every as u64) || stage_end || interrupted {
                metrics.sync()?;
                tb_train.flush()?;
                tb_valid.flush()?;
                state.pck = pck;
                state.metrics_lines = metrics.lines;
                let valid = model.valid();
                let dir = checkpoint::save(&run.checkpoints, &state, |tmp| {
                    crate::fsutil::write_atomic(
                        &tmp.join(checkpoint::CONFIG),
                        exp.to_toml().as_bytes(),
                    )?;
                    weights::save_record(&valid, &tmp.join(checkpoint::MODEL))?;
                    optim
                        .save(tmp.join(checkpoint::OPTIMIZER))
                        .map_err(|e| Error::Weights {
                            path: tmp.join(checkpoint::OPTIMIZER),
                            reason: format!("cannot write optimizer state: {e}"),
                        })
                })?;
                checkpoint::retain(
                    &run.checkpoints,
                    exp.checkpoint.keep_last,
                    exp.checkpoint.keep_best,
                    &dir,
                )?;
            }
            if abort_at == Some(step) {
                std::process::abort(); // test hook: a crash without any cleanup
            }
            if interrupted {
                if let Some(bar) = &progress {
                    bar.abandon_with_message("interrupted");
                }
                return Ok(RunOutcome {
                    dir: run.path.clone(),
                    status: Status::Interrupted,
                    step,
                    test: None,
                    skipped: false,
                });
            }
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }

    // Final test evaluation and summary.
    let result = evaluate(
        &model.valid(),
        &data.test,
        scored,
        norm,
        exp.eval.alpha,
        &tps_eval,
        8,
    )?;
    tb_valid.scalar("test/pck", state.step, result.model)?;
    let summary = serde_json::json!({
        "experiment": exp.name,
        "config_hash": exp.hash(),
        "cell_hash": exp.cell_hash(),
        "cell_label": opts.cell_label,
        "seed": exp.seed,
        "steps": state.step,
        "test_dataset": exp.data.test,
        "test_pairs": result.pairs,
        "alpha": exp.eval.alpha,
        "test_pck": result.model,
        "test_identity_pck": result.identity,
        "best_valid_pck": state.best_pck,
        "best_step": state.best_step,
    });
    run.write(
        "summary.json",
        &serde_json::to_string_pretty(&summary).unwrap(),
    )?;
    Ok(RunOutcome {
        dir: run.path.clone(),
        status: Status::Completed,
        step: state.step,
        test: Some((result.model, result.identity)),
        skipped: false,
    })
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
