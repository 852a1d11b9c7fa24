//! A trained model with the configuration it came from: one of our checkpoints (its
//! `config.toml` is covered by the same resolution as a fresh run) or the authors' two-stage
//! checkpoint converted with `tools/convert_checkpoint.py`.

use std::path::{Path, PathBuf};

use super::checkpoint::{CONFIG, MODEL, latest_valid, step_dir, verify};
use super::config::{Experiment, ModelSection, Roots};
use super::resolve::{Resolved, resolve};
use super::runner::run_paths;
use super::stage::{plan, total_steps};
use burn::module::Module;

use crate::backbone::BackboneKind;
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::eval::Subject;
use crate::model::TwoStage;

/// An inference model and where it came from.
pub struct Trained {
    /// The model (inference device).
    pub model: TwoStage,
    /// Its configuration.
    pub resolved: Resolved,
    /// The checkpoint's step folder, or the official file.
    pub source: PathBuf,
    /// Global steps the checkpoint had completed (`None` for the official file).
    pub step: Option<u64>,
    /// Things the user should know (a skipped damaged checkpoint, unused keys).
    pub warnings: Vec<String>,
}

impl Trained {
    /// The model as an evaluation subject.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            model: &self.model,
            norm: self.resolved.normalization(),
            checkpoint: &self.source,
            experiment: &self.resolved.experiment.name,
        }
    }

    /// Where `weakalign eval` writes its reports unless told: `runs/<experiment>/<hash>/eval` for
    /// the run's final checkpoint (and the official file), where `weakalign compare` reads them;
    /// `…/eval/step-N` for an earlier checkpoint, so that evaluating one never replaces the
    /// final checkpoint's reports.
    pub fn eval_dir(&self) -> PathBuf {
        let (run, _) = run_paths(&self.resolved, &Roots::default());
        let dir = run.join("eval");
        match self.step {
            Some(step) if step != total_steps(&plan(&self.resolved)) => step_dir(&dir, step),
            _ => dir,
        }
    }
}

/// Loads one of our checkpoints onto `device`: `path` is a step folder, its `model.bpk`, or a
/// run's checkpoint folder (its newest valid step).
pub fn load_checkpoint(path: &Path, device: DeviceChoice) -> Result<Trained> {
    let device = device.inference()?;
    let bad = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let mut warnings = Vec::new();
    let dir = if path.is_file() {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    } else if path.join(MODEL).is_file() {
        path.to_path_buf()
    } else if path.is_dir() {
        latest_valid(path, |w| warnings.push(w))
            .map(|(d, _)| d)
            .ok_or_else(|| bad("no valid checkpoint in this folder".into()))?
    } else {
        return Err(bad("no such checkpoint (give a step-N folder, its model.bpk, or a run's checkpoint folder)".into()));
    };
    let state =
        verify(&dir).map_err(|why| bad(format!("invalid checkpoint {}: {why}", dir.display())))?;
    let config = dir.join(CONFIG);
    let resolved = resolve(&super::config::load(&config, &[])?, &config)?;
    let mut model = resolved.model.init_two_stage(&crate::device::inference())?;
    crate::weights::load_record(&mut model, &dir.join(MODEL))?;
    Ok(Trained {
        model: model.to_device(&device),
        resolved,
        source: dir,
        step: Some(state.step),
        warnings,
    })
}

/// Loads the authors' two-stage model (`file`: converted to safetensors) with its `backbone` onto
/// `device`; it is described as the experiment `official` at the authors' 240 px.
pub fn load_official(file: &Path, backbone: BackboneKind, device: DeviceChoice) -> Result<Trained> {
    let device = device.inference()?;
    let exp = Experiment {
        name: "official".into(),
        model: ModelSection {
            backbone,
            image_size: 240, // the authors' models
            ..ModelSection::default()
        },
        ..Experiment::default()
    };
    let resolved = resolve(&exp, file)?;
    let mut model = resolved.model.init_two_stage(&crate::device::inference())?;
    let report = crate::weights::load_official_two_stage(&mut model, file)?;
    let warnings = if report.unexpected.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "{} keys of {} were not used: {:?}",
            report.unexpected.len(),
            file.display(),
            report.unexpected
        )]
    };
    Ok(Trained {
        model: model.to_device(&device),
        resolved,
        source: file.to_path_buf(),
        step: None,
        warnings,
    })
}
