//! The weakly-supervised inlier counts: how much correlation mass agrees with a transform.
//!
//! For every target cell `p` the transform predicts a source location `T(p)`; a match `(c, p)`
//! (source cell `c`, target cell `p`, score `corr[c, p]`) is an inlier when `c` lies near `T(p)`.
//! The reference builds the identity mask `[h·w, h, w]` (`mask[c, y, x] = 1` iff `c = x·h + y`),
//! warps it by θ as a 225-channel image with `offset_factor = 227/210`, and sums
//! `mask · corr`. Warping a one-hot channel bilinearly gives the bilinear weight of cell `c` at
//! `T(p)`, so the **soft count** equals
//! `Σ_p bilinear_sample(corr[:, p] viewed as an h×w source image, at T(p))`:
//! a gather of four corners per target cell, with no `225 × 225` mask (the test suite checks
//! this against the dense definition).
//!
//! # Variants and their gradients
//! - [`InlierKind::Soft`] (the paper's): gradients flow into the correlation (hence the features)
//!   and into θ through the bilinear weights (piecewise linear in `T(p)`, zero outside the image).
//! - [`InlierKind::Hard`] (ablation): the bilinear weights are replaced by a 0/1 indicator
//!   `‖T(p) − c‖ ≤ τ` (in feature cells); matches keep their scores. The indicator is piecewise
//!   constant in θ, so gradients flow **only into the correlation**: θ receives none from this
//!   term (only through the stage-2 image warp of a two-stage model).
//! - [`Dilation`]: the identity mask is dilated per channel before warping (the reference's
//!   `dilation_filter`; its training script disables it). Equivalently each cell `q` near `T(p)`
//!   collects the scores of all `c` in its neighbourhood. Gradients as for the undilated kind.
//! - `normalize` (default on): divide by `Σ mask + 1e-5` per mask element, i.e.
//!   `Σ mask + 1e-5·(h·w)²` (0.50625 for 15×15). `Σ mask` depends on θ near the borders, so θ
//!   also receives gradients through the normalizer (soft kind).
//!
//! ## Reference
//! weakalign: `model/loss.py` `WeakInlierCount`, `TwoStageWeakInlierCount`; `train_weak.py`
//! `loss_fun` (weakalign-reference §8, §15).

use burn::tensor::ops::PadMode;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Dim, Result, check_arg, check_shape};
use crate::geometry::{
    AffineTheta, ComposeBorder, Composed, GridFactors, Tps, TpsTheta, WEAK_LOSS_OFFSET_FACTOR,
    sampling_grid,
};

/// ε added to every mask element before summing for the normalizer (`WeakInlierCount`).
pub const MASK_EPSILON: f64 = 1e-5;

/// Locations are clamped to `±LOCATION_CLAMP` before indexing; beyond `1 + 2/(n − 1) ≤ 3` every
/// bilinear corner is outside the grid already, so the clamp changes no value and no gradient
/// (it only keeps the reference's 1e10 markers from overflowing the index arithmetic).
const LOCATION_CLAMP: f64 = 4.0;

/// Soft (bilinear) or hard (thresholded) mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InlierKind {
    /// Bilinear weights of the source cells around `T(p)` (the reference).
    Soft,
    /// 0/1 mask: source cell `c` counts for target cell `p` when `‖T(p) − c‖ ≤ radius`,
    /// measured in feature cells.
    Hard {
        /// Tolerance τ in feature cells.
        radius: f64,
    },
}

/// Per-channel dilation of the identity mask before warping (`"none"`, `"cross"`, `"square"` in
/// files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dilation {
    /// No dilation (the reference training script: `--dilation-filter 0`).
    #[default]
    None,
    /// 4-neighbour cross (`generate_binary_structure(2, 1)`).
    Cross,
    /// Full 3×3 square (`generate_binary_structure(2, 2)`).
    Square,
}

impl Dilation {
    /// Cell offsets `(dx, dy)` of the structuring element.
    fn offsets(self) -> &'static [(i32, i32)] {
        match self {
            Dilation::None => &[(0, 0)],
            Dilation::Cross => &[(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)],
            Dilation::Square => &[
                (-1, -1),
                (0, -1),
                (1, -1),
                (-1, 0),
                (0, 0),
                (1, 0),
                (-1, 1),
                (0, 1),
                (1, 1),
            ],
        }
    }
}

/// Knobs of the inlier count. The defaults are the reference training configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InlierConfig {
    /// Soft (reference) or hard mask.
    pub kind: InlierKind,
    /// Mask dilation (reference: none).
    pub dilation: Dilation,
    /// Normalize by the mask sum (reference: on).
    pub normalize: bool,
    /// Offset factor of the mask warp (reference: 227/210).
    pub offset_factor: f64,
    /// Border handling of the composed affine∘TPS mask (reference: [`ComposeBorder::Reference`]).
    pub compose_border: ComposeBorder,
}

impl Default for InlierConfig {
    fn default() -> Self {
        Self {
            kind: InlierKind::Soft,
            dilation: Dilation::None,
            normalize: true,
            offset_factor: WEAK_LOSS_OFFSET_FACTOR,
            compose_border: ComposeBorder::Reference,
        }
    }
}

/// The inlier score of `matches` given, for every target cell, the predicted source location.
///
/// # Shapes
/// - `matches`: `[batch, h·w, h, w]` (correlation layout, channel `k = x·h + y`)
/// - `locations`: `[batch, h, w, 2]`, normalized source locations `T(p)` of the target cells
/// - output: `[batch]`
pub fn inlier_score(
    matches: Tensor<4>,
    locations: Tensor<4>,
    config: &InlierConfig,
) -> Result<Tensor<1>> {
    let [batch, k, h, w] = matches.dims();
    check_arg(k == h * w, "inlier_score", "matches", || {
        format!(
            "shape {:?}: channels must be h·w = {}",
            matches.dims(),
            h * w
        )
    })?;
    check_shape(
        "inlier_score",
        "locations",
        &locations.dims(),
        &[
            Dim::Same("batch", batch),
            Dim::Same("h", h),
            Dim::Same("w", w),
            Dim::Is(2),
        ],
    )?;
    if let InlierKind::Hard { radius } = config.kind {
        check_arg(
            radius.is_finite() && radius >= 0.0,
            "inlier_score",
            "radius",
            || format!("hard-inlier radius must be finite and >= 0, got {radius}"),
        )?;
    }
    let locations = locations.clamp(-LOCATION_CLAMP, LOCATION_CLAMP);
    let score = masked_sum(
        dilate(matches.clone(), config.dilation),
        locations.clone(),
        config,
    );
    if !config.normalize {
        return Ok(score);
    }
    let mask_sum = masked_sum(
        dilate(matches.ones_like(), config.dilation),
        locations,
        config,
    );
    let epsilon = MASK_EPSILON * (k * h * w) as f64;
    Ok(score / mask_sum.add_scalar(epsilon))
}

/// Inlier score of an affine θ.
///
/// # Shapes
/// - `matches`: `[batch, h·w, h, w]`
/// - output: `[batch]`
pub fn affine_inlier_score(
    theta: &AffineTheta,
    matches: Tensor<4>,
    config: &InlierConfig,
) -> Result<Tensor<1>> {
    let [_, _, h, w] = matches.dims();
    let locations = sampling_grid(theta, [h, w], GridFactors::offset(config.offset_factor))?;
    inlier_score(matches, locations, config)
}

/// Inlier score of a composed affine∘TPS transform (`TwoStageWeakInlierCount`).
///
/// # Shapes
/// - `matches`: `[batch, h·w, h, w]`
/// - output: `[batch]`
pub fn composed_inlier_score(
    composed: &Composed<'_>,
    matches: Tensor<4>,
    config: &InlierConfig,
) -> Result<Tensor<1>> {
    let [_, _, h, w] = matches.dims();
    let factors = GridFactors::offset(config.offset_factor);
    let locations = composed.grid([h, w], factors, config.compose_border)?;
    inlier_score(matches, locations, config)
}

/// The WeakAlign objective and the two inlier scores it is made of.
#[derive(Clone, Debug)]
pub struct WeakAlignLoss {
    /// `mean_b −(s_aff + s_aff∘tps)`, `[1]`.
    pub loss: Tensor<1>,
    /// `s_aff` per pair, `[batch]`.
    pub inlier_aff: Tensor<1>,
    /// `s_aff∘tps` per pair, `[batch]`.
    pub inlier_aff_tps: Tensor<1>,
}

/// The WeakAlign objective `mean_b −(s_aff + s_aff∘tps)`, both terms scored on the stage-1
/// correlation `corr_aff` (as the reference's `train_weak.py`; its `corr_aff_tps` is unused).
///
/// `tps` is the spline used for the mask warp (reference: λ = 0.2).
///
/// # Shapes
/// - `theta_aff`: `[batch, 6]`, `theta_tps`: `[batch, 18]`
/// - `corr_aff`: `[batch, h·w, h, w]`
/// - output: `loss` `[1]`, the scores `[batch]`
pub fn weakalign_loss(
    theta_aff: &AffineTheta,
    theta_tps: &TpsTheta,
    tps: &Tps,
    corr_aff: Tensor<4>,
    config: &InlierConfig,
) -> Result<WeakAlignLoss> {
    let inlier_aff = affine_inlier_score(theta_aff, corr_aff.clone(), config)?;
    let composed = Composed {
        affine: theta_aff,
        tps: tps.warp(theta_tps),
    };
    let inlier_aff_tps = composed_inlier_score(&composed, corr_aff, config)?;
    Ok(WeakAlignLoss {
        loss: (inlier_aff.clone() + inlier_aff_tps.clone()).neg().mean(),
        inlier_aff,
        inlier_aff_tps,
    })
}

/// Applies the dilation to the source axis of `matches`: cell `q` receives
/// `Σ_{c ∈ N(q)} matches[c]` (zero outside the grid).
///
/// # Shapes
/// - `matches`: `[batch, h·w, h, w]`
/// - output: `[batch, h·w, h, w]`
fn dilate(matches: Tensor<4>, dilation: Dilation) -> Tensor<4> {
    if dilation == Dilation::None {
        return matches;
    }
    let [batch, k, h, w] = matches.dims();
    let p = h * w;
    let source = matches
        .reshape([batch, w, h, p]) // [B, x_a, y_a, p] since k = x_a·h + y_a
        .permute([0, 3, 1, 2]) // [B, p, x_a, y_a]
        .pad([(1, 1), (1, 1)], PadMode::Constant(0.0)); // [B, p, w + 2, h + 2]
    let mut sum: Option<Tensor<4>> = None;
    for &(dx, dy) in dilation.offsets() {
        let x0 = (1 + dx) as usize;
        let y0 = (1 + dy) as usize;
        let shifted = source
            .clone()
            .slice([0..batch, 0..p, x0..x0 + w, y0..y0 + h]);
        sum = Some(match sum {
            None => shifted,
            Some(s) => s + shifted,
        });
    }
    sum.expect("a structuring element has at least one offset")
        .permute([0, 2, 3, 1]) // [B, x_a, y_a, p]
        .reshape([batch, k, h, w])
}

/// `Σ_{p, c} mask[c, p] · values[c, p]` for the soft or hard mask at `locations`.
///
/// # Shapes
/// - `values`: `[batch, h·w, h, w]`
/// - `locations`: `[batch, h, w, 2]`
/// - output: `[batch]`
fn masked_sum(values: Tensor<4>, locations: Tensor<4>, config: &InlierConfig) -> Tensor<1> {
    let [batch, _, h, w] = values.dims();
    // Source-cell coordinates of T(p) (0-based, align_corners = true).
    let x = locations
        .clone()
        .slice([0..batch, 0..h, 0..w, 0..1])
        .permute([0, 3, 1, 2]); // [B,1,h,w]
    let y = locations
        .slice([0..batch, 0..h, 0..w, 1..2])
        .permute([0, 3, 1, 2]); // [B,1,h,w]
    let u = x.add_scalar(1.0).mul_scalar((w as f64 - 1.0) / 2.0);
    let v = y.add_scalar(1.0).mul_scalar((h as f64 - 1.0) / 2.0);
    match config.kind {
        InlierKind::Soft => bilinear_gather(values, u, v).sum_dims_squeeze::<1, _>(&[1, 2, 3]),
        InlierKind::Hard { radius } => hard_sum(values, u, v, radius),
    }
}

/// Bilinear interpolation, per target cell, of `values[:, p]` viewed as an `h × w` source image,
/// at `(u, v)` (0-based cell units), with zero padding.
///
/// # Shapes
/// - `values`: `[batch, h·w, h, w]`
/// - `u`, `v`: `[batch, 1, h, w]`
/// - output: `[batch, 1, h, w]`
fn bilinear_gather(values: Tensor<4>, u: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = values.dims();
    let u0 = u.clone().detach().floor();
    let v0 = v.clone().detach().floor();
    let fu = u - u0.clone(); // weight of the right column
    let fv = v - v0.clone(); // weight of the lower row
    let mut total: Option<Tensor<4>> = None;
    for (du, wu) in [(0.0, fu.clone().neg().add_scalar(1.0)), (1.0, fu)] {
        for (dv, wv) in [(0.0, fv.clone().neg().add_scalar(1.0)), (1.0, fv.clone())] {
            let cu = u0.clone().add_scalar(du);
            let cv = v0.clone().add_scalar(dv);
            let outside = cu
                .clone()
                .lower_elem(0.0)
                .bool_or(cu.clone().greater_elem(w as f64 - 1.0))
                .bool_or(cv.clone().lower_elem(0.0))
                .bool_or(cv.clone().greater_elem(h as f64 - 1.0)); // [B,1,h,w]
            let index: Tensor<4, Int> = (cu.clamp(0.0, w as f64 - 1.0).mul_scalar(h as f64)
                + cv.clamp(0.0, h as f64 - 1.0))
            .int(); // k = x·h + y
            let weight = (wu.clone() * wv).mask_fill(outside, 0.0);
            let term = values.clone().gather(1, index) * weight;
            total = Some(match total {
                None => term,
                Some(t) => t + term,
            });
        }
    }
    total.expect("four corners")
}

/// The hard count: `Σ_{p, c} [‖(u, v)_p − c‖ ≤ radius] · values[c, p]`, mask detached.
///
/// # Shapes
/// - `values`: `[batch, h·w, h, w]`
/// - `u`, `v`: `[batch, 1, h, w]`
/// - output: `[batch]`
fn hard_sum(values: Tensor<4>, u: Tensor<4>, v: Tensor<4>, radius: f64) -> Tensor<1> {
    let [batch, k, h, w] = values.dims();
    let p = h * w;
    let (device, dtype) = (values.device(), values.dtype());
    let cell = |f: fn(usize, usize) -> usize| {
        let coords: Vec<f64> = (0..k).map(|c| f(c, h) as f64).collect();
        Tensor::<3>::from_data(TensorData::new(coords, [1, k, 1]), (&device, dtype))
    };
    let cell_x = cell(|c, h| c / h); // [1, K, 1]
    let cell_y = cell(|c, h| c % h);
    // The count does not depend on θ, but the tracked branch that computed (u, v) from θ must
    // still reach the loss: burn's autodiff frees a step's graph from what the backward pass
    // visits, so a branch it never visits (the regression heads' saved activations) stayed
    // alive: ~35 MB more per training step at batch 2, and a batch-8 hard-inlier weak stage was
    // killed by the kernel at 21 GB after ~150 steps.
    // Joined with weight 0, its gradient is exactly 0 and the loss value unchanged.
    let zero_weight = (u.clone() + v.clone())
        .sum_dims_squeeze::<1, _>(&[1, 2, 3])
        .mul_scalar(0.0); // [B]
    let u = u.detach().reshape([batch, 1, p]);
    let v = v.detach().reshape([batch, 1, p]);
    let d2 = (u - cell_x).square() + (v - cell_y).square(); // [B, K, P]
    let outside = d2.clone().greater_elem(radius * radius);
    let mask = d2.ones_like().mask_fill(outside, 0.0); // [B, K, P], 0/1, no gradient path
    (values.reshape([batch, k, p]) * mask).sum_dims_squeeze::<1, _>(&[1, 2]) + zero_weight
}
