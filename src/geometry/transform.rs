//! The [`Transform`] trait and the sampling grid of any transform.

use burn::tensor::Tensor;

use super::grid::{identity_points, points_to_grid};
use crate::error::{Result, check_arg};

/// A batch of geometric transforms `T_θ` mapping target points to source points.
pub trait Transform {
    /// Batch size.
    fn batch(&self) -> usize;

    /// Applies the transform to a point set.
    ///
    /// # Shapes
    /// - `points`: `[batch, 2, n]` (or `[1, 2, n]`, shared by the batch)
    /// - output: `[batch, 2, n]`
    fn map_points(&self, points: Tensor<3>) -> Result<Tensor<3>>;

    /// The device and dtype of the parameters.
    fn tensor_options(&self) -> (burn::tensor::Device, burn::tensor::DType);
}

/// The reference's grid factors (`GeometricTnf`, weakalign-reference §5.3).
///
/// The grid is `padding_crop · o · T(p / o)` with `o = offset`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridFactors {
    /// `offset_factor` `o`: the base grid is divided by `o` and the result multiplied by `o`
    /// (for an affine θ this rescales only the translation). 1 = off.
    pub offset: f64,
    /// `padding_factor · crop_factor`, multiplied into the finished grid. 1 = off.
    pub padding_crop: f64,
}

impl Default for GridFactors {
    fn default() -> Self {
        Self {
            offset: 1.0,
            padding_crop: 1.0,
        }
    }
}

impl GridFactors {
    /// Only an offset factor.
    pub fn offset(offset: f64) -> Self {
        Self {
            offset,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self, op: &'static str) -> Result<()> {
        check_arg(
            self.offset.is_finite() && self.offset > 0.0,
            op,
            "offset",
            || format!("offset factor must be finite and > 0, got {}", self.offset),
        )?;
        check_arg(self.padding_crop.is_finite(), op, "padding_crop", || {
            format!(
                "padding/crop factor must be finite, got {}",
                self.padding_crop
            )
        })
    }
}

/// The sampling grid of `transform` over an `h × w` target image.
///
/// # Shapes
/// - output: `[batch, h, w, 2]`
pub fn sampling_grid(
    transform: &impl Transform,
    size: [usize; 2],
    factors: GridFactors,
) -> Result<Tensor<4>> {
    factors.validate("sampling_grid")?;
    check_arg(size[0] > 0 && size[1] > 0, "sampling_grid", "size", || {
        format!("grid size must be positive, got {size:?}")
    })?;
    let (device, dtype) = transform.tensor_options();
    let base = identity_points(size, &device, dtype);
    let o = factors.offset;
    let mapped = if o == 1.0 {
        transform.map_points(base)?
    } else {
        transform.map_points(base.div_scalar(o))?.mul_scalar(o)
    };
    let mapped = if factors.padding_crop == 1.0 {
        mapped
    } else {
        mapped.mul_scalar(factors.padding_crop)
    };
    points_to_grid(mapped, size)
}

/// Checks a point-set argument and repeats a shared (`batch = 1`) set over the batch.
///
/// # Shapes
/// - `points`: `[batch, 2, n]` or `[1, 2, n]`
/// - output: `[batch, 2, n]`
pub(crate) fn batch_points(op: &'static str, points: Tensor<3>, batch: usize) -> Result<Tensor<3>> {
    let [b, two, _] = points.dims();
    if two != 2 || (b != batch && b != 1) {
        return Err(crate::Error::Shape {
            op,
            arg: "points",
            got: points.dims().to_vec(),
            expected: format!("[batch={batch} (or 1), 2, n]"),
        });
    }
    Ok(if b == batch {
        points
    } else {
        points.repeat_dim(0, batch)
    })
}
