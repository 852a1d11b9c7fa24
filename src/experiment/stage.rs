//! The stages of a run and what each trains: `strong_affine` and `strong_tps` (CNNGeometric
//! pre-training of one head on synthetic warps, grid loss, backbone frozen as the reference's
//! unless `strong.backbone_trainable` says otherwise) and `weak` (the
//! WeakAlign objective on image pairs), in that order on one global step counter.

use burn::module::{Module, ParamGroup};
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};

use super::resolve::Resolved;
use super::schedule::Schedule;
use crate::backbone::{BatchNormMode, Trainable};
use crate::model::{TransformKind, TwoStage};

/// A training stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The affine head on synthetic affine pairs (grid loss).
    StrongAffine,
    /// The TPS head on synthetic TPS pairs (grid loss).
    StrongTps,
    /// Weak fine-tuning with the inlier loss.
    Weak,
}

impl Stage {
    /// Its name in logs, metrics and TensorBoard tags.
    pub fn name(self) -> &'static str {
        match self {
            Stage::StrongAffine => "strong_affine",
            Stage::StrongTps => "strong_tps",
            Stage::Weak => "weak",
        }
    }
}

/// A stage placed on the global step counter, with its optimisation settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StagePlan {
    /// The stage.
    pub stage: Stage,
    /// First global step (steps completed before the stage).
    pub begin: u64,
    /// Global steps completed when the stage ends.
    pub end: u64,
    /// Base learning rate.
    pub lr: f64,
    /// Backbone parameters that train (`strong.backbone_trainable` or `weak.backbone_trainable`).
    pub backbone_trainable: Trainable,
    /// BatchNorm's mode: frozen in the strong stages (the reference), `weak.batch_norm` in the
    /// weak stage.
    pub batch_norm: BatchNormMode,
    /// Base learning rate of the backbone's trainable blocks, where it differs from `lr`.
    pub backbone_lr: Option<f64>,
    /// Its schedule over the stage (both rates).
    pub schedule: Schedule,
    /// Pairs per batch.
    pub batch_size: usize,
}

impl StagePlan {
    /// The learning rate of the step taken when `step` steps are complete.
    pub fn lr_at(&self, step: u64) -> f64 {
        self.scheduled(self.lr, step)
    }

    /// The learning rates of that step: `lr_at` for every parameter, except those of `backbone`
    /// (the backbone's parameter group, built once per stage) where the stage gives the backbone
    /// a rate of its own, on the same schedule.
    pub fn rates_at(&self, step: u64, backbone: &ParamGroup) -> ModuleLearningRate {
        let lr = self.lr_at(step);
        match self.backbone_lr {
            None => lr.into(),
            Some(base) => ModuleLrScheduler::new(ConstantLr::from(lr))
                .with_group(
                    backbone.clone(),
                    ConstantLr::from(self.scheduled(base, step)),
                )
                .step(),
        }
    }

    /// `base` on the stage's schedule, at the step taken when `step` steps are complete.
    fn scheduled(&self, base: f64, step: u64) -> f64 {
        self.schedule
            .lr_at(base, step - self.begin, self.end - self.begin)
    }
}

/// Global steps completed when the last stage of `stages` ends (0 for none): a finished run's step.
pub fn total_steps(stages: &[StagePlan]) -> u64 {
    stages.last().map_or(0, |s| s.end)
}

/// Global steps completed when the strong stages end (0 when there are none): where the weak
/// stage begins, and the checkpoint a sibling run may start from ([`super::fork`]).
pub fn strong_end(stages: &[StagePlan]) -> u64 {
    stages
        .iter()
        .filter(|s| s.stage != Stage::Weak)
        .map(|s| s.end)
        .max()
        .unwrap_or(0)
}

/// The stages of an experiment in order (a stage of 0 steps is left out; a strong stage only
/// for a head the transform uses).
pub fn plan(r: &Resolved) -> Vec<StagePlan> {
    let exp = &r.experiment;
    let mut stages = Vec::new();
    let mut at = 0u64;
    let mut push = |stage: Stage, steps: usize| {
        if steps == 0 {
            return;
        }
        let (begin, end) = (at, at + steps as u64);
        at = end;
        stages.push(match stage {
            Stage::Weak => StagePlan {
                stage,
                begin,
                end,
                lr: exp.weak.lr,
                backbone_trainable: exp.weak.backbone_trainable,
                batch_norm: exp.weak.batch_norm,
                backbone_lr: exp.weak.backbone_lr,
                schedule: exp.weak.schedule,
                batch_size: exp.weak.batch_size,
            },
            _ => StagePlan {
                stage,
                begin,
                end,
                lr: exp.strong.lr,
                backbone_trainable: exp.strong.backbone_trainable,
                batch_norm: BatchNormMode::Frozen,
                backbone_lr: exp.strong.backbone_lr,
                schedule: exp.strong.schedule,
                batch_size: exp.strong.batch_size,
            },
        });
    };
    if r.transform() != TransformKind::Tps {
        push(Stage::StrongAffine, exp.strong.steps);
    }
    if r.transform() != TransformKind::Affine {
        push(Stage::StrongTps, exp.strong.steps);
    }
    push(Stage::Weak, exp.weak.steps);
    stages
}

/// Sets which parameters train and how BatchNorm behaves in the stage of `plan`.
pub fn configure(model: TwoStage, plan: &StagePlan) -> TwoStage {
    let mut m = model;
    m.backbone = m
        .backbone
        .configure(plan.batch_norm, plan.backbone_trainable);
    match plan.stage {
        stage @ (Stage::StrongAffine | Stage::StrongTps) => {
            // The reference: feature extractor frozen and in eval mode (`strong.backbone_trainable`
            // may train some of it, BN statistics still frozen); the trained head's BN in train
            // mode.
            let train_aff = stage == Stage::StrongAffine;
            m.regression_aff = m.regression_aff.set_require_grad(train_aff);
            m.regression_tps = m.regression_tps.set_require_grad(!train_aff);
        }
        Stage::Weak => {
            // Frozen BatchNorm: running statistics in the heads too (the reference's model.eval()),
            // while γ/β keep training.
            if plan.batch_norm == BatchNormMode::Frozen {
                m.regression_aff = m.regression_aff.freeze();
                m.regression_tps = m.regression_tps.freeze();
            }
            m.regression_aff = m.regression_aff.set_require_grad(true);
            m.regression_tps = m.regression_tps.set_require_grad(true);
        }
    }
    m
}
