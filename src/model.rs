//! The alignment models: single-stage CNNGeometric and the two-stage affine → TPS WeakAlign model.
//!
//! Both share one backbone between the source and target images (siamese).
//!
//! ## Reference
//! weakalign: `model/cnn_geometric_model.py` `CNNGeometric`, `TwoStageCNNGeometric`
//! (weakalign-reference §2–§4).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::backbone::{Backbone, BackboneKind};
use crate::correlation::{FeatureCorrelation, feature_l2_norm};
use crate::error::{Dim, Result, check_arg, check_shape};
use crate::geometry::{AffineTheta, GridFactors, Theta, TpsTheta, sample, sampling_grid};
use crate::regression::FeatureRegression;

/// Which transforms a model predicts, and so which of its outputs are trained and scored
/// (`"affine"`, `"tps"`, `"affine_tps"` in files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransformKind {
    /// θ_aff alone (the affine head, stage 1).
    Affine,
    /// The TPS head alone, on the unwarped pair.
    Tps,
    /// The two-stage model: affine ∘ TPS.
    AffineTps,
}

/// Architecture choices shared by both models.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelConfig {
    /// Feature extractor.
    pub backbone: BackboneKind,
    /// Network input side (reference: 240).
    pub image_size: usize,
    /// L2-normalize features before correlating (reference: on).
    pub normalize_features: bool,
    /// Normalize the correlation (ReLU + L2 over sources; reference: on).
    pub normalize_matches: bool,
    /// Start both heads at the identity θ (deviation from the reference; see
    /// [`FeatureRegression::identity_init`]).
    pub identity_init: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            backbone: BackboneKind::ResNet101,
            image_size: 240,
            normalize_features: true,
            normalize_matches: true,
            identity_init: false,
        }
    }
}

impl ModelConfig {
    /// Feature-grid side for this configuration.
    pub fn feature_size(&self) -> usize {
        self.backbone.feature_size(self.image_size)
    }

    /// A randomly initialized single-stage model for transform type `T`.
    pub fn init_single<T: Theta + Send + core::fmt::Debug + 'static>(
        &self,
        device: &Device,
    ) -> Result<CnnGeometric<T>> {
        let regression = FeatureRegression::new(self.feature_size(), device)?;
        Ok(CnnGeometric {
            backbone: self.backbone.init(device),
            regression: if self.identity_init {
                regression.identity_init()
            } else {
                regression
            },
            normalize_features: self.normalize_features,
            normalize_matches: self.normalize_matches,
            image_size: self.image_size,
        })
    }

    /// A two-stage model drawn on the CPU from `seed` (every parameter, see [`materialize`]) and
    /// then moved to `device` (a training device keeps its autodiff): the same weights on every
    /// device.
    pub fn init_two_stage_seeded(&self, seed: u64, device: &Device) -> Result<TwoStage> {
        let cpu = crate::device::training();
        cpu.seed(seed);
        let model = self.init_two_stage(&cpu)?;
        materialize(&model);
        Ok(model.fork(device))
    }

    /// A randomly initialized two-stage model.
    pub fn init_two_stage(&self, device: &Device) -> Result<TwoStage> {
        let g = self.feature_size();
        let (mut regression_aff, mut regression_tps) = (
            FeatureRegression::new(g, device)?,
            FeatureRegression::new(g, device)?,
        );
        if self.identity_init {
            regression_aff = regression_aff.identity_init();
            regression_tps = regression_tps.identity_init();
        }
        Ok(TwoStage {
            backbone: self.backbone.init(device),
            regression_aff,
            regression_tps,
            normalize_features: self.normalize_features,
            normalize_matches: self.normalize_matches,
            image_size: self.image_size,
        })
    }
}

/// Draws every lazily initialized parameter of `module` now, in module order, on the device it
/// is on. burn initializes a parameter on first use and on the device it is on then; the runner
/// calls this on the CPU before moving a model, so that every device starts from the CPU's
/// seeded weights (a CPU run draws the same values: checked on every backbone).
pub fn materialize<M: Module>(module: &M) {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Checks a source/target image pair.
fn check_pair(op: &'static str, source: &Tensor<4>, target: &Tensor<4>, size: usize) -> Result<()> {
    let expected = [Dim::Any("batch"), Dim::Is(3), Dim::Is(size), Dim::Is(size)];
    check_shape(op, "source", &source.dims(), &expected)?;
    let batch = source.dims()[0];
    let expected = [
        Dim::Same("batch", batch),
        Dim::Is(3),
        Dim::Is(size),
        Dim::Is(size),
    ];
    check_shape(op, "target", &target.dims(), &expected)
}

/// Correlation of two feature maps as the models compute it: L2-normalized features (when `l2`),
/// then [`FeatureCorrelation`] (normalized matches when `normalize`).
///
/// # Shapes
/// - `source`, `target`: `[batch, channels, h, w]`
/// - output: `[batch, h·w, h, w]`
pub fn correlate(
    source: Tensor<4>,
    target: Tensor<4>,
    l2: bool,
    normalize: bool,
) -> Result<Tensor<4>> {
    let (source, target) = if l2 {
        (feature_l2_norm(source), feature_l2_norm(target))
    } else {
        (source, target)
    };
    FeatureCorrelation { normalize }.forward(source, target)
}

/// Output of a single-stage model.
#[derive(Clone, Debug)]
pub struct SingleStageOutput<T> {
    /// Predicted θ, `[batch, T::PARAMS]`.
    pub theta: T,
    /// The correlation the head saw, `[batch, h·w, h, w]`.
    pub corr: Tensor<4>,
}

/// CNNGeometric: backbone, correlation, one regression head.
#[derive(Module, Debug)]
pub struct CnnGeometric<T: Theta + Send + core::fmt::Debug + 'static> {
    /// Shared feature extractor.
    pub backbone: Backbone,
    /// Regression head.
    pub regression: FeatureRegression<T>,
    /// L2-normalize features.
    pub normalize_features: bool,
    /// Normalize the correlation.
    pub normalize_matches: bool,
    /// Input side.
    pub image_size: usize,
}

impl<T: Theta + Send + core::fmt::Debug + 'static> CnnGeometric<T> {
    /// # Shapes
    /// - `source`, `target`: `[batch, 3, S, S]`, normalized for the backbone (S = image size)
    /// - output: θ `[batch, T::PARAMS]`, correlation `[batch, h·w, h, w]`
    pub fn forward(&self, source: Tensor<4>, target: Tensor<4>) -> Result<SingleStageOutput<T>> {
        check_pair("CnnGeometric::forward", &source, &target, self.image_size)?;
        let f_src = self.backbone.forward(source);
        let f_tgt = self.backbone.forward(target);
        let corr = correlate(
            f_src,
            f_tgt,
            self.normalize_features,
            self.normalize_matches,
        )?;
        let theta = self.regression.forward(corr.clone())?;
        Ok(SingleStageOutput { theta, corr })
    }
}

/// Output of the two-stage model.
#[derive(Clone, Debug)]
pub struct TwoStageOutput {
    /// Stage-1 affine θ, `[batch, 6]`.
    pub theta_aff: AffineTheta,
    /// Stage-2 TPS θ ("theta_aff_tps"), `[batch, 18]`, applied before θ_aff.
    pub theta_tps: TpsTheta,
    /// Stage-1 correlation (original source vs target), `[batch, h·w, h, w]`: the weak loss
    /// scores both terms on it.
    pub corr_aff: Tensor<4>,
    /// Stage-2 correlation (affinely warped source vs target), `[batch, h·w, h, w]`.
    pub corr_aff_tps: Tensor<4>,
}

/// The two-stage model: affine head, warp the source by θ_aff, re-extract, TPS head.
#[derive(Module, Debug)]
pub struct TwoStage {
    /// Shared feature extractor (both stages, both images).
    pub backbone: Backbone,
    /// Stage-1 head (`FeatureRegression`).
    pub regression_aff: FeatureRegression<AffineTheta>,
    /// Stage-2 head (`FeatureRegression2`).
    pub regression_tps: FeatureRegression<TpsTheta>,
    /// L2-normalize features.
    pub normalize_features: bool,
    /// Normalize the correlation.
    pub normalize_matches: bool,
    /// Input side.
    pub image_size: usize,
}

impl TwoStage {
    /// The device the parameters live on (where inputs must be).
    pub fn device(&self) -> Device {
        self.devices()
            .into_iter()
            .next()
            .expect("a two-stage model has parameters")
    }

    /// The correlation of the unwarped pair, as the model computes it.
    ///
    /// # Shapes
    /// - `source`, `target`: `[batch, 3, S, S]`
    /// - output: `[batch, h·w, h, w]`
    fn stage1_correlation(&self, source: Tensor<4>, target: Tensor<4>) -> Result<Tensor<4>> {
        let (l2, norm) = (self.normalize_features, self.normalize_matches);
        correlate(
            self.backbone.forward(source),
            self.backbone.forward(target),
            l2,
            norm,
        )
    }

    /// Stage 1 alone (the affine CNNGeometric inside the two-stage model): what the strong
    /// affine stage trains.
    ///
    /// # Shapes
    /// - `source`, `target`: `[batch, 3, S, S]`
    /// - output: θ_aff `[batch, 6]`, correlation `[batch, h·w, h, w]`
    pub fn forward_affine(
        &self,
        source: Tensor<4>,
        target: Tensor<4>,
    ) -> Result<SingleStageOutput<AffineTheta>> {
        check_pair(
            "TwoStage::forward_affine",
            &source,
            &target,
            self.image_size,
        )?;
        let corr = self.stage1_correlation(source, target)?;
        let theta = self.regression_aff.forward(corr.clone())?;
        Ok(SingleStageOutput { theta, corr })
    }

    /// The TPS head on the unwarped pair (a TPS CNNGeometric sharing the backbone): what the
    /// strong TPS stage trains, as the reference trains its TPS model separately and loads it as
    /// `FeatureRegression2`.
    ///
    /// # Shapes
    /// - `source`, `target`: `[batch, 3, S, S]`
    /// - output: θ_tps `[batch, 18]`, correlation `[batch, h·w, h, w]`
    pub fn forward_tps(
        &self,
        source: Tensor<4>,
        target: Tensor<4>,
    ) -> Result<SingleStageOutput<TpsTheta>> {
        check_pair("TwoStage::forward_tps", &source, &target, self.image_size)?;
        let corr = self.stage1_correlation(source, target)?;
        let theta = self.regression_tps.forward(corr.clone())?;
        Ok(SingleStageOutput { theta, corr })
    }

    /// The two-stage forward of the paper and the reference (one affine pass): what training
    /// and, by default, evaluation run.
    ///
    /// # Shapes
    /// - `source`, `target`: `[batch, 3, S, S]`, normalized for the backbone (S = image size)
    /// - output: see [`TwoStageOutput`]
    pub fn forward(&self, source: Tensor<4>, target: Tensor<4>) -> Result<TwoStageOutput> {
        self.forward_refined(source, target, 1)
    }

    /// The two-stage forward with `affine_passes` passes of the affine head: after the first,
    /// each pass re-extracts the source warped by the θ_aff so far, predicts the residual affine
    /// θ against the target and composes it in (`θ_aff ← θ_aff ∘ δ`); the TPS head then runs on
    /// the source warped by the final θ_aff. Every warp samples the original source, so
    /// refinement does not blur it. One pass is [`TwoStage::forward`] exactly.
    ///
    /// An extension for inference (`[eval] affine_passes`, `--affine-passes`), not in the paper
    /// or the reference: the heads are trained on one pass.
    ///
    /// # Shapes
    /// - `source`, `target`: `[batch, 3, S, S]`, normalized for the backbone (S = image size)
    /// - output: see [`TwoStageOutput`]; `corr_aff` is the first pass's (unwarped source)
    pub fn forward_refined(
        &self,
        source: Tensor<4>,
        target: Tensor<4>,
        affine_passes: usize,
    ) -> Result<TwoStageOutput> {
        check_pair("TwoStage::forward", &source, &target, self.image_size)?;
        check_arg(
            affine_passes >= 1,
            "TwoStage::forward_refined",
            "affine_passes",
            || format!("{affine_passes}: at least one pass of the affine head is needed"),
        )?;
        let (l2, norm) = (self.normalize_features, self.normalize_matches);
        let f_tgt = self.backbone.forward(target);
        let f_src = self.backbone.forward(source.clone());
        let corr_aff = correlate(f_src, f_tgt.clone(), l2, norm)?;
        let mut theta_aff = self.regression_aff.forward(corr_aff.clone())?;
        // The normalized source is warped (zero padding = mean colour) and re-fed; gradients reach
        // θ_aff through this warp.
        let size = [self.image_size, self.image_size];
        let warp = |theta: &AffineTheta| -> Result<Tensor<4>> {
            sample(
                source.clone(),
                sampling_grid(theta, size, GridFactors::default())?,
            )
        };
        let mut warped = warp(&theta_aff)?; // [B, 3, S, S]
        for _ in 1..affine_passes {
            let corr = correlate(self.backbone.forward(warped), f_tgt.clone(), l2, norm)?;
            let residual = self.regression_aff.forward(corr)?;
            theta_aff = theta_aff.compose(&residual)?;
            warped = warp(&theta_aff)?;
        }
        let corr_aff_tps = correlate(self.backbone.forward(warped), f_tgt, l2, norm)?;
        let theta_tps = self.regression_tps.forward(corr_aff_tps.clone())?;
        Ok(TwoStageOutput {
            theta_aff,
            theta_tps,
            corr_aff,
            corr_aff_tps,
        })
    }
}
