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

/// Reads a tensor back to the host as f64 values (row-major): the one place for this conversion.
pub fn read_f64<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("data converted to f64 reads back as f64")
}
