//! VGG-16 truncated after `pool4` (torchvision `vgg16().features[:24]`).
//!
//! Output for a 240×240 input: `[batch, 512, 15, 15]` (stride 16). Features are post-ReLU and
//! post-max-pool, hence non-negative.
//!
//! ## Reference
//! Simonyan & Zisserman 2015; weakalign: `model/cnn_geometric_model.py` `FeatureExtraction`
//! (`vgg`, children `[0..23]`), weakalign-reference §2.

use super::conv;
use super::conv::Activation::Relu;
use super::pool::max_pool2d;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::{Device, Tensor};

/// Output channels of the truncated network.
pub const CHANNELS: usize = 512;

/// Our field name and torchvision's `features.{index}` for each convolution, in order.
pub const CONV_LAYERS: [(&str, usize); 10] = [
    ("conv1_1", 0),
    ("conv1_2", 2),
    ("conv2_1", 5),
    ("conv2_2", 7),
    ("conv3_1", 10),
    ("conv3_2", 12),
    ("conv3_3", 14),
    ("conv4_1", 17),
    ("conv4_2", 19),
    ("conv4_3", 21),
];

/// VGG-16 convolutions 1_1 … 4_3 with the four max-pools.
#[derive(Module, Debug)]
#[allow(missing_docs)]
pub struct Vgg16 {
    pub conv1_1: Conv2d,
    pub conv1_2: Conv2d,
    pub conv2_1: Conv2d,
    pub conv2_2: Conv2d,
    pub conv3_1: Conv2d,
    pub conv3_2: Conv2d,
    pub conv3_3: Conv2d,
    pub conv4_1: Conv2d,
    pub conv4_2: Conv2d,
    pub conv4_3: Conv2d,
    pub pool: MaxPool2d,
}

fn conv3x3(cin: usize, cout: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

impl Vgg16 {
    /// A randomly initialized network (load weights with [`crate::weights`]).
    pub fn new(device: &Device) -> Self {
        Self {
            conv1_1: conv3x3(3, 64, device),
            conv1_2: conv3x3(64, 64, device),
            conv2_1: conv3x3(64, 128, device),
            conv2_2: conv3x3(128, 128, device),
            conv3_1: conv3x3(128, 256, device),
            conv3_2: conv3x3(256, 256, device),
            conv3_3: conv3x3(256, 256, device),
            conv4_1: conv3x3(256, 512, device),
            conv4_2: conv3x3(512, 512, device),
            conv4_3: conv3x3(512, 512, device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        }
    }

    /// The convolutions in network order (for choosing which ones train).
    pub fn convs_mut(&mut self) -> [&mut Conv2d; 10] {
        [
            &mut self.conv1_1,
            &mut self.conv1_2,
            &mut self.conv2_1,
            &mut self.conv2_2,
            &mut self.conv3_1,
            &mut self.conv3_2,
            &mut self.conv3_3,
            &mut self.conv4_1,
            &mut self.conv4_2,
            &mut self.conv4_3,
        ]
    }

    /// # Shapes
    /// - `images`: `[batch, 3, h, w]`, ImageNet-normalized
    /// - output: `[batch, 512, h/16, w/16]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let x = conv::forward_then(&self.conv1_1, images, Relu);
        let x = max_pool2d(&self.pool, conv::forward_then(&self.conv1_2, x, Relu)); // [B, 64, h/2, w/2]
        let x = conv::forward_then(&self.conv2_1, x, Relu);
        let x = max_pool2d(&self.pool, conv::forward_then(&self.conv2_2, x, Relu)); // [B, 128, h/4, w/4]
        let x = conv::forward_then(&self.conv3_1, x, Relu);
        let x = conv::forward_then(&self.conv3_2, x, Relu);
        let x = max_pool2d(&self.pool, conv::forward_then(&self.conv3_3, x, Relu)); // [B, 256, h/8, w/8]
        let x = conv::forward_then(&self.conv4_1, x, Relu);
        let x = conv::forward_then(&self.conv4_2, x, Relu);
        max_pool2d(&self.pool, conv::forward_then(&self.conv4_3, x, Relu)) // [B, 512, h/16, w/16]
    }
}
