//! Siamese feature extraction: a truncated ImageNet CNN applied to both images.
//!
//! Every backbone maps a `[batch, 3, 240, 240]` image to a 15×15 feature grid (stride 16):
//!
//! | backbone | cut | output for 240×240 | input normalization |
//! |---|---|---|---|
//! | VGG-16 | after `pool4` | `[B, 512, 15, 15]` | ImageNet mean/std |
//! | ResNet-101 | after `layer3` (conv4_23) | `[B, 1024, 15, 15]` | ImageNet mean/std |
//! | EfficientNet-Lite0 | after `_blocks.10` | `[B, 112, 15, 15]` | mean = std = 0.5 |
//!
//! ## Reference
//! weakalign: `model/cnn_geometric_model.py` `FeatureExtraction` (weakalign-reference §2).

pub mod conv;
pub mod efficientnet;
pub mod norm;
pub mod pool;
pub mod resnet;
pub mod vgg16;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use efficientnet::{EfficientNetLite0, EfficientNetLite0Classifier};
pub use resnet::ResNet101;
pub use vgg16::Vgg16;

/// Which CNN extracts the features. Its names in files and on the command line are the serde
/// names below ([`crate::choice`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackboneKind {
    /// VGG-16 up to `pool4`.
    #[serde(rename = "vgg16")]
    Vgg16,
    /// ResNet-101 up to `layer3`.
    #[serde(rename = "resnet101")]
    ResNet101,
    /// EfficientNet-Lite0 up to `_blocks.10` (the only ImageNet weights reachable offline).
    #[serde(rename = "efficientnet_lite0")]
    EfficientNetLite0,
}

/// Per-channel input normalization `x = (x/255 − mean) / std` (RGB).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// Channel means on the `[0, 1]` scale.
    pub mean: [f64; 3],
    /// Channel standard deviations on the `[0, 1]` scale.
    pub std: [f64; 3],
}

/// ImageNet statistics of torchvision's VGG/ResNet (weakalign: `image/normalization.py`).
pub const IMAGENET: Normalization = Normalization {
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

/// EfficientNet-Lite's normalization: mean = std = 0.5 (inputs in `[-1, 1]`).
pub const HALF: Normalization = Normalization {
    mean: [0.5; 3],
    std: [0.5; 3],
};

impl BackboneKind {
    /// The input normalization the backbone's weights were trained with.
    pub fn normalization(self) -> Normalization {
        match self {
            BackboneKind::Vgg16 | BackboneKind::ResNet101 => IMAGENET,
            BackboneKind::EfficientNetLite0 => HALF,
        }
    }

    /// Feature channels.
    pub fn channels(self) -> usize {
        match self {
            BackboneKind::Vgg16 => vgg16::CHANNELS,
            BackboneKind::ResNet101 => resnet::CHANNELS,
            BackboneKind::EfficientNetLite0 => efficientnet::CHANNELS,
        }
    }

    /// Feature-grid side for a square input of side `image_size` (all backbones have stride 16;
    /// VGG's floor pooling and the others' ceil padding agree for multiples of 16).
    pub fn feature_size(self, image_size: usize) -> usize {
        match self {
            BackboneKind::Vgg16 => image_size / 16,
            BackboneKind::ResNet101 => image_size.div_ceil(16),
            BackboneKind::EfficientNetLite0 => image_size.div_ceil(16),
        }
    }

    /// Its name in files and on the command line (`"resnet101"`).
    pub fn name(self) -> String {
        crate::choice::name(&self)
    }

    /// A randomly initialized backbone of this kind.
    pub fn init(self, device: &Device) -> Backbone {
        match self {
            BackboneKind::Vgg16 => Backbone::Vgg16(Vgg16::new(device)),
            BackboneKind::ResNet101 => Backbone::ResNet101(ResNet101::new(device)),
            BackboneKind::EfficientNetLite0 => Backbone::EfficientNetLite0(EfficientNetLite0::new(
                efficientnet::BACKBONE_BLOCKS,
                device,
            )),
        }
    }
}

/// Which backbone parameters receive gradients. Named `"frozen"`, `"all"` or `"last:N"` in files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Trainable {
    /// None: the backbone is a fixed feature extractor (the reference's strong training).
    #[default]
    Frozen,
    /// The last `n` blocks (VGG: convolutions; ResNet: bottlenecks; EfficientNet: MBConv blocks).
    LastBlocks(usize),
    /// Everything (the reference's weak training, `fe_finetune_params=['']`).
    All,
}

/// BatchNorm behaviour during training (`"frozen"` or `"train"` in files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchNormMode {
    /// Running statistics are used and never updated; γ/β still train where trainable
    /// (the reference's `model.eval()` during weak training).
    #[default]
    Frozen,
    /// Batch statistics in training, running statistics updated.
    Train,
}

impl Trainable {
    /// No backbone parameter trains.
    pub fn is_frozen(&self) -> bool {
        *self == Trainable::Frozen
    }
}

impl TryFrom<String> for Trainable {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "frozen" => Ok(Trainable::Frozen),
            "all" => Ok(Trainable::All),
            other => other
                .strip_prefix("last:")
                .and_then(|n| n.parse().ok())
                .map(Trainable::LastBlocks)
                .ok_or_else(|| format!("{other:?}: use \"frozen\", \"all\" or \"last:N\"")),
        }
    }
}

impl From<Trainable> for String {
    fn from(t: Trainable) -> String {
        match t {
            Trainable::Frozen => "frozen".into(),
            Trainable::All => "all".into(),
            Trainable::LastBlocks(n) => format!("last:{n}"),
        }
    }
}

/// A feature-extraction backbone.
#[derive(Module, Debug)]
#[allow(missing_docs)]
#[allow(clippy::large_enum_variant)] // one backbone per model; boxing would only add indirection
pub enum Backbone {
    Vgg16(Vgg16),
    ResNet101(ResNet101),
    EfficientNetLite0(EfficientNetLite0),
}

impl Backbone {
    /// The kind of this backbone.
    pub fn kind(&self) -> BackboneKind {
        match self {
            Backbone::Vgg16(_) => BackboneKind::Vgg16,
            Backbone::ResNet101(_) => BackboneKind::ResNet101,
            Backbone::EfficientNetLite0(_) => BackboneKind::EfficientNetLite0,
        }
    }

    /// Features of a batch of normalized images.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, h, w]`, normalized with [`BackboneKind::normalization`]
    /// - output: `[batch, channels, h/16, w/16]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        match self {
            Backbone::Vgg16(m) => m.forward(images),
            Backbone::ResNet101(m) => m.forward(images),
            Backbone::EfficientNetLite0(m) => m.forward(images),
        }
    }

    /// Applies the BatchNorm mode and the choice of trainable parameters.
    pub fn configure(self, batch_norm: BatchNormMode, trainable: Trainable) -> Self {
        let module = match batch_norm {
            // `freeze` disables the BN training flags (running statistics used, not updated);
            // `set_require_grad` then decides which tensors train.
            BatchNormMode::Frozen => self.freeze(),
            BatchNormMode::Train => self,
        };
        match trainable {
            Trainable::Frozen => module.set_require_grad(false),
            Trainable::All => module.set_require_grad(true),
            Trainable::LastBlocks(n) => module.set_require_grad(false).unfreeze_last(n),
        }
    }

    fn unfreeze_last(self, n: usize) -> Self {
        fn tail<M: Module>(items: Vec<&mut M>, n: usize) {
            let len = items.len();
            for item in items.into_iter().skip(len.saturating_sub(n)) {
                let m = std::mem::replace(item, item.clone());
                *item = m.set_require_grad(true);
            }
        }
        match self {
            Backbone::Vgg16(mut m) => {
                tail(m.convs_mut().into_iter().collect(), n);
                Backbone::Vgg16(m)
            }
            Backbone::ResNet101(mut m) => {
                tail(m.blocks_mut().collect(), n);
                Backbone::ResNet101(m)
            }
            Backbone::EfficientNetLite0(mut m) => {
                tail(m.blocks.iter_mut().collect(), n);
                Backbone::EfficientNetLite0(m)
            }
        }
    }
}
