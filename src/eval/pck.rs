//! PCK: the fraction of transferred keypoints within `α · L` of their ground truth.
//!
//! Target keypoints are mapped into the source image (θ maps target → source) and compared with
//! the source keypoints. The reference length `L` is the larger side of the source keypoints'
//! bounding box (PF-WILLOW, the 'pf' procedure); PCK is averaged **per pair**. Padding keypoints
//! never reach this module (readers drop them).
//!
//! ## Reference
//! weakalign: `util/eval_util.py` `pck`, `pck_metric` (weakalign-reference §10).

/// Larger side of the bounding box of `points` (0 for fewer than two points).
pub fn bounding_box_size(points: &[(f64, f64)]) -> f64 {
    if points.is_empty() {
        return 0.0;
    }
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    (x1 - x0).max(y1 - y0)
}

/// The fraction of `predicted` points within `alpha · reference` of `truth`; `None` for an
/// empty pair (excluded from the mean, as the reference's −1 entries).
pub fn pck(
    predicted: &[(f64, f64)],
    truth: &[(f64, f64)],
    alpha: f64,
    reference: f64,
) -> Option<f64> {
    if truth.is_empty() || predicted.len() != truth.len() {
        return None;
    }
    let threshold = alpha * reference;
    let hits = predicted
        .iter()
        .zip(truth)
        .filter(|(p, t)| ((p.0 - t.0).powi(2) + (p.1 - t.1).powi(2)).sqrt() <= threshold)
        .count();
    Some(hits as f64 / truth.len() as f64)
}

/// Mean of the per-pair values that exist.
pub fn mean_over_pairs(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .flatten()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Transfers target keypoints into the source image with the identity transform: the same
/// normalized coordinates, so pixels are rescaled by the two image sizes (1-based convention).
pub fn identity_transfer(
    target_points: &[(f64, f64)],
    target_size: (usize, usize),
    source_size: (usize, usize),
) -> Vec<(f64, f64)> {
    use crate::geometry::points::{normalize_axis, unnormalize_axis};
    let ((th, tw), (sh, sw)) = (target_size, source_size);
    target_points
        .iter()
        .map(|&(x, y)| {
            (
                unnormalize_axis(normalize_axis(x, tw), sw),
                unnormalize_axis(normalize_axis(y, th), sh),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_cases() {
        let truth = [(10.0, 10.0), (20.0, 10.0), (10.0, 30.0)];
        assert_eq!(bounding_box_size(&truth), 20.0);
        // α·L = 0.1 · 20 = 2: two within, one 2.5 px away.
        let predicted = [(11.0, 10.0), (20.0, 12.0), (12.5, 30.0)];
        assert_eq!(pck(&predicted, &truth, 0.1, 20.0), Some(2.0 / 3.0));
        assert_eq!(pck(&[], &[], 0.1, 20.0), None);
        assert_eq!(mean_over_pairs([Some(1.0), None, Some(0.5)]), Some(0.75));
        let same = identity_transfer(&[(1.0, 1.0), (100.0, 50.0)], (50, 100), (100, 200));
        assert_eq!(same, vec![(1.0, 1.0), (200.0, 100.0)]);
    }
}

/// A predicted transform for one pair, as plain parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Prediction {
    /// No warp.
    Identity,
    /// An affine θ (6 values).
    Affine(Vec<f64>),
    /// A TPS θ (18 values).
    Tps(Vec<f64>),
    /// affine ∘ TPS: `(θ_aff, θ_tps)`.
    AffineTps(Vec<f64>, Vec<f64>),
}

/// Maps target keypoints (1-based pixels of a `target_size` image) into the source image
/// (`source_size`) through a prediction: normalize, `T_aff(T_tps(p))`, unnormalize
/// (weakalign `pck_metric`). `tps` is the spline used for TPS parameters (reference eval: λ = 0).
pub fn transfer(
    prediction: &Prediction,
    target_points: &[(f64, f64)],
    target_size: (usize, usize),
    source_size: (usize, usize),
    tps: &crate::geometry::Tps,
) -> crate::Result<Vec<(f64, f64)>> {
    use burn::tensor::{DType, Tensor, TensorData};

    use crate::geometry::points::{to_normalized, to_pixels};
    use crate::geometry::{AffineTheta, Composed, Theta, TpsTheta, Transform};

    if matches!(prediction, Prediction::Identity) || target_points.is_empty() {
        return Ok(identity_transfer(target_points, target_size, source_size));
    }
    let device = crate::device::inference();
    let n = target_points.len();
    let mut flat: Vec<f64> = target_points.iter().map(|p| p.0).collect();
    flat.extend(target_points.iter().map(|p| p.1));
    let points = Tensor::<3>::from_data(TensorData::new(flat, [1, 2, n]), (&device, DType::F64));
    let normalized = to_normalized(points, &[target_size])?;
    let (d, t) = (&device, DType::F64);
    let mapped = match prediction {
        Prediction::Identity => unreachable!("handled above"),
        Prediction::Affine(a) => AffineTheta::from_values(a, d, t)?.map_points(normalized)?,
        Prediction::Tps(q) => tps
            .warp(&TpsTheta::from_values(q, d, t)?)
            .map_points(normalized)?,
        Prediction::AffineTps(a, q) => {
            let (a, q) = (
                AffineTheta::from_values(a, d, t)?,
                TpsTheta::from_values(q, d, t)?,
            );
            Composed {
                affine: &a,
                tps: tps.warp(&q),
            }
            .map_points(normalized)?
        }
    };
    let pixels = to_pixels(mapped, &[source_size])?;
    let v = crate::device::read_f64(pixels);
    Ok((0..n).map(|i| (v[i], v[n + i])).collect())
}
