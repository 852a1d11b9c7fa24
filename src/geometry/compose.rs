//! The composition affine ∘ TPS: `p ↦ T_aff(T_tps(p))` (the TPS is applied to target points
//! first, then the affine transform).
//!
//! ## Reference
//! weakalign: `geotnf/transformation.py` `ComposedGeometricTnf` (grids, weakalign-reference
//! §5.3) and `util/eval_util.py` (points: `affPointTnf(θ_aff, tpsPointTnf(θ_tps, P))`).

use burn::tensor::{DType, Device, Tensor};

use super::grid::sample;
use super::theta::AffineTheta;
use super::tps::TpsWarp;
use super::transform::{GridFactors, Transform, sampling_grid};
use crate::error::Result;

/// The value the reference writes into out-of-range grid locations (they then sample zeros).
pub const OUT_OF_RANGE: f64 = 1e10;

/// How a composed sampling grid treats locations that leave `(-1, 1)²` (`"reference"` or
/// `"analytic"` in files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComposeBorder {
    /// The reference's `ComposedGeometricTnf`: the affine grid is built over the output grid,
    /// its locations outside the open box `(-1, 1)²` are set to 1e10, it is bilinearly sampled at
    /// the TPS grid, and locations where the TPS grid is outside the open box are set to 1e10.
    /// With identity transforms on a 15×15 grid this drops the border ring (points exactly at
    /// ±1 count as outside) and, through float round-off times 1e10, some adjacent cells.
    #[default]
    Reference,
    /// Deliberate deviation (an option): compose analytically, `T_aff(T_tps(p))` at every `p`;
    /// out-of-range locations are left to the sampler's zero padding.
    Analytic,
}

/// affine ∘ TPS as one [`Transform`]: `T(p) = T_aff(T_tps(p))`.
#[derive(Clone, Copy, Debug)]
pub struct Composed<'a> {
    /// The affine θ, applied second.
    pub affine: &'a AffineTheta,
    /// The TPS, applied first.
    pub tps: TpsWarp<'a>,
}

impl Transform for Composed<'_> {
    fn batch(&self) -> usize {
        Transform::batch(self.affine)
    }

    /// # Shapes
    /// - `points`: `[batch, 2, n]` (or `[1, 2, n]`)
    /// - output: `[batch, 2, n]`
    fn map_points(&self, points: Tensor<3>) -> Result<Tensor<3>> {
        self.affine.map_points(self.tps.map_points(points)?)
    }

    fn tensor_options(&self) -> (Device, DType) {
        self.affine.tensor_options()
    }
}

impl Composed<'_> {
    /// The composed sampling grid over an `h × w` target, with the chosen border handling.
    ///
    /// # Shapes
    /// - output: `[batch, h, w, 2]`
    pub fn grid(
        &self,
        size: [usize; 2],
        factors: GridFactors,
        border: ComposeBorder,
    ) -> Result<Tensor<4>> {
        match border {
            ComposeBorder::Analytic => sampling_grid(self, size, factors),
            ComposeBorder::Reference => {
                let grid_aff = out_of_open_box(sampling_grid(self.affine, size, factors)?);
                let grid_tps = sampling_grid(&self.tps, size, factors)?;
                let outside = open_box_outside(grid_tps.clone());
                let composed = sample(grid_aff.permute([0, 3, 1, 2]), grid_tps)?; // [B, 2, h, w]
                Ok(composed
                    .permute([0, 2, 3, 1]) // [B, h, w, 2]
                    .mask_fill(outside, OUT_OF_RANGE))
            }
        }
    }
}

/// Where a grid location lies outside the open box `(-1, 1)²`, for both channels.
///
/// # Shapes
/// - `grid`: `[batch, h, w, 2]`
/// - output: `[batch, h, w, 2]`
fn open_box_outside(grid: Tensor<4>) -> Tensor<4, burn::tensor::Bool> {
    let outside = grid
        .abs()
        .greater_equal_elem(1.0)
        .int()
        .sum_dim(3)
        .greater_elem(0); // [B,h,w,1]
    outside.repeat_dim(3, 2)
}

/// Sets every location outside the open box to [`OUT_OF_RANGE`].
///
/// # Shapes
/// - `grid`: `[batch, h, w, 2]`
/// - output: `[batch, h, w, 2]`
fn out_of_open_box(grid: Tensor<4>) -> Tensor<4> {
    let outside = open_box_outside(grid.clone());
    grid.mask_fill(outside, OUT_OF_RANGE)
}
