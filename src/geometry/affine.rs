//! Affine transforms.
//!
//! ## Reference
//! weakalign: `geotnf/transformation.py` `AffineGridGen`/`AffineGridGenV2`,
//! `geotnf/point_tnf.py` `PointTnf.affPointTnf` (weakalign-reference §5.1).

use burn::tensor::{DType, Device, Tensor};

use super::theta::{AffineTheta, Theta};
use super::transform::{Transform, batch_points};
use crate::error::{Result, check_arg};

impl AffineTheta {
    /// The linear part `A` and translation `t` of θ.
    ///
    /// # Shapes
    /// - output: (`[batch, 2, 2]`, `[batch, 2, 1]`)
    pub fn matrix_translation(&self) -> (Tensor<3>, Tensor<3>) {
        let batch = self.batch();
        let m = self.tensor().clone().reshape([batch, 2, 3]);
        (
            m.clone().slice([0..batch, 0..2, 0..2]),
            m.slice([0..batch, 0..2, 2..3]),
        )
    }

    /// `self ∘ inner`: the affine map `P ↦ self(inner(P))`, i.e. `A = A_self·A_inner`,
    /// `t = A_self·t_inner + t_self`. Both map target → source, so when `inner` was predicted on
    /// the source already warped by `self` (the target against `self`'s warp), the composition
    /// maps the target to the original source: what affine refinement at inference accumulates
    /// (see `TwoStage::forward_refined`).
    ///
    /// # Shapes
    /// - `self`, `inner`: `[batch, 6]`
    /// - output: `[batch, 6]`
    pub fn compose(&self, inner: &AffineTheta) -> Result<AffineTheta> {
        let batch = self.batch();
        check_arg(
            inner.batch() == batch,
            "AffineTheta::compose",
            "inner",
            || format!("batch {} where self has {batch}", inner.batch()),
        )?;
        let (a_outer, t_outer) = self.matrix_translation();
        let (a_inner, t_inner) = inner.matrix_translation();
        let a = a_outer.clone().matmul(a_inner); // [B, 2, 2]
        let t = a_outer.matmul(t_inner) + t_outer; // [B, 2, 1]
        AffineTheta::new(Tensor::cat(vec![a, t], 2).reshape([batch, 6]))
    }
}

impl Transform for AffineTheta {
    fn batch(&self) -> usize {
        AffineTheta::batch(self)
    }

    /// `P' = A·P + t`.
    ///
    /// # Shapes
    /// - `points`: `[batch, 2, n]` (or `[1, 2, n]`)
    /// - output: `[batch, 2, n]`
    fn map_points(&self, points: Tensor<3>) -> Result<Tensor<3>> {
        let points = batch_points("affine::map_points", points, AffineTheta::batch(self))?;
        let (a, t) = self.matrix_translation();
        Ok(a.matmul(points) + t)
    }

    fn tensor_options(&self) -> (Device, DType) {
        (self.tensor().device(), self.tensor().dtype())
    }
}
