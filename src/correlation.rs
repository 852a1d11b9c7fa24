//! Feature L2 normalization and the normalized feature correlation.
//!
//! # Layout
//! `corr[b, k, y_b, x_b] = ⟨f_a[b, :, y_a, x_a], f_b[b, :, y_b, x_b]⟩` with
//! **`k = x_a·h + y_a`** (column-major index of the *source* position; the reference comments
//! it as `idx_A = row_A + h·col_A`). The `h·w` channels enumerate source positions; the spatial
//! dims are target positions.
//!
//! ## Reference
//! weakalign: `model/cnn_geometric_model.py` `FeatureL2Norm`, `FeatureCorrelation(shape='3D')`
//! and the `normalize_matches` branch of `CNNGeometric.forward` (weakalign-reference §2, §3).

use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::error::{Dim, Result, check_shape};

/// ε inside the square root of the L2 normalization (`FeatureL2Norm`).
pub const L2_EPSILON: f64 = 1e-6;

/// L2 normalization over the channel axis: `f / sqrt(Σ_c f_c² + 1e-6)` at every location.
///
/// # Shapes
/// - `features`: `[batch, channels, h, w]`
/// - output: `[batch, channels, h, w]`
pub fn feature_l2_norm(features: Tensor<4>) -> Tensor<4> {
    let norm = features
        .clone()
        .square()
        .sum_dim(1) // [B, 1, h, w]
        .add_scalar(L2_EPSILON)
        .sqrt();
    features / norm
}

/// The correlation of source and target features in the reference layout (see the module doc).
///
/// # Shapes
/// - `source`, `target`: `[batch, channels, h, w]`
/// - output: `[batch, h·w, h, w]`, channel `k = x_source·h + y_source`
pub fn correlation(source: Tensor<4>, target: Tensor<4>) -> Result<Tensor<4>> {
    let [batch, channels, h, w] = source.dims();
    check_shape(
        "correlation",
        "target",
        &target.dims(),
        &[
            Dim::Same("batch", batch),
            Dim::Same("channels", channels),
            Dim::Same("h", h),
            Dim::Same("w", w),
        ],
    )?;
    let a = source.swap_dims(2, 3).reshape([batch, channels, h * w]); // [B, C, k = x·h + y]
    let b = target.reshape([batch, channels, h * w]).swap_dims(1, 2); // [B, y·w + x, C]
    Ok(b.matmul(a) // [B, h·w (target), h·w (source k)]
        .reshape([batch, h, w, h * w])
        .permute([0, 3, 1, 2])) // [B, k, h, w]
}

/// Correlation normalization: ReLU, then L2 over the source axis for every target position
/// (`featureL2Norm(ReLU(corr))`).
///
/// # Shapes
/// - `corr`: `[batch, h·w, h, w]`
/// - output: `[batch, h·w, h, w]`
pub fn normalize_correlation(corr: Tensor<4>) -> Tensor<4> {
    feature_l2_norm(relu(corr))
}

/// The feature-correlation layer: correlation, then optionally its normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureCorrelation {
    /// Apply [`normalize_correlation`] (the reference's `normalize_matches`, default on).
    pub normalize: bool,
}

impl Default for FeatureCorrelation {
    fn default() -> Self {
        Self { normalize: true }
    }
}

impl FeatureCorrelation {
    /// Correlates L2-normalized or raw features as given.
    ///
    /// # Shapes
    /// - `source`, `target`: `[batch, channels, h, w]`
    /// - output: `[batch, h·w, h, w]`
    pub fn forward(&self, source: Tensor<4>, target: Tensor<4>) -> Result<Tensor<4>> {
        let corr = correlation(source, target)?;
        Ok(if self.normalize {
            normalize_correlation(corr)
        } else {
            corr
        })
    }
}
