//! The one place that names the tensor backend.
//!
//! burn 0.22 dispatches on a runtime [`Device`]; the CPU backend is `flex` and gradients come from
//! wrapping it in autodiff. Everything else in the crate takes a `&Device` or reads the device of
//! its input tensors, so switching backends (e.g. to CUDA behind a cargo feature) happens here.

use burn::tensor::Device;

/// The inference device: burn's `flex` CPU backend.
pub fn inference() -> Device {
    Device::flex()
}

/// The training device: `flex` with autodiff.
pub fn training() -> Device {
    inference().autodiff()
}
