//! Batch normalization with fixed statistics, folded into the convolution before it.
//!
//! burn's `BatchNorm` in inference mode (running statistics: evaluation, and training with
//! `batch_norm = "frozen"`, the reference's weak training) computes `(x − μ) / √(σ² + ε) · γ + β`
//! as four passes over the activation, each recorded for the backward. The same map is
//! `x · s + t` with `s = γ / √(σ² + ε)` and `t = β − μ · s` computed on the `[channels]` vectors,
//! and after a convolution it costs nothing: `conv(x; W)·s + t = conv(x; W·s) + t`. So
//! [`conv_bn`] hands `s` to the convolution, whose kernels scale the `[c_out, …]` weight (not the
//! activation) and return the gradients of `W` and `s`, and `t` (with the activation and
//! residual that follow) to its fused output pass ([`conv::conv2d_with`]); autodiff carries the
//! gradients of `s` and `t` back to `γ` and `β` (issue 11). Outputs and gradients equal burn's
//! up to float rounding (tested in `tests/conv.rs`).

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::conv::{self, Activation, After};

/// The per-channel map `x · s + t` of `bn` with its running statistics.
///
/// # Shapes
/// - output: `s`, `t`: `[channels]`
fn affine(bn: &BatchNorm, device: &Device) -> (Tensor<1>, Tensor<1>) {
    let mean = bn.running_mean.value().to_device(device);
    let var = bn.running_var.value().to_device(device);
    let scale = bn.gamma.val() / (var + bn.epsilon).sqrt(); // [C]
    let shift = bn.beta.val() - mean * scale.clone(); // [C]
    (scale, shift)
}

/// Whether `bn` normalizes with the batch's statistics (training mode under autodiff) rather
/// than its running ones.
fn uses_batch_statistics(bn: &BatchNorm, x: &Tensor<4>) -> bool {
    x.device().is_autodiff() && bn.training.is_enabled()
}

/// `a(bn(conv(x)) [+ residual])`, the backbones' convolution block: with running statistics
/// one pass over the output (module docs), with batch statistics burn's `BatchNorm`.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`; `residual`: like the output
/// - output: `[batch, c_out, h_out, w_out]`, as `conv.forward(x)`
pub fn conv_bn(
    conv: &Conv2d,
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    activation: Activation,
) -> Tensor<4> {
    if uses_batch_statistics(bn, &x) {
        return conv::finish(bn.forward(conv::forward(conv, x)), residual, activation);
    }
    let (scale, shift) = affine(bn, &x.device());
    let bias = match &conv.bias {
        Some(b) => b.val() * scale.clone() + shift,
        None => shift,
    };
    let after = After {
        scale: Some(scale),
        bias: Some(bias),
        residual,
        activation,
    };
    conv::forward_with(conv, conv.weight.val(), x, after)
}
