//! Batch normalization with fixed statistics, as one per-channel affine map.
//!
//! burn's `BatchNorm` in inference mode (running statistics: evaluation, and training with
//! `batch_norm = "frozen"`, the reference's weak training) computes `(x − μ) / √(σ² + ε) · γ + β`
//! as four passes over the activation, each recorded for the backward. The same map is
//! `x · s + t` with `s = γ / √(σ² + ε)` and `t = β − μ · s` computed on the `[channels]`
//! vectors: two passes, gradients to `x`, `γ` and `β` through the same autodiff (issue 11).
//! Outputs and gradients equal burn's up to float rounding (tested in `tests/conv.rs`).

use burn::nn::BatchNorm;
use burn::tensor::Tensor;

/// `bn.forward(x)`; where `bn` uses its running statistics, as one affine map (module docs).
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]`
/// - output: `[batch, channels, h, w]`
pub fn forward(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if x.device().is_autodiff() && bn.training.is_enabled() {
        return bn.forward(x); // batch statistics, updating the running ones
    }
    let device = x.device();
    let mean = bn.running_mean.value().to_device(&device);
    let var = bn.running_var.value().to_device(&device);
    let scale = bn.gamma.val() / (var + bn.epsilon).sqrt(); // [C]
    let shift = bn.beta.val() - mean * scale.clone(); // [C]
    let c = scale.dims()[0];
    x * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1])
}
