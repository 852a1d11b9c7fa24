//! Pixel ↔ normalized coordinates (1-based pixels, as the reference).
//!
//! ## Reference
//! weakalign: `geotnf/point_tnf.py` `normalize_axis`, `unnormalize_axis`,
//! `PointsToUnitCoords`, `PointsToPixelCoords` (weakalign-reference §1).

use burn::tensor::{Tensor, TensorData};

use crate::error::{Result, check_arg};

/// 1-based pixel coordinate → normalized: `x = 1 ↦ −1`, `x = len ↦ +1`.
pub fn normalize_axis(x: f64, len: usize) -> f64 {
    let l = len as f64;
    (x - 1.0 - (l - 1.0) / 2.0) * 2.0 / (l - 1.0)
}

/// Normalized → 1-based pixel coordinate (the inverse of [`normalize_axis`]).
pub fn unnormalize_axis(u: f64, len: usize) -> f64 {
    let l = len as f64;
    u * (l - 1.0) / 2.0 + 1.0 + (l - 1.0) / 2.0
}

/// Per-batch-element image sizes `(h, w)` as the affine maps of one direction:
/// `scale` and `offset` of shape `[batch, 2, 1]`, so that `out = points·scale + offset`.
fn axis_maps(sizes: &[(usize, usize)], to_normalized: bool) -> (Vec<f64>, Vec<f64>) {
    let mut scale = Vec::with_capacity(2 * sizes.len());
    let mut offset = Vec::with_capacity(2 * sizes.len());
    for &(h, w) in sizes {
        for len in [w, h] {
            let half = (len as f64 - 1.0) / 2.0;
            if to_normalized {
                scale.push(1.0 / half);
                offset.push(-(1.0 + half) / half);
            } else {
                scale.push(half);
                offset.push(1.0 + half);
            }
        }
    }
    (scale, offset)
}

fn convert(points: Tensor<3>, sizes: &[(usize, usize)], to_normalized: bool) -> Result<Tensor<3>> {
    let op = if to_normalized {
        "points::to_normalized"
    } else {
        "points::to_pixels"
    };
    let [batch, two, _] = points.dims();
    crate::error::check_shape(
        op,
        "points",
        &[batch, two],
        &[
            crate::error::Dim::Same("sizes.len()", sizes.len()),
            crate::error::Dim::Is(2),
        ],
    )?;
    check_arg(
        sizes.iter().all(|&(h, w)| h > 1 && w > 1),
        op,
        "sizes",
        || format!("every image side must be > 1 pixel, got {sizes:?}"),
    )?;
    let (device, dtype) = (points.device(), points.dtype());
    let (scale, offset) = axis_maps(sizes, to_normalized);
    let scale = Tensor::<3>::from_data(TensorData::new(scale, [batch, 2, 1]), (&device, dtype));
    let offset = Tensor::<3>::from_data(TensorData::new(offset, [batch, 2, 1]), (&device, dtype));
    Ok(points * scale + offset)
}

/// Pixel coordinates (1-based) → normalized, per batch element with its image size `(h, w)`.
///
/// # Shapes
/// - `points`: `[batch, 2, n]`; `sizes.len() == batch`
/// - output: `[batch, 2, n]`
pub fn to_normalized(points: Tensor<3>, sizes: &[(usize, usize)]) -> Result<Tensor<3>> {
    convert(points, sizes, true)
}

/// Normalized → pixel coordinates (1-based), per batch element with its image size `(h, w)`.
///
/// # Shapes
/// - `points`: `[batch, 2, n]`; `sizes.len() == batch`
/// - output: `[batch, 2, n]`
pub fn to_pixels(points: Tensor<3>, sizes: &[(usize, usize)]) -> Result<Tensor<3>> {
    convert(points, sizes, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_round_trip_and_ends() {
        assert_eq!(normalize_axis(1.0, 240), -1.0);
        assert_eq!(normalize_axis(240.0, 240), 1.0);
        for x in [1.0, 17.5, 120.0, 240.0] {
            assert!((unnormalize_axis(normalize_axis(x, 240), 240) - x).abs() < 1e-12);
        }
    }
}
