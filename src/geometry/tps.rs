//! Thin-plate-spline transforms on a 3×3 control grid.
//!
//! With control points `P_i` (X-major 3×3 grid over `[-1, 1]²`) and target positions `Q_i` (θ),
//! the map is `x' = a0 + ax·x + ay·y + Σ_i w_i·U(|p − P_i|²)` (same for `y'`) with kernel
//! `U(d²) = d²·log d²` (`U(0) = 0`), where `[w; a] = L⁻¹·[Q; 0]` and
//! `L = [[K + λI, P], [Pᵀ, 0]]`, `K_ij = U(|P_i − P_j|²)`, `P = [1, P_X, P_Y]`.
//! With λ = 0 the spline interpolates: `T(P_i) = Q_i`. Because `U` is `r²·log r²`, this λ is
//! half the λ of the textbook `r²·log r` convention.
//!
//! The map is linear in θ: `T(p) = Q · (Φ(p) · L⁻¹[:, :9])ᵀ` with the basis
//! `Φ(p) = [U(|p − P_1|²) … U(|p − P_9|²), 1, x, y]`, so only `L⁻¹` is precomputed.
//!
//! ## Reference
//! weakalign: `geotnf/transformation.py` `TpsGridGen`, `geotnf/point_tnf.py`
//! `PointTnf.tpsPointTnf` (weakalign-reference §5.2). The reference inverts `L` in float32; we
//! invert in f64 and cast.

use burn::tensor::{DType, Device, Tensor, TensorData};

use super::theta::{Theta, TpsTheta};
use super::transform::{Transform, batch_points};
use crate::error::{Result, check_arg};

/// Number of TPS control points (3×3 grid).
pub const CONTROL_POINTS: usize = 9;

/// Size of the TPS system matrix `L`: control points plus the affine part `[1, x, y]`.
const SYSTEM: usize = CONTROL_POINTS + 3;

/// Control point `i` of the X-major 3×3 grid: `(P_X[i], P_Y[i])`.
pub fn control_point(i: usize) -> (f64, f64) {
    let coords = [-1.0, 0.0, 1.0];
    (coords[i / 3], coords[i % 3])
}

/// The TPS kernel `U(d²) = d²·log d²`, with `U(0) = 0`.
pub fn kernel(d2: f64) -> f64 {
    if d2 == 0.0 { 0.0 } else { d2 * d2.ln() }
}

/// A TPS on the 3×3 control grid with regularization λ: holds the precomputed `L⁻¹`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tps {
    lambda: f64,
    /// `L⁻¹[:, :9]`, row-major `[12, 9]`: maps control-point targets to `[w; a]`.
    coefficients: Vec<f64>,
}

impl Tps {
    /// Precomputes `L⁻¹` for regularization `lambda` (added to `K`'s diagonal).
    #[allow(clippy::needless_range_loop)] // matrix indices read as the math
    pub fn new(lambda: f64) -> Result<Self> {
        check_arg(
            lambda.is_finite() && lambda >= 0.0,
            "Tps::new",
            "lambda",
            || format!("TPS regularization must be finite and >= 0, got {lambda}"),
        )?;
        let mut l = [[0.0; SYSTEM]; SYSTEM];
        for i in 0..CONTROL_POINTS {
            let (xi, yi) = control_point(i);
            for j in 0..CONTROL_POINTS {
                let (xj, yj) = control_point(j);
                l[i][j] = kernel((xi - xj).powi(2) + (yi - yj).powi(2));
            }
            l[i][i] += lambda;
            for (k, v) in [1.0, xi, yi].into_iter().enumerate() {
                l[i][CONTROL_POINTS + k] = v;
                l[CONTROL_POINTS + k][i] = v;
            }
        }
        let inverse = invert(l).expect("the TPS system matrix of a 3×3 grid is invertible");
        let coefficients = inverse
            .iter()
            .flat_map(|row| row[..CONTROL_POINTS].iter().copied())
            .collect();
        Ok(Self {
            lambda,
            coefficients,
        })
    }

    /// The regularization λ.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// Binds a θ to this spline, giving a [`Transform`].
    pub fn warp<'a>(&'a self, theta: &'a TpsTheta) -> TpsWarp<'a> {
        TpsWarp { tps: self, theta }
    }

    /// The interpolation basis of a point set, `Φ(p)·L⁻¹[:, :9]`: row `n` holds the weights of
    /// the 9 control-point targets in `T(p_n)`. Differentiable in `points`.
    ///
    /// # Shapes
    /// - `points`: `[batch, 2, n]`
    /// - output: `[batch, n, 9]`
    pub(crate) fn basis(&self, points: Tensor<3>) -> Tensor<3> {
        let [batch, _, n] = points.dims();
        let (device, dtype) = (points.device(), points.dtype());
        let constant = |values: Vec<f64>, shape: [usize; 3]| {
            Tensor::<3>::from_data(TensorData::new(values, shape), (&device, dtype))
        };
        let control: Vec<(f64, f64)> = (0..CONTROL_POINTS).map(control_point).collect();
        let px = constant(
            control.iter().map(|c| c.0).collect(),
            [1, 1, CONTROL_POINTS],
        );
        let py = constant(
            control.iter().map(|c| c.1).collect(),
            [1, 1, CONTROL_POINTS],
        );
        let x = points.clone().slice([0..batch, 0..1, 0..n]).swap_dims(1, 2); // [B, n, 1]
        let y = points.slice([0..batch, 1..2, 0..n]).swap_dims(1, 2); // [B, n, 1]
        let d2 = (x.clone() - px).square() + (y.clone() - py).square(); // [B, n, 9]
        // U(0) = 0: replace d² = 0 by 1 so that d²·log d² is 0 there, with zero gradient.
        let zero = d2.clone().equal_elem(0.0);
        let d2 = d2.mask_fill(zero, 1.0);
        let u = d2.clone() * d2.log(); // [B, n, 9]
        let ones = Tensor::<3>::ones([batch, n, 1], (&device, dtype));
        let phi = Tensor::cat(vec![u, ones, x, y], 2); // [B, n, 12]
        let coefficients = constant(self.coefficients.clone(), [1, SYSTEM, CONTROL_POINTS]);
        phi.matmul(coefficients.repeat_dim(0, batch)) // [B, n, 9]
    }
}

/// A TPS θ bound to its [`Tps`]; implements [`Transform`].
#[derive(Clone, Copy, Debug)]
pub struct TpsWarp<'a> {
    /// The spline (λ and `L⁻¹`).
    pub tps: &'a Tps,
    /// The control-point targets.
    pub theta: &'a TpsTheta,
}

impl Transform for TpsWarp<'_> {
    fn batch(&self) -> usize {
        self.theta.batch()
    }

    /// # Shapes
    /// - `points`: `[batch, 2, n]` (or `[1, 2, n]`)
    /// - output: `[batch, 2, n]`
    fn map_points(&self, points: Tensor<3>) -> Result<Tensor<3>> {
        let batch = self.theta.batch();
        let points = batch_points("tps::map_points", points, batch)?;
        let q = self
            .theta
            .tensor()
            .clone()
            .reshape([batch, 2, CONTROL_POINTS]); // [B, 2, 9]
        Ok(q.matmul(self.tps.basis(points).swap_dims(1, 2))) // [B, 2, n]
    }

    fn tensor_options(&self) -> (Device, DType) {
        (self.theta.tensor().device(), self.theta.tensor().dtype())
    }
}

/// Inverts a square matrix by Gauss–Jordan elimination with partial pivoting; `None` if singular.
///
/// Hand-written rather than a linear-algebra dependency: it runs once per [`Tps`] on a 12×12
/// matrix.
#[allow(clippy::needless_range_loop)] // matrix indices read as the math
fn invert<const N: usize>(mut a: [[f64; N]; N]) -> Option<[[f64; N]; N]> {
    let mut inv = [[0.0; N]; N];
    for (i, row) in inv.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let p = a[col][col];
        for k in 0..N {
            a[col][k] /= p;
            inv[col][k] /= p;
        }
        for row in 0..N {
            if row != col {
                let f = a[row][col];
                if f != 0.0 {
                    for k in 0..N {
                        a[row][k] -= f * a[col][k];
                        inv[row][k] -= f * inv[col][k];
                    }
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn inverse_times_matrix_is_identity() {
        let a = [[4.0, 1.0, 2.0], [1.0, 3.0, 0.5], [2.0, 0.5, 5.0]];
        let inv = invert(a).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i][k] * inv[k][j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn singular_matrix_is_rejected() {
        assert!(invert([[1.0, 2.0], [2.0, 4.0]]).is_none());
    }
}
