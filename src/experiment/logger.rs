//! What a run reports as it goes: TensorBoard (`train/`, `valid/`, `info/` event files: scalars,
//! warp images, the configuration as text, HParams), `metrics.jsonl` (a pure function of the
//! configuration, compared byte for byte by the resume test), and the progress bar.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::resolve::Resolved;
use super::run_dir::{Metrics, RunDir, Status};
use super::stage::{Stage, StagePlan};
use super::step::StepRecord;
use super::tensorboard::{EventWriter, HParam, SessionStatus, forget_after};
use crate::backbone::Normalization;
use crate::choice::name;
use crate::data::image::RgbImage;
use crate::data::loader::PairBatch;
use crate::error::Result;
use crate::geometry::{AffineTheta, GridFactors, Theta, sample, sampling_grid};

/// Where a step's wall time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTiming {
    /// Seconds waiting for the batch (the loader was behind).
    pub data_s: f64,
    /// Seconds of forward, backward and update.
    pub compute_s: f64,
    /// Pairs in the batch.
    pub pairs: usize,
}

/// The run's loggers.
pub struct Logger {
    train: EventWriter,
    valid: EventWriter,
    info: EventWriter,
    metrics: Metrics,
    progress: Option<ProgressBar>,
    every: u64,
    images_every: u64,
    norm: Normalization,
    timer: Instant,
    since: StepTiming,
    steps_since: usize,
}

/// The HParams of a run (the columns of TensorBoard's HParams table).
fn hparams(r: &Resolved) -> Vec<(String, HParam)> {
    let exp = &r.experiment;
    vec![
        ("experiment".into(), HParam::Text(exp.name.clone())),
        ("backbone".into(), HParam::Text(name(&exp.model.backbone))),
        ("transform".into(), HParam::Text(name(&exp.model.transform))),
        ("inlier".into(), HParam::Text(name(&exp.loss.inlier))),
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

impl Logger {
    /// Opens the event files of `run` and its `metrics.jsonl` (kept to its first
    /// `metrics_lines` lines: a resume drops what a crashed process wrote after its checkpoint),
    /// and records the configuration, `git` (commit, diff) and HParams at step `start`. The
    /// progress bar counts to `total` steps.
    pub fn open(
        run: &RunDir,
        r: &Resolved,
        start: u64,
        metrics_lines: u64,
        total: u64,
        git: &(String, String),
    ) -> Result<Self> {
        let exp = &r.experiment;
        // What an earlier process logged after `start` is logged again from here.
        let mut forgotten = 0;
        for split in ["train", "valid"] {
            forgotten += forget_after(&run.path.join(split), start, false)?;
        }
        forget_after(&run.path.join("info"), start, true)?; // configuration, HParams: restated
        if forgotten > 0 {
            eprintln!(
                "{}: removed {forgotten} TensorBoard event(s) logged after step {start} by an \
                 earlier process (they are logged again)",
                run.path.display()
            );
        }
        let mut train = EventWriter::create(&run.path.join("train"))?;
        let mut valid = EventWriter::create(&run.path.join("valid"))?;
        let mut info = EventWriter::create(&run.path.join("info"))?;
        train.session_start(start)?;
        valid.session_start(start)?;
        info.text("config", start, &format!("```toml\n{}\n```", exp.to_toml()))?;
        let (commit, dirty) = git;
        info.text(
            "git",
            start,
            &format!("commit {commit}, {} dirty lines", dirty.lines().count()),
        )?;
        info.text("description", start, &exp.description)?;
        info.text("device", start, &exp.device.describe())?;
        let hp = hparams(r);
        info.hparams_experiment(&hp, &["valid/pck", "test/pck", "train/loss"])?;
        info.hparams_session_start(&hp, &r.cell_hash)?;
        let metrics = Metrics::open(run.path.join("metrics.jsonl"), metrics_lines)?;
        let progress = (exp.log.progress && total > start).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_position(start);
            bar
        });
        Ok(Self {
            train,
            valid,
            info,
            metrics,
            progress,
            every: exp.log.every as u64,
            images_every: exp.log.images_every as u64,
            norm: r.normalization(),
            timer: Instant::now(),
            since: StepTiming::default(),
            steps_since: 0,
        })
    }

    /// A stage begins.
    pub fn stage(&self, stage: Stage) {
        if let Some(bar) = &self.progress {
            bar.set_prefix(stage.name());
        }
    }

    /// Whether step `step` of `plan` is logged (every `log.every` steps and at the stage's end).
    pub fn due(&self, step: u64, plan: &StagePlan) -> bool {
        step.is_multiple_of(self.every) || step == plan.end
    }

    /// Records step `step` of `plan` when it is due; returns whether it was (the runner then
    /// refreshes the heartbeat).
    pub fn step(
        &mut self,
        step: u64,
        plan: &StagePlan,
        record: &StepRecord,
        timing: StepTiming,
    ) -> Result<bool> {
        self.since.data_s += timing.data_s;
        self.since.compute_s += timing.compute_s;
        self.since.pairs += timing.pairs;
        self.steps_since += 1;
        if let Some(bar) = &self.progress {
            bar.set_position(step);
        }
        if !self.due(step, plan) {
            return Ok(false);
        }
        let rate = self.since.pairs as f64 / self.timer.elapsed().as_secs_f64().max(1e-9);
        let steps = self.steps_since.max(1) as f64;
        // Wall-clock values go to TensorBoard only: metrics.jsonl stays a pure function of the
        // configuration.
        self.train.scalar("pairs_per_s", step, rate)?;
        self.train
            .scalar("time/data_wait_s", step, self.since.data_s / steps)?;
        self.train
            .scalar("time/compute_s", step, self.since.compute_s / steps)?;
        let waiting = self.since.data_s / (self.since.data_s + self.since.compute_s).max(1e-9);
        self.timer = Instant::now();
        self.since = StepTiming::default();
        self.steps_since = 0;
        let stage = plan.stage.name();
        let mut values = vec![
            ("loss".to_string(), record.loss),
            (format!("loss/{stage}"), record.loss),
            ("lr".to_string(), record.lr),
        ];
        values.extend(record.grad_norm.map(|g| ("grad_norm".to_string(), g)));
        values.extend(record.scores.iter().map(|(n, v)| (n.to_string(), *v)));
        for (tag, v) in values {
            self.train.scalar(&tag, step, v)?;
            self.metrics.record(step, stage, &tag, v)?;
        }
        if let Some(bar) = &self.progress {
            bar.set_message(format!(
                "loss {:.4} · {rate:.1} pairs/s · {:.0} % waiting for data",
                record.loss,
                100.0 * waiting
            ));
        }
        Ok(true)
    }

    /// Warp images of the batch's first pair under `theta` when they are due: source, target,
    /// warped source, and the overlay of warped source and target.
    pub fn images(
        &mut self,
        step: u64,
        batch: &PairBatch,
        theta: Option<&AffineTheta>,
    ) -> Result<()> {
        let due = self.images_every > 0 && step.is_multiple_of(self.images_every);
        let Some(theta) = theta.filter(|_| due) else {
            return Ok(());
        };
        let [_, _, h, w] = batch.source.dims();
        let first =
            |t: &burn::tensor::Tensor<4>| t.clone().slice([0..1, 0..3, 0..h, 0..w]).detach();
        let theta0 = AffineTheta::new(theta.tensor().clone().slice([0..1, 0..6]).detach())?;
        let grid = sampling_grid(&theta0, [h, w], GridFactors::default())?;
        let warped = sample(first(&batch.source), grid)?;
        let norm = Some(self.norm);
        let source = RgbImage::from_tensor(first(&batch.source), norm);
        let target = RgbImage::from_tensor(first(&batch.target), norm);
        let warped = RgbImage::from_tensor(warped, norm);
        let overlay: Vec<u8> = warped
            .pixels
            .iter()
            .zip(&target.pixels)
            .map(|(a, b)| ((*a as u16 + *b as u16) / 2) as u8)
            .collect();
        for (tag, img) in [
            ("images/source", &source.pixels),
            ("images/target", &target.pixels),
            ("images/warped_source", &warped.pixels),
            ("images/overlay", &overlay),
        ] {
            self.train.image(tag, step, h, w, img)?;
        }
        Ok(())
    }

    /// Records a validation PCK.
    pub fn validation(&mut self, step: u64, stage: Stage, pck: f64) -> Result<()> {
        self.valid.scalar("pck", step, pck)?;
        self.metrics.record(step, stage.name(), "valid/pck", pck)
    }

    /// Records the final test PCK.
    pub fn test(&mut self, step: u64, pck: f64) -> Result<()> {
        self.valid.scalar("test/pck", step, pck)
    }

    /// Forces everything so far to disk (before a checkpoint names the metric count) and returns
    /// the number of `metrics.jsonl` lines.
    pub fn sync(&mut self) -> Result<u64> {
        self.metrics.sync()?;
        self.train.flush()?;
        self.valid.flush()?;
        Ok(self.metrics.lines)
    }

    /// Closes the session with the run's final status.
    pub fn finish(&mut self, status: Status) -> Result<()> {
        if let Some(bar) = self.progress.take() {
            match status {
                Status::Interrupted => bar.abandon_with_message("interrupted"),
                _ => bar.finish_and_clear(),
            }
        }
        self.info.hparams_session_end(match status {
            Status::Completed => SessionStatus::Success,
            Status::Failed => SessionStatus::Failure,
            _ => SessionStatus::Running,
        })?;
        for w in [&mut self.train, &mut self.valid, &mut self.info] {
            w.flush()?;
        }
        Ok(())
    }
}
