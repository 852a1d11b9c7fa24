//! ResNet-101 up to `layer3` (the paper's `conv4_23`).
//!
//! Output for a 240×240 input: `[batch, 1024, 15, 15]` (conv1 /2, maxpool /2, layer2 /2,
//! layer3 /2). torchvision's v1.5 layout: the stride sits on the 3×3 convolution.
//!
//! ## Reference
//! He et al. 2016; weakalign: `model/cnn_geometric_model.py` `FeatureExtraction`
//! (`resnet101`, `last_layer='layer3'`), weakalign-reference §2.

use super::conv::Activation::{Identity, Relu};
use super::norm::conv_bn;
use super::pool::max_pool2d;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

/// Output channels of the truncated network.
pub const CHANNELS: usize = 1024;

/// Bottleneck blocks per stage: layer1, layer2, layer3 (layer4 is not used).
pub const BLOCKS: [usize; 3] = [3, 4, 23];

/// The 1×1 projection of a stage's first block (torchvision `downsample.0` / `downsample.1`).
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// A bottleneck block: 1×1 reduce, 3×3 (strided), 1×1 expand ×4, plus the identity or
/// projection shortcut.
///
/// Fields are declared in the order `forward` first uses them (the shortcut first): parameters
/// are drawn lazily, so this makes module order and first-use order agree, and an explicit
/// initialization ([`crate::model::materialize`]) draws what a lazy CPU run draws.
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub struct Bottleneck {
    pub downsample: Option<Downsample>,
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Conv2d,
    pub bn3: BatchNorm,
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c).init(device)
}

impl Bottleneck {
    fn new(cin: usize, width: usize, stride: usize, device: &Device) -> Self {
        let cout = 4 * width;
        let downsample = (stride != 1 || cin != cout).then(|| Downsample {
            conv: conv(cin, cout, 1, stride, device),
            bn: bn(cout, device),
        });
        Self {
            conv1: conv(cin, width, 1, 1, device),
            bn1: bn(width, device),
            conv2: conv(width, width, 3, stride, device),
            bn2: bn(width, device),
            conv3: conv(width, cout, 1, 1, device),
            bn3: bn(cout, device),
            downsample,
        }
    }

    /// # Shapes
    /// - `x`: `[batch, c_in, h, w]`
    /// - output: `[batch, 4·width, h/stride, w/stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(d) => conv_bn(&d.conv, &d.bn, x.clone(), None, Identity),
            None => x.clone(),
        };
        let y = conv_bn(&self.conv1, &self.bn1, x, None, Relu);
        let y = conv_bn(&self.conv2, &self.bn2, y, None, Relu);
        conv_bn(&self.conv3, &self.bn3, y, Some(shortcut), Relu)
    }
}

/// ResNet-101 stem, layer1, layer2 and layer3.
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub struct ResNet101 {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<Bottleneck>,
    pub layer2: Vec<Bottleneck>,
    pub layer3: Vec<Bottleneck>,
}

impl ResNet101 {
    /// A randomly initialized network (load weights with [`crate::weights`]).
    pub fn new(device: &Device) -> Self {
        let stage = |cin: usize, width: usize, blocks: usize, stride: usize| -> Vec<Bottleneck> {
            (0..blocks)
                .map(|i| {
                    let cin = if i == 0 { cin } else { 4 * width };
                    Bottleneck::new(cin, width, if i == 0 { stride } else { 1 }, device)
                })
                .collect()
        };
        Self {
            conv1: conv(3, 64, 7, 2, device),
            bn1: bn(64, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1: stage(64, 64, BLOCKS[0], 1),
            layer2: stage(256, 128, BLOCKS[1], 2),
            layer3: stage(512, 256, BLOCKS[2], 2),
        }
    }

    /// All bottleneck blocks in network order (for choosing which ones train).
    pub fn blocks_mut(&mut self) -> impl Iterator<Item = &mut Bottleneck> {
        self.layer1
            .iter_mut()
            .chain(&mut self.layer2)
            .chain(&mut self.layer3)
    }

    /// # Shapes
    /// - `images`: `[batch, 3, h, w]`, ImageNet-normalized
    /// - output: `[batch, 1024, h/16, w/16]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let x = conv_bn(&self.conv1, &self.bn1, images, None, Relu); // [B, 64, h/2, w/2]
        let mut x = max_pool2d(&self.maxpool, x); // [B, 64, h/4, w/4]
        for block in self.layer1.iter().chain(&self.layer2).chain(&self.layer3) {
            x = block.forward(x);
        }
        x // [B, 1024, h/16, w/16]
    }
}
