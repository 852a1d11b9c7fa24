//! Resolution: the parsed [`Experiment`] checked across fields and turned into the one
//! [`Resolved`] value that the runner, the checkpoints, `eval` and `align` all receive. Every
//! user error surfaces here, before any file is written or any tensor exists; nothing after this
//! re-parses a name or re-derives a configuration.

use std::path::{Path, PathBuf};

use super::config::{Experiment, InlierCount, TrainData};
use crate::backbone::Normalization;
use crate::error::{Error, Result};
use crate::loss::{InlierConfig, InlierKind};
use crate::model::{ModelConfig, TransformKind};

/// A checked experiment with everything derived from it.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The experiment (typed; validated).
    pub experiment: Experiment,
    /// The file it was read from (named in messages).
    pub file: PathBuf,
    /// Canonical hash of the configuration ([`Experiment::hash`]).
    pub hash: String,
    /// The hash without the seed: runs differing only in seed share it ([`Experiment::cell_hash`]).
    pub cell_hash: String,
    /// The architecture.
    pub model: ModelConfig,
    /// The inlier count of the weak loss.
    pub inlier: InlierConfig,
    /// Values that are valid but almost certainly wrong (printed before a run starts).
    pub warnings: Vec<String>,
}

impl Resolved {
    /// Which transforms the model predicts.
    pub fn transform(&self) -> TransformKind {
        self.experiment.model.transform
    }

    /// The backbone's input normalization.
    pub fn normalization(&self) -> Normalization {
        self.model.backbone.normalization()
    }
}

/// The range rules that experiment files, `--set` and the command-line flags share (one place:
/// a value is refused the same way wherever it comes from). Each returns the value, or the
/// message: the value and the rule.
pub mod rule {
    /// Finite and in (0, 1] (a PCK threshold α).
    pub fn fraction(v: f64) -> Result<f64, String> {
        check(v, v.is_finite() && v > 0.0 && v <= 1.0, "must be in (0, 1]")
    }

    /// Finite and ≥ 0 (a TPS λ, a random-transform range).
    pub fn non_negative(v: f64) -> Result<f64, String> {
        check(v, v.is_finite() && v >= 0.0, "must be finite and ≥ 0")
    }

    /// Finite and > 0 (a learning rate, a radius).
    pub fn positive(v: f64) -> Result<f64, String> {
        check(v, v.is_finite() && v > 0.0, "must be finite and > 0")
    }

    /// A Slurm time limit: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M` or `D-H:M:S`.
    pub fn slurm_time(t: &str) -> Result<(), String> {
        let re = regex::Regex::new(r"^(\d+-)?\d+(:\d{1,2}){0,2}$").expect("valid regex");
        if re.is_match(t) {
            Ok(())
        } else {
            Err(format!(
                "{t:?}: not a Slurm time limit (e.g. 04:00:00 or 1-12:00:00)"
            ))
        }
    }

    /// A Slurm partition name: letters, digits, `_`, `-`, `.` (comma-separated).
    pub fn slurm_name(p: &str) -> Result<(), String> {
        let ok = !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.,".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(format!("{p:?}: not a Slurm partition name"))
        }
    }

    fn check(v: f64, ok: bool, rule: &str) -> Result<f64, String> {
        if ok {
            Ok(v)
        } else {
            Err(format!("{v}: {rule}"))
        }
    }
}

fn bad(file: &Path, key: &str, msg: impl Into<String>) -> Error {
    Error::Config {
        file: file.to_path_buf(),
        line: None,
        key: Some(key.into()),
        msg: msg.into(),
    }
}

/// Checks the numeric ranges of `exp` (`file` names the source in errors).
fn check_ranges(exp: &Experiment, file: &Path) -> Result<()> {
    if !is_plain_name(&exp.name) {
        return Err(bad(
            file,
            "name",
            format!(
                "{:?}: must be a plain folder name (letters, digits, `-`, `_`, `.`, not starting \
                 with `.`): it names the run's folder under `runs/` and `checkpoints/`",
                exp.name
            ),
        ));
    }
    for (key, v) in [
        ("strong.random_t", exp.strong.random_t),
        ("strong.random_s", exp.strong.random_s),
        ("strong.random_alpha", exp.strong.random_alpha),
        ("strong.tps_range", exp.strong.tps_range),
    ] {
        rule::non_negative(v).map_err(|m| bad(file, key, m))?;
    }
    let s = exp.model.image_size;
    if !s.is_multiple_of(16) || exp.model.backbone.feature_size(s) < 11 {
        return Err(bad(
            file,
            "model.image_size",
            format!("{s}: must be a multiple of 16 and at least 176 (11×11 features)"),
        ));
    }
    for (key, v) in [
        ("strong.batch_size", exp.strong.batch_size),
        ("weak.batch_size", exp.weak.batch_size),
        ("eval.every", exp.eval.every),
        ("checkpoint.every", exp.checkpoint.every),
        ("checkpoint.keep_last", exp.checkpoint.keep_last),
        ("log.every", exp.log.every),
        ("eval.affine_passes", exp.eval.affine_passes),
    ] {
        if v == 0 {
            return Err(bad(file, key, format!("{v}: must be ≥ 1")));
        }
    }
    for (key, v) in learning_rates(exp) {
        rule::positive(v).map_err(|m| bad(file, key, m))?;
    }
    for (stage, backbone_lr, trainable) in [
        (
            "strong",
            exp.strong.backbone_lr,
            exp.strong.backbone_trainable,
        ),
        ("weak", exp.weak.backbone_lr, exp.weak.backbone_trainable),
    ] {
        if backbone_lr.is_some() && trainable.is_frozen() {
            return Err(bad(
                file,
                &format!("{stage}.backbone_lr"),
                format!(
                    "no backbone block trains (`{stage}.backbone_trainable = \"frozen\"`); set it \
                     to \"all\" or \"last:N\", or drop this key"
                ),
            ));
        }
    }
    rule::fraction(exp.eval.alpha).map_err(|m| bad(file, "eval.alpha", m))?;
    for (key, v) in [
        ("loss.tps_lambda", exp.loss.tps_lambda),
        ("eval.tps_lambda", exp.eval.tps_lambda),
    ] {
        rule::non_negative(v).map_err(|m| bad(file, key, m))?;
    }
    if exp.loss.inlier == InlierCount::Hard {
        rule::positive(exp.loss.hard_radius).map_err(|m| bad(file, "loss.hard_radius", m))?;
    }
    if let Some(t) = &exp.launcher.time {
        rule::slurm_time(t).map_err(|m| bad(file, "launcher.time", m))?;
    }
    if let Some(p) = &exp.launcher.partition {
        rule::slurm_name(p).map_err(|m| bad(file, "launcher.partition", m))?;
    }
    if exp.data.train != TrainData::Caltech101 {
        for (key, changed) in [
            ("weak.random_crop", !exp.weak.random_crop),
            ("weak.flip", exp.weak.flip),
        ] {
            if changed {
                return Err(bad(
                    file,
                    key,
                    "applies to Caltech-101 weak pairs only (`data.train = \"caltech-101\"`)",
                ));
            }
        }
    }
    for (key, v) in [
        ("data.validation", exp.data.validation),
        ("data.test", exp.data.test),
    ] {
        if !v.trains_with() {
            return Err(bad(
                file,
                key,
                format!("{:?} is not one of [\"embedded\", \"pf-willow\"]", v.name()),
            ));
        }
    }
    Ok(())
}

/// The configuration's Adam learning rates, with their keys.
fn learning_rates(exp: &Experiment) -> Vec<(&'static str, f64)> {
    let mut rates = vec![("strong.lr", exp.strong.lr), ("weak.lr", exp.weak.lr)];
    rates.extend(exp.strong.backbone_lr.map(|v| ("strong.backbone_lr", v)));
    rates.extend(exp.weak.backbone_lr.map(|v| ("weak.backbone_lr", v)));
    rates
}

/// Adam learning rates above this are far outside any useful range for these models (the
/// paper: 1e-3 for the strong stages, 1e-5 or less for the weak one).
const LR_WARNING: f64 = 0.1;

/// Valid values that are almost certainly mistakes: a run with them diverges (exit 3) or
/// collapses to PCK 0, so the user hears about it before it starts.
fn warnings(exp: &Experiment) -> Vec<String> {
    learning_rates(exp)
        .into_iter()
        .filter(|(_, v)| *v > LR_WARNING)
        .map(|(key, v)| {
            format!(
                "`{key}` = {v} is far above a useful Adam learning rate (the paper: 1e-3 strong, \
                 1e-5 weak); expect the loss to diverge or the model to collapse"
            )
        })
        .collect()
}

/// Whether `name` can be a folder name under a root without leaving it (no separators, no `..`,
/// not hidden, not empty, at most 100 characters).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks `exp` and derives the model and loss configuration (`file` names the source in
/// errors).
pub fn resolve(exp: &Experiment, file: &Path) -> Result<Resolved> {
    check_ranges(exp, file)?;
    let model = ModelConfig {
        backbone: exp.model.backbone,
        image_size: exp.model.image_size,
        normalize_features: true,
        normalize_matches: exp.model.normalize_matches,
        identity_init: exp.model.identity_init,
    };
    let kind = match exp.loss.inlier {
        InlierCount::Soft => InlierKind::Soft,
        InlierCount::Hard => InlierKind::Hard {
            radius: exp.loss.hard_radius,
        },
    };
    let inlier = InlierConfig {
        kind,
        dilation: exp.loss.dilation,
        normalize: exp.loss.normalize,
        compose_border: exp.loss.compose_border,
        ..InlierConfig::default()
    };
    Ok(Resolved {
        experiment: exp.clone(),
        file: file.to_path_buf(),
        hash: exp.hash(),
        cell_hash: exp.cell_hash(),
        model,
        inlier,
        warnings: warnings(exp),
    })
}
