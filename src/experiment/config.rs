//! Experiment files: TOML parsed into our own serde structs (unknown keys rejected), `--set`
//! overrides, and the canonical hash of the resolved configuration.
//!
//! A file says only what differs from the defaults below. Errors name the file, the line and the
//! key (burn's `Config` derive cannot do this: it ignores defaults when loading and accepts
//! unknown keys silently).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::schedule::Schedule;
use crate::backbone::{BackboneKind, BatchNormMode, Trainable};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::eval::Benchmark;
use crate::geometry::ComposeBorder;
use crate::loss::Dilation;
use crate::model::TransformKind;

/// A whole experiment. Defaults: the CPU-sized WeakAlign run on the embedded dataset (about 6
/// minutes of training on 2 cores). Where a default departs from the paper's configuration, the
/// field's documentation says so: 176 px inputs instead of 240, identity-initialized heads,
/// 250 synthetic steps per head instead of 50 epochs, 60 weak steps with lr 1e-5 instead of
/// 15 epochs at 5e-8, a frozen backbone in the weak stage instead of fine-tuning everything.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    /// Name (defaults to the file stem).
    pub name: String,
    /// One line on what the experiment reproduces or ablates.
    pub description: String,
    /// Seed of initialization, data order and augmentation.
    pub seed: u64,
    /// Where to train: `"cpu"` (default; left out of the resolved file and the hash, so the
    /// hashes of CPU runs did not change when this key came), `"cuda"`, `"cuda:N"`, `"wgpu"` or
    /// `"wgpu:N"`.
    #[serde(skip_serializing_if = "DeviceChoice::is_cpu")]
    pub device: DeviceChoice,
    /// Architecture.
    pub model: ModelSection,
    /// Datasets.
    pub data: DataSection,
    /// Strong (synthetic) pre-training of the regression heads.
    pub strong: StrongSection,
    /// Weakly-supervised fine-tuning with the inlier loss.
    pub weak: WeakSection,
    /// The inlier count.
    pub loss: LossSection,
    /// Validation and test evaluation.
    pub eval: EvalSection,
    /// Checkpointing.
    pub checkpoint: CheckpointSection,
    /// Logging.
    pub log: LogSection,
    /// Sweep axes: dotted keys → lists of values (each combination is one run).
    pub sweep: toml::Table,
    /// Where `weakalign exp --launcher slurm` sends the sweep (left out of the resolved file
    /// when unset, and always out of the hash: where a run executes does not change it).
    #[serde(skip_serializing_if = "LauncherSection::is_unset")]
    pub launcher: LauncherSection,
}

/// `[launcher]`: Slurm options for `weakalign exp --launcher slurm` (its flags override them).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LauncherSection {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--gpus-per-task`.
    pub gpus_per_task: Option<u32>,
    /// `--cpus-per-task` (also the task's `RAYON_NUM_THREADS`).
    pub cpus_per_task: Option<u32>,
    /// `--time`: the task's time limit, Slurm's format (`MM`, `HH:MM:SS`, `D-HH:MM:SS`, ...).
    pub time: Option<String>,
    /// `--max-parallel`: at most this many array tasks at once (`%K`).
    pub max_parallel: Option<u32>,
}

impl LauncherSection {
    /// Nothing set.
    pub fn is_unset(&self) -> bool {
        *self == Self::default()
    }
}

/// `[model]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// `vgg16`, `resnet101` or `efficientnet_lite0`.
    pub backbone: BackboneKind,
    /// `affine`, `tps` or `affine_tps`.
    pub transform: TransformKind,
    /// Network input side (paper: 240; default 176 = the smallest with the 11×11 feature grid
    /// the regression head needs, for the CPU budget).
    pub image_size: usize,
    /// Normalize the correlation (ReLU + L2).
    pub normalize_matches: bool,
    /// Load ImageNet weights from `checkpoints/pretrained/`.
    pub pretrained: bool,
    /// Start the heads at the identity θ (deviation; the reference initializes randomly).
    pub identity_init: bool,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            backbone: BackboneKind::EfficientNetLite0,
            transform: TransformKind::AffineTps,
            image_size: 176,
            normalize_matches: true,
            pretrained: true,
            identity_init: true,
        }
    }
}

/// `[data]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Training data: `embedded`, or `caltech-101` (images from `datasets/`).
    pub train: TrainData,
    /// Validation pairs with keypoints: `embedded` or `pf-willow`.
    pub validation: Benchmark,
    /// Test pairs with keypoints: `embedded` or `pf-willow`.
    pub test: Benchmark,
    /// Threads that prepare each batch's samples (0: one per core, for feeding a GPU).
    pub workers: usize,
    /// Batches prepared ahead.
    pub prefetch: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train: TrainData::Embedded,
            validation: Benchmark::Embedded,
            test: Benchmark::Embedded,
            workers: 2,
            prefetch: 2,
        }
    }
}

/// Where training images come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrainData {
    /// The procedural dataset the project generates (`docs/embedded.md`).
    #[serde(rename = "embedded")]
    Embedded,
    /// Caltech-101 images under `datasets/caltech-101/101_ObjectCategories`.
    #[serde(rename = "caltech-101")]
    Caltech101,
}

/// The inlier count of the weak loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InlierCount {
    /// Bilinear (soft) mask: the paper's.
    Soft,
    /// Thresholded (hard) mask with `loss.hard_radius` (ablation).
    Hard,
}

/// `[strong]`: CNNGeometric pre-training on synthetic warps (grid loss), per head.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StrongSection {
    /// Steps per head (0 skips the stage).
    pub steps: usize,
    /// Pairs per batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Learning-rate schedule over the stage: `constant` or `cosine` (to lr/100).
    pub schedule: Schedule,
    /// Random affine translation range (reference 0.5).
    pub random_t: f64,
    /// Random affine scale range (reference 0.5).
    pub random_s: f64,
    /// Random rotation range as a fraction of π (reference 1/6).
    pub random_alpha: f64,
    /// TPS control-point jitter (reference 0.4).
    pub tps_range: f64,
    /// Backbone parameters that train in the strong stages: `frozen` (the reference's CNNGeometric
    /// training, and the default), `all`, or `last:N` blocks. A deliberate extension: training
    /// the backbone on synthetic warps adapts its features to matching, at the risk of fitting the
    /// synthetic pairs. BatchNorm keeps its running statistics either way. Left out of the
    /// resolved file and the hash at its default, so the hashes of runs from before this key did
    /// not change.
    #[serde(skip_serializing_if = "Trainable::is_frozen")]
    pub backbone_trainable: Trainable,
    /// Adam learning rate of those blocks, on the stage's schedule (unset: `lr`). Left out of the
    /// resolved file and the hash when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backbone_lr: Option<f64>,
}

impl Default for StrongSection {
    fn default() -> Self {
        Self {
            steps: 250,
            batch_size: 8,
            lr: 1e-3,
            schedule: Schedule::Constant,
            random_t: 0.5,
            random_s: 0.5,
            random_alpha: 1.0 / 6.0,
            tps_range: 0.4,
            backbone_trainable: Trainable::Frozen,
            backbone_lr: None,
        }
    }
}

/// `[weak]`: fine-tuning with the WeakAlign objective.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WeakSection {
    /// Steps (0 skips the stage).
    pub steps: usize,
    /// Pairs per batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Learning-rate schedule over the stage: `constant` or `cosine` (to lr/100).
    pub schedule: Schedule,
    /// Backbone parameters that train: `frozen`, `all`, or `last:N` blocks.
    pub backbone_trainable: Trainable,
    /// Adam learning rate of the backbone's trainable blocks, on the stage's schedule like `lr`
    /// (unset: `lr`, one rate for every parameter). The reference fine-tunes its whole ResNet-101
    /// at its weak lr 5e-8; with heads at 1e-4 the blocks need a rate of their own. Left out of
    /// the resolved file and the hash when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backbone_lr: Option<f64>,
    /// BatchNorm: `frozen` (running statistics, reference) or `train`.
    pub batch_norm: BatchNormMode,
    /// Caltech-101 weak pairs: crop each image at random as the reference's `ImagePairDataset`
    /// (`true`, the default) or use it whole. Left out of the resolved file and the hash at its
    /// default, so the hashes of runs from before this key did not change.
    #[serde(skip_serializing_if = "is_true")]
    pub random_crop: bool,
    /// Caltech-101 weak pairs: also train on every pair mirrored (both images), doubling the list
    /// as the reference's `pf-pascal-flip/train_pairs.csv` does (`false`, the default: each pair
    /// once, unmirrored). Left out of the resolved file and the hash at its default.
    #[serde(skip_serializing_if = "is_false")]
    pub flip: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for WeakSection {
    fn default() -> Self {
        Self {
            steps: 60,
            batch_size: 8,
            lr: 1e-5,
            schedule: Schedule::Constant,
            backbone_trainable: Trainable::Frozen,
            backbone_lr: None,
            batch_norm: BatchNormMode::Frozen,
            random_crop: true,
            flip: false,
        }
    }
}

/// `[loss]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LossSection {
    /// `soft` (paper) or `hard`.
    pub inlier: InlierCount,
    /// Hard-count tolerance in feature cells.
    pub hard_radius: f64,
    /// Mask dilation: `none`, `cross`, `square`.
    pub dilation: Dilation,
    /// Normalize the inlier count by the mask sum.
    pub normalize: bool,
    /// TPS regularization λ of the mask warp (reference 0.2).
    pub tps_lambda: f64,
    /// Composed-mask border handling: `reference` or `analytic`.
    pub compose_border: ComposeBorder,
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            inlier: InlierCount::Soft,
            hard_radius: 1.0,
            dilation: Dilation::None,
            normalize: true,
            tps_lambda: 0.2,
            compose_border: ComposeBorder::Reference,
        }
    }
}

/// `[eval]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Validate every this many global steps (and at the end of each stage).
    pub every: usize,
    /// PCK threshold α.
    pub alpha: f64,
    /// Validation pairs used (0 = all).
    pub max_validation_pairs: usize,
    /// Test pairs used (0 = all, the default: a benchmark's number is over all its pairs). A cut
    /// for quick checks (the CPU-vs-device agreement on a software GPU, `experiments/agreement.toml`),
    /// spread evenly over the set like the validation cut. Left out of the resolved file and the
    /// hash at its default, so the hashes of runs from before this key did not change.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_test_pairs: usize,
    /// TPS λ for keypoint transfer (reference eval.py: 0).
    pub tps_lambda: f64,
    /// Passes of the affine head when validating and testing (`TwoStage::forward_refined`):
    /// 1, the default, is the paper's model; more refine θ_aff on the source warped by the θ_aff
    /// so far (an extension, not in the reference). Left out of the resolved file and the hash at
    /// its default, so the hashes of runs from before this key did not change.
    #[serde(skip_serializing_if = "is_one")]
    pub affine_passes: usize,
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            every: 100,
            alpha: 0.1,
            max_validation_pairs: 96,
            max_test_pairs: 0,
            tps_lambda: 0.0,
            affine_passes: 1,
        }
    }
}

/// `[checkpoint]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Write a checkpoint every this many steps (and at every stage end).
    pub every: usize,
    /// Most recent checkpoints kept.
    pub keep_last: usize,
    /// Best (validation PCK) checkpoints kept.
    pub keep_best: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        Self {
            every: 50,
            keep_last: 2,
            keep_best: 1,
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Scalars every this many steps.
    pub every: usize,
    /// Warp images every this many steps (0 = never).
    pub images_every: usize,
    /// Progress bar on stderr.
    pub progress: bool,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            every: 5,
            images_every: 100,
            progress: true,
        }
    }
}

impl Default for Experiment {
    fn default() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            seed: 1,
            device: DeviceChoice::Cpu,
            model: ModelSection::default(),
            data: DataSection::default(),
            strong: StrongSection::default(),
            weak: WeakSection::default(),
            loss: LossSection::default(),
            eval: EvalSection::default(),
            checkpoint: CheckpointSection::default(),
            log: LogSection::default(),
            sweep: toml::Table::new(),
            launcher: LauncherSection::default(),
        }
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key written on the line that holds byte `offset`: the nearest `[table]` header
/// above it joined with the key left of `=` (`model.backbone`), or the header itself.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let header_re = regex::Regex::new(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*(#.*)?$")
        .expect("valid regex");
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    if let Some(c) = header_re.captures(line) {
        return Some(c[1].to_string());
    }
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    let table = text[..line_start]
        .lines()
        .rev()
        .find_map(|l| header_re.captures(l).map(|c| c[1].to_string()));
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// 1-based line where `key` (dotted, e.g. `weak.lr`) is set in `text`, if it is.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let code = line.split('#').next().unwrap_or("");
        if code.contains('=') && key_at(text, offset).as_deref() == Some(key) {
            return Some(i + 1);
        }
        offset += line.len();
    }
    None
}

/// Places an error of [`super::resolve::resolve`] (which sees values, not where they were
/// written): a value from `--set` is named as the override, one from a `[sweep]` axis and one
/// from the file get the line that sets it. `overrides` are the `--set` items, `axes` the
/// cell's sweep values (`key=value`).
pub fn locate(error: Error, text: &str, overrides: &[String], axes: &[String]) -> Error {
    let Error::Config {
        file,
        line: None,
        key: Some(key),
        msg,
    } = error
    else {
        return error;
    };
    let set_here = |items: &[String]| {
        items
            .iter()
            .rev()
            .find(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == key))
            .cloned()
    };
    let (line, msg) = if let Some(item) = set_here(overrides) {
        (None, format!("{msg} (from --set {item})"))
    } else if let Some(item) = set_here(axes) {
        let line = line_of_key(text, &format!("sweep.{key}"));
        (line, format!("{msg} (from the [sweep] value {item})"))
    } else {
        (line_of_key(text, &key), msg)
    };
    Error::Config {
        file,
        line,
        key: Some(key),
        msg,
    }
}

fn config_error(
    file: &Path,
    line: Option<usize>,
    key: Option<String>,
    msg: impl Into<String>,
) -> Error {
    Error::Config {
        file: file.to_path_buf(),
        line,
        key,
        msg: msg.into(),
    }
}

/// Parses an experiment file; `overrides` are `dotted.key=value` with TOML values (a bare word
/// is a string). Unknown keys, wrong types and bad overrides are errors naming file, line, key.
pub fn load(path: &Path, overrides: &[String]) -> Result<Experiment> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(path, &text, overrides)
}

/// [`load`] on text already read (`path` is used in messages and for the default name).
pub fn parse(path: &Path, text: &str, overrides: &[String]) -> Result<Experiment> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| line_of(text, s.start));
        config_error(path, line, None, e.message().to_string())
    })?;
    // Unknown keys, wrong types and unknown choices of the file itself, with line and key.
    toml::from_str::<Experiment>(text).map_err(|e| {
        let span = e.span();
        config_error(
            path,
            span.clone().map(|s| line_of(text, s.start)),
            span.and_then(|s| key_at(text, s.start)),
            e.message().to_string(),
        )
    })?;
    // Each override is checked as it is applied, so an error names its key.
    for o in overrides {
        let key = apply_override(path, &mut table, o)?;
        table
            .clone()
            .try_into::<Experiment>()
            .map_err(|e: toml::de::Error| {
                config_error(path, None, Some(key), format!("--set {o}: {}", e.message()))
            })?;
    }
    let mut exp: Experiment = table
        .try_into()
        .map_err(|e: toml::de::Error| config_error(path, None, None, e.message().to_string()))?;
    if exp.name.is_empty() {
        exp.name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
    }
    Ok(exp)
}

/// Applies one `a.b.c=value` override and returns its key; the key must exist in the defaults.
pub fn apply_override(path: &Path, table: &mut toml::Table, item: &str) -> Result<String> {
    let (key, raw) = item.split_once('=').ok_or_else(|| {
        config_error(path, None, None, format!("--set {item}: expects KEY=VALUE"))
    })?;
    let key = key.trim();
    if key.is_empty() {
        return Err(config_error(
            path,
            None,
            None,
            format!("--set {item}: the key is empty (expects KEY=VALUE)"),
        ));
    }
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    // Every key, including those the defaults leave out of files (`device`, `launcher`,
    // `strong.backbone_trainable`, `strong.backbone_lr`, `weak.random_crop`, `weak.flip`,
    // `weak.backbone_lr`, `eval.affine_passes`, `eval.max_test_pairs`).
    let all_keys = Experiment {
        device: DeviceChoice::Cuda(0),
        launcher: LauncherSection {
            partition: Some(String::new()),
            gpus_per_task: Some(0),
            cpus_per_task: Some(0),
            time: Some(String::new()),
            max_parallel: Some(0),
        },
        strong: StrongSection {
            backbone_trainable: Trainable::All,
            backbone_lr: Some(0.0),
            ..StrongSection::default()
        },
        weak: WeakSection {
            random_crop: false,
            flip: true,
            backbone_lr: Some(0.0),
            ..WeakSection::default()
        },
        eval: EvalSection {
            affine_passes: 2,
            max_test_pairs: 1,
            ..EvalSection::default()
        },
        ..Experiment::default()
    };
    let defaults = toml::Table::try_from(all_keys).expect("defaults serialize");
    let parts: Vec<&str> = key.split('.').collect();
    let mut probe = &defaults;
    for (i, part) in parts.iter().enumerate() {
        let known = probe.get(*part);
        match known {
            Some(toml::Value::Table(t)) if i + 1 < parts.len() && *part != "sweep" => probe = t,
            Some(_) if i + 1 == parts.len() => {}
            _ if parts[0] == "sweep" => break,
            _ => {
                return Err(config_error(
                    path,
                    None,
                    Some(key.into()),
                    format!("--set: unknown key `{key}`"),
                ));
            }
        }
    }
    let mut node = table;
    for part in &parts[..parts.len() - 1] {
        node = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| {
                config_error(
                    path,
                    None,
                    Some(key.into()),
                    format!("--set: `{part}` is not a table"),
                )
            })?;
    }
    node.insert(parts[parts.len() - 1].to_string(), value);
    Ok(key.to_string())
}

impl Experiment {
    /// The resolved configuration as TOML (every default explicit).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("experiments serialize")
    }

    /// Canonical hash of the resolved configuration (without `name`, `description`, `sweep` and
    /// `launcher`), 16 hex digits of SHA-256.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let mut canonical = self.clone();
        canonical.name.clear();
        canonical.description.clear();
        canonical.sweep = toml::Table::new();
        canonical.launcher = LauncherSection::default();
        let text = toml::to_string(&canonical).expect("experiments serialize");
        let digest = sha2::Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The hash of what the strong stages read: the configuration with the `[weak]` table and the
    /// inlier-count keys of `[loss]` (`inlier`, `hard_radius`, `dilation`, `normalize`) at their
    /// defaults. Two runs with the same value train the same strong stages, bit for bit on one
    /// device with one thread count, whatever their weak stages ([`super::fork`]). Everything
    /// else counts, even keys the strong stages may not read (`loss.compose_border`): a wrongly
    /// unequal value costs a retraining, a wrongly equal one would be a wrong result.
    pub fn strong_stages_hash(&self) -> String {
        let defaults = LossSection::default();
        Experiment {
            weak: WeakSection::default(),
            loss: LossSection {
                inlier: defaults.inlier,
                hard_radius: defaults.hard_radius,
                dilation: defaults.dilation,
                normalize: defaults.normalize,
                ..self.loss.clone()
            },
            ..self.clone()
        }
        .hash()
    }

    /// The hash ignoring the seed: runs that differ only in seed share it (a sweep cell).
    pub fn cell_hash(&self) -> String {
        Experiment {
            seed: 0,
            ..self.clone()
        }
        .hash()
    }
}

/// The overrides one value of the sweep axis `key` stands for: `key=value`; or, where the value
/// is a table, each of its (dotted) keys — a variant that changes several keys at once, or none
/// (`{}`: the base), so that an axis `variant = [{}, { "loss.inlier" = "hard" }, ...]` gives an
/// ablation table with one knob per row instead of a product of axes.
fn sweep_overrides(key: &str, value: &toml::Value) -> Vec<String> {
    fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in table {
            let dotted = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => flatten(&dotted, inner, out),
                v => out.push(format!("{dotted}={v}")),
            }
        }
    }
    match value {
        toml::Value::Table(table) => {
            let mut out = Vec::new();
            flatten("", table, &mut out);
            out
        }
        v => vec![format!("{key}={v}")],
    }
}

/// Expands the `[sweep]` axes into one experiment per combination (in axis order), each with the
/// axes applied as overrides (a table value applies each of its keys, see `sweep_overrides`);
/// without axes, the experiment itself.
pub fn expand_sweep(
    path: &Path,
    text: &str,
    base_overrides: &[String],
) -> Result<Vec<(Experiment, Vec<String>)>> {
    let base = parse(path, text, base_overrides)?;
    let mut cells: Vec<Vec<String>> = vec![Vec::new()];
    for (key, values) in &base.sweep {
        let dotted = format!("sweep.{key}");
        let line = line_of_key(text, &dotted);
        let list = values.as_array().ok_or_else(|| {
            config_error(
                path,
                line,
                Some(dotted.clone()),
                format!("{values}: a sweep axis must be a list of values"),
            )
        })?;
        if list.is_empty() {
            return Err(config_error(
                path,
                line,
                Some(dotted),
                "an empty sweep axis runs nothing: give at least one value or remove the axis",
            ));
        }
        cells = cells
            .into_iter()
            .flat_map(|prefix| {
                list.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.extend(sweep_overrides(key, v));
                    c
                })
            })
            .collect();
    }
    cells
        .into_iter()
        .map(|axes| {
            let mut overrides = base_overrides.to_vec();
            overrides.extend(axes.iter().cloned());
            Ok((parse(path, text, &overrides)?, axes))
        })
        .collect()
}

/// Paths the runner uses, relative to the project root.
#[derive(Clone, Debug)]
pub struct Roots {
    /// `runs/`.
    pub runs: PathBuf,
    /// `checkpoints/`.
    pub checkpoints: PathBuf,
    /// `datasets/`.
    pub datasets: PathBuf,
    /// `checkpoints/pretrained/` (ImageNet weights).
    pub pretrained: PathBuf,
}

impl Roots {
    /// The folders under a project root.
    pub fn under(root: &Path) -> Self {
        Self {
            runs: root.join("runs"),
            checkpoints: root.join("checkpoints"),
            datasets: root.join("datasets"),
            pretrained: root.join(crate::weights::PRETRAINED_DIR),
        }
    }
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            runs: "runs".into(),
            checkpoints: "checkpoints".into(),
            datasets: "datasets".into(),
            pretrained: crate::weights::PRETRAINED_DIR.into(),
        }
    }
}
