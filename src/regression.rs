//! Feature regression: a small CNN from the correlation tensor to a typed θ.
//!
//! `conv 7×7 (h·w → 128), BN, ReLU, conv 5×5 (128 → 64), BN, ReLU, flatten (C, H, W),
//! linear (64·(h−10)·(w−10) → P)`, no padding; for a 15×15 grid the linear layer sees 64×5×5.
//! Initialization is the framework default (the reference has no identity initialization).
//!
//! ## Reference
//! weakalign: `model/cnn_geometric_model.py` `FeatureRegression` (weakalign-reference §4).

use std::marker::PhantomData;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::backbone::conv::Activation::Relu;
use crate::backbone::norm::conv_bn;
use crate::error::{Dim, Result, check_arg, check_shape};
use crate::geometry::Theta;

/// Kernel sizes of the two convolutions (`fr_kernel_sizes = [7, 5]`).
pub const KERNELS: [usize; 2] = [7, 5];
/// Output channels of the two convolutions (`fr_channels = [128, 64]`).
pub const CHANNELS: [usize; 2] = [128, 64];

/// The regression CNN for a transform type `T` ([`crate::geometry::AffineTheta`] or
/// [`crate::geometry::TpsTheta`]): an affine head cannot produce a TPS θ.
#[derive(Module, Debug)]
pub struct FeatureRegression<T: Theta + Send + core::fmt::Debug + 'static> {
    /// 7×7 convolution over the `h·w` correlation channels.
    pub conv1: Conv2d,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm,
    /// 5×5 convolution.
    pub conv2: Conv2d,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm,
    /// Final linear layer to the `T::PARAMS` parameters.
    pub linear: Linear,
    /// Feature-grid side the head was built for.
    pub grid: usize,
    #[module(skip)]
    _theta: PhantomData<T>,
}

impl<T: Theta + Send + core::fmt::Debug + 'static> FeatureRegression<T> {
    /// A randomly initialized head for an `grid × grid` correlation (`grid ≥ 11`).
    pub fn new(grid: usize, device: &Device) -> Result<Self> {
        check_arg(
            grid > KERNELS[0] + KERNELS[1] - 2,
            "FeatureRegression::new",
            "grid",
            || {
                format!(
                    "feature grid {grid}×{grid} is smaller than the 7×7 and 5×5 kernels need (11)"
                )
            },
        )?;
        let spatial = grid + 2 - KERNELS[0] - KERNELS[1];
        Ok(Self {
            conv1: Conv2dConfig::new([grid * grid, CHANNELS[0]], [KERNELS[0]; 2]).init(device),
            bn1: BatchNormConfig::new(CHANNELS[0]).init(device),
            conv2: Conv2dConfig::new([CHANNELS[0], CHANNELS[1]], [KERNELS[1]; 2]).init(device),
            bn2: BatchNormConfig::new(CHANNELS[1]).init(device),
            linear: LinearConfig::new(CHANNELS[1] * spatial * spatial, T::PARAMS).init(device),
            grid,
            _theta: PhantomData,
        })
    }

    /// Deliberate deviation (an option, off in the reference): zero the final layer's weights
    /// and set its bias to the identity θ, so that training starts from the identity transform
    /// instead of a random one. Gradients still reach the weights (`∂θ/∂W = x`).
    pub fn identity_init(mut self) -> Self {
        let device = self.linear.weight.device();
        let weight = self.linear.weight.val().zeros_like();
        let bias = Tensor::<1>::from_data(
            burn::tensor::TensorData::new(T::IDENTITY.to_vec(), [T::PARAMS]),
            (&device, weight.dtype()),
        );
        self.linear.weight = burn::module::Param::from_tensor(weight);
        self.linear.bias = Some(burn::module::Param::from_tensor(bias));
        self
    }

    /// θ from a correlation tensor.
    ///
    /// # Shapes
    /// - `corr`: `[batch, grid·grid, grid, grid]`
    /// - output: `T` with `[batch, T::PARAMS]`
    pub fn forward(&self, corr: Tensor<4>) -> Result<T> {
        let g = self.grid;
        check_shape(
            "FeatureRegression::forward",
            "corr",
            &corr.dims(),
            &[Dim::Any("batch"), Dim::Is(g * g), Dim::Is(g), Dim::Is(g)],
        )?;
        let x = conv_bn(&self.conv1, &self.bn1, corr, None, Relu); // [B, 128, g−6, g−6]
        let x = conv_bn(&self.conv2, &self.bn2, x, None, Relu); // [B, 64, g−10, g−10]
        let x = x.flatten::<2>(1, 3); // [B, 64·(g−10)²], (C, H, W) order
        T::new(self.linear.forward(x))
    }
}
