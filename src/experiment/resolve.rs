//! Resolution: the parsed [`Experiment`] checked across fields and turned into typed choices.
//! Every user error surfaces here, before any tensor exists.

use std::path::Path;

use super::config::Experiment;
use crate::backbone::{BackboneKind, BatchNormMode, Trainable};
use crate::error::{Error, Result};
use crate::geometry::ComposeBorder;
use crate::loss::{Dilation, InlierConfig, InlierKind};

/// Which transforms the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransformKind {
    /// Affine only (stage 1).
    Affine,
    /// TPS only (the TPS head on the unwarped pair).
    Tps,
    /// The two-stage affine → TPS model.
    AffineTps,
}

/// Typed, validated choices of an experiment.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Backbone.
    pub backbone: BackboneKind,
    /// Transforms.
    pub transform: TransformKind,
    /// Inlier count of the weak loss.
    pub inlier: InlierConfig,
    /// Which backbone parameters train in the weak stage.
    pub weak_trainable: Trainable,
    /// BatchNorm mode in the weak stage.
    pub weak_batch_norm: BatchNormMode,
}

fn bad(file: &Path, key: &str, msg: impl Into<String>) -> Error {
    Error::Config {
        file: file.to_path_buf(),
        line: None,
        key: Some(key.into()),
        msg: msg.into(),
    }
}

fn choice<T: Copy>(file: &Path, key: &str, value: &str, options: &[(&str, T)]) -> Result<T> {
    options
        .iter()
        .find(|(n, _)| *n == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            bad(file, key, format!("{value:?} is not one of {names:?}"))
        })
}

/// Checks `exp` and resolves its enumerations (`file` names the source in errors).
pub fn resolve(exp: &Experiment, file: &Path) -> Result<Resolved> {
    let backbone = choice(
        file,
        "model.backbone",
        &exp.model.backbone,
        &[
            ("vgg16", BackboneKind::Vgg16),
            ("resnet101", BackboneKind::ResNet101),
            ("efficientnet_lite0", BackboneKind::EfficientNetLite0),
        ],
    )?;
    let transform = choice(
        file,
        "model.transform",
        &exp.model.transform,
        &[
            ("affine", TransformKind::Affine),
            ("tps", TransformKind::Tps),
            ("affine_tps", TransformKind::AffineTps),
        ],
    )?;
    let s = exp.model.image_size;
    if !s.is_multiple_of(16) || backbone.feature_size(s) < 11 {
        return Err(bad(
            file,
            "model.image_size",
            format!("{s}: must be a multiple of 16 and at least 176 (11×11 features)"),
        ));
    }
    for (key, v) in [
        ("strong.batch_size", exp.strong.batch_size),
        ("weak.batch_size", exp.weak.batch_size),
    ] {
        if v == 0 {
            return Err(bad(file, key, "must be ≥ 1"));
        }
    }
    for (key, v) in [("strong.lr", exp.strong.lr), ("weak.lr", exp.weak.lr)] {
        if !(v.is_finite() && v > 0.0) {
            return Err(bad(file, key, format!("{v}: must be finite and > 0")));
        }
    }
    for (key, v) in [
        ("strong.schedule", &exp.strong.schedule),
        ("weak.schedule", &exp.weak.schedule),
    ] {
        if v != "constant" && v != "cosine" {
            return Err(bad(
                file,
                key,
                format!("{v:?} is not one of [\"constant\", \"cosine\"]"),
            ));
        }
    }
    if !(exp.eval.alpha > 0.0 && exp.eval.alpha <= 1.0) {
        return Err(bad(
            file,
            "eval.alpha",
            format!("{}: must be in (0, 1]", exp.eval.alpha),
        ));
    }
    for (key, v) in [
        ("eval.every", exp.eval.every),
        ("checkpoint.every", exp.checkpoint.every),
        ("log.every", exp.log.every),
    ] {
        if v == 0 {
            return Err(bad(file, key, "must be ≥ 1"));
        }
    }
    if exp.checkpoint.keep_last == 0 {
        return Err(bad(file, "checkpoint.keep_last", "must be ≥ 1"));
    }
    for (key, v) in [
        ("loss.tps_lambda", exp.loss.tps_lambda),
        ("eval.tps_lambda", exp.eval.tps_lambda),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(bad(file, key, format!("{v}: must be finite and ≥ 0")));
        }
    }
    for (key, v) in [
        ("data.train", &exp.data.train),
        ("data.validation", &exp.data.validation),
        ("data.test", &exp.data.test),
    ] {
        let ok: &[&str] = if key == "data.train" {
            &["embedded", "caltech-101"]
        } else {
            &["embedded", "pf-willow"]
        };
        if !ok.contains(&v.as_str()) {
            return Err(bad(file, key, format!("{v:?} is not one of {ok:?}")));
        }
    }
    let kind = match exp.loss.inlier.as_str() {
        "soft" => InlierKind::Soft,
        "hard" if exp.loss.hard_radius.is_finite() && exp.loss.hard_radius > 0.0 => {
            InlierKind::Hard {
                radius: exp.loss.hard_radius,
            }
        }
        "hard" => return Err(bad(file, "loss.hard_radius", "must be finite and > 0")),
        other => {
            return Err(bad(
                file,
                "loss.inlier",
                format!("{other:?} is not one of [\"soft\", \"hard\"]"),
            ));
        }
    };
    let dilation = choice(
        file,
        "loss.dilation",
        &exp.loss.dilation,
        &[
            ("none", Dilation::None),
            ("cross", Dilation::Cross),
            ("square", Dilation::Square),
        ],
    )?;
    let compose_border = choice(
        file,
        "loss.compose_border",
        &exp.loss.compose_border,
        &[
            ("reference", ComposeBorder::Reference),
            ("analytic", ComposeBorder::Analytic),
        ],
    )?;
    let weak_trainable = match exp.weak.backbone_trainable.as_str() {
        "frozen" => Trainable::Frozen,
        "all" => Trainable::All,
        other => match other.strip_prefix("last:").and_then(|n| n.parse().ok()) {
            Some(n) => Trainable::LastBlocks(n),
            None => {
                return Err(bad(
                    file,
                    "weak.backbone_trainable",
                    format!("{other:?}: use \"frozen\", \"all\" or \"last:N\""),
                ));
            }
        },
    };
    let weak_batch_norm = choice(
        file,
        "weak.batch_norm",
        &exp.weak.batch_norm,
        &[
            ("frozen", BatchNormMode::Frozen),
            ("train", BatchNormMode::Train),
        ],
    )?;
    let inlier = InlierConfig {
        kind,
        dilation,
        normalize: exp.loss.normalize,
        compose_border,
        ..InlierConfig::default()
    };
    Ok(Resolved {
        backbone,
        transform,
        inlier,
        weak_trainable,
        weak_batch_norm,
    })
}
