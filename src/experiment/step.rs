//! One optimisation step: the stage's loss on a batch (grid loss for the strong stages, the
//! WeakAlign objective for the weak one), backward, Adam.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use super::resolve::Resolved;
use super::stage::Stage;
use crate::data::loader::PairBatch;
use crate::error::{Error, Result};
use crate::geometry::{AffineTheta, Composed, Theta, Tps};
use crate::loss::{
    affine_inlier_score, composed_inlier_score, transformed_grid_loss, weakalign_loss,
};
use crate::model::{TransformKind, TwoStage};

/// The loss of one batch and what is logged with it.
pub struct StageLoss {
    /// The loss to minimize, `[1]`.
    pub loss: Tensor<1>,
    /// Named inlier scores (batch means, `[1]` each) of the weak stage.
    pub scores: Vec<(&'static str, Tensor<1>)>,
    /// The predicted affine θ `[batch, 6]`, where the stage predicts one (for warp images).
    pub theta_aff: Option<AffineTheta>,
}

/// The loss of `stage` on `batch`. `tps_loss` is the spline of the weak loss's mask warp.
///
/// # Shapes
/// - `batch.source`, `batch.target`: `[batch, 3, S, S]` on the model's device
/// - output: loss `[1]`, scores `[1]` each, θ_aff `[batch, 6]`
pub fn stage_loss(
    model: &TwoStage,
    stage: Stage,
    batch: &PairBatch,
    r: &Resolved,
    tps_loss: &Tps,
) -> Result<StageLoss> {
    let (source, target) = (batch.source.clone(), batch.target.clone());
    let (device, dtype) = (source.device(), source.dtype());
    Ok(match (stage, r.transform()) {
        (Stage::StrongAffine, _) => {
            let out = model.forward_affine(source, target)?;
            let truth = batch.truth.affine(&device, dtype)?;
            StageLoss {
                loss: transformed_grid_loss(&out.theta, &truth)?,
                scores: Vec::new(),
                theta_aff: Some(out.theta),
            }
        }
        (Stage::StrongTps, _) => {
            let out = model.forward_tps(source, target)?;
            let truth = batch.truth.tps(&device, dtype)?;
            let spline = Tps::new(0.0)?; // TransformedGridLoss uses PointTnf(λ = 0)
            StageLoss {
                loss: transformed_grid_loss(&spline.warp(&out.theta), &spline.warp(&truth))?,
                scores: Vec::new(),
                theta_aff: None,
            }
        }
        (Stage::Weak, TransformKind::AffineTps) => {
            let out = model.forward(source, target)?;
            let w = weakalign_loss(
                &out.theta_aff,
                &out.theta_tps,
                tps_loss,
                out.corr_aff,
                &r.inlier,
            )?;
            StageLoss {
                loss: w.loss,
                scores: vec![
                    ("inlier_aff", w.inlier_aff.mean()),
                    ("inlier_aff_tps", w.inlier_aff_tps.mean()),
                ],
                theta_aff: Some(out.theta_aff),
            }
        }
        (Stage::Weak, TransformKind::Affine) => {
            let out = model.forward_affine(source, target)?;
            let s = affine_inlier_score(&out.theta, out.corr, &r.inlier)?;
            StageLoss {
                loss: s.clone().neg().mean(),
                scores: vec![("inlier_aff", s.mean())],
                theta_aff: Some(out.theta),
            }
        }
        (Stage::Weak, TransformKind::Tps) => {
            let out = model.forward_tps(source, target)?;
            let identity = AffineTheta::identity(out.theta.batch(), &device, dtype);
            let composed = Composed {
                affine: &identity,
                tps: tps_loss.warp(&out.theta),
            };
            let s = composed_inlier_score(&composed, out.corr, &r.inlier)?;
            StageLoss {
                loss: s.clone().neg().mean(),
                scores: vec![("inlier_tps", s.mean())],
                theta_aff: None,
            }
        }
    })
}

/// What a step did, as numbers.
pub struct StepRecord {
    /// The loss before the update.
    pub loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// L2 norm of all parameter gradients (measured only when asked: it reads every gradient
    /// back to the host).
    pub grad_norm: Option<f64>,
    /// Named inlier scores (weak stage; read back only when asked).
    pub scores: Vec<(&'static str, f64)>,
    /// The predicted affine θ (for warp images).
    pub theta_aff: Option<AffineTheta>,
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

/// One optimisation step of `stage` at learning rates `rates` (the stage's rate, logged as the
/// step's, and the backbone's where it has its own: [`super::stage::StagePlan::rates_at`]);
/// `step` (1-based) names it in a divergence error. A non-finite loss is [`Error::Diverged`] and
/// leaves the model untouched. With `measure`, the step also reads back the gradient norm and the
/// inlier scores (for a logged step; each is a host read-back).
///
/// # Shapes
/// - `batch.source`, `batch.target`: `[batch, 3, S, S]` on the model's device
#[allow(clippy::too_many_arguments)]
pub fn optimize(
    model: TwoStage,
    optim: &mut ModuleOptimizer,
    stage: Stage,
    batch: &PairBatch,
    r: &Resolved,
    tps_loss: &Tps,
    rates: ModuleLearningRate,
    step: u64,
    measure: bool,
) -> Result<(TwoStage, StepRecord)> {
    let out = stage_loss(&model, stage, batch, r, tps_loss)?;
    let loss = out.loss.clone().into_scalar::<f64>();
    if !loss.is_finite() {
        return Err(Error::Diverged {
            step,
            stage: stage.name(),
            loss,
        });
    }
    let scores = match measure {
        true => out
            .scores
            .iter()
            .map(|(n, t)| (*n, t.clone().into_scalar::<f64>()))
            .collect(),
        false => Vec::new(),
    };
    // A loss with no path to a trainable parameter (e.g. the hard inlier count, which gives θ
    // no gradient, with a frozen backbone) has nothing to update: the step is a no-op.
    let tracked = out.loss.is_tracked();
    let grads = if tracked {
        GradientsParams::from_grads(out.loss.backward(), &model)
    } else {
        GradientsParams::new()
    };
    let grad_norm = measure.then(|| {
        let mut norm = GradNorm {
            grads: &grads,
            sum: 0.0,
        };
        model.visit(&mut norm);
        norm.sum.sqrt()
    });
    let lr = rates.base();
    let model = if tracked {
        optim.step(rates, model, grads)
    } else {
        model
    };
    Ok((
        model,
        StepRecord {
            loss,
            lr,
            grad_norm,
            scores,
            theta_aff: out.theta_aff,
        },
    ))
}
