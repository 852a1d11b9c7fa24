//! Helpers shared by the integration tests.

#![allow(dead_code)]

use burn::tensor::{DType, Device, Tensor, TensorData};
use proptest::test_runner::Config as ProptestConfig;

/// f64 on flex with autodiff: gradient checks and exact identities.
pub fn f64_device() -> (Device, DType) {
    (weakalign::device::training(), DType::F64)
}

/// f32 on flex without autodiff: what inference runs.
pub fn f32_device() -> (Device, DType) {
    (weakalign::device::inference(), DType::F32)
}

/// A tensor from f64 values.
pub fn tensor<const D: usize>(
    values: &[f64],
    shape: [usize; D],
    opts: (Device, DType),
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), (&opts.0, opts.1))
}

/// A tensor's values as f64.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.cast(DType::F64)
        .into_data()
        .try_to_vec::<f64>()
        .expect("f64 data")
}

/// Proptest configuration: `default` cases unless `PROPTEST_CASES` is set.
pub fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Asserts `|a − b| ≤ atol + rtol·max(|a|, |b|)` elementwise, naming the first offender.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * g.abs().max(w.abs());
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (|Δ| = {:e} > {tol:e})",
            (g - w).abs()
        );
    }
}

/// Finite-difference step (f64).
pub const FD_STEP: f64 = 1e-6;
/// Absolute tolerance of gradient checks (f64): central differences with h = 1e-6 have
/// truncation error O(h²) and round-off O(ε·|f|/h) ≈ 1e-10·|f|.
pub const GRAD_ATOL: f64 = 1e-6;
/// Relative tolerance of gradient checks (f64).
pub const GRAD_RTOL: f64 = 1e-5;

/// Checks the autodiff gradient of `sum(f(x))` w.r.t. `x` against central finite differences,
/// in f64 on flex + autodiff.
///
/// Bilinear sampling is piecewise linear and the reference's composed grid has jumps (its 1e10
/// out-of-range markers), so a coordinate where the forward and backward differences disagree
/// is a kink or jump, not a smooth point: it is skipped. At most a quarter of the coordinates may
/// be skipped, so a wrong gradient cannot hide behind this rule.
pub fn gradcheck<const D: usize, const E: usize>(
    what: &str,
    x: &[f64],
    shape: [usize; D],
    f: impl Fn(Tensor<D>) -> Tensor<E>,
) {
    let opts = f64_device();
    let input = tensor(x, shape, opts.clone()).require_grad();
    let output = f(input.clone()).sum();
    let grads = output.backward();
    let analytic = values(input.grad(&grads).expect("input should receive a gradient"));
    let eval = |x: &[f64]| -> f64 { values(f(tensor(x, shape, opts.clone())).sum())[0] };
    let f0 = eval(x);
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for i in 0..x.len() {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[i] += FD_STEP;
        xm[i] -= FD_STEP;
        let (fp, fm) = (eval(&xp), eval(&xm));
        let (forward, backward) = ((fp - f0) / FD_STEP, (f0 - fm) / FD_STEP);
        // One-sided differences carry O(h) truncation error: compare them loosely.
        let smooth = (forward - backward).abs() <= 1e-3 * (1.0 + forward.abs().max(backward.abs()));
        if smooth {
            got.push(analytic[i]);
            want.push((fp - fm) / (2.0 * FD_STEP));
        }
    }
    assert!(
        4 * got.len() >= 3 * x.len(),
        "{what}: {} of {} coordinates are at kinks; the check would be vacuous",
        x.len() - got.len(),
        x.len()
    );
    assert_close(what, &got, &want, GRAD_ATOL, GRAD_RTOL);
}

/// Deterministic pseudo-random values `sin(0.7071·i + seed)·cos(0.1234·i)`, `i` the flat index:
/// the `wave` of `tools/make_golden.py` (0.7071 is that formula's constant, not 1/√2).
#[allow(clippy::approx_constant)]
pub fn wave(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|i| (0.7071 * i as f64 + seed).sin() * (0.1234 * i as f64).cos())
        .collect()
}
