//! Crash-safe checkpoints: `checkpoints/<run>/step-<NNNNNNNN>/` holding the model record, the
//! optimizer state and `state.json`, with `manifest.json` (SHA-256 of every file) written last.
//!
//! A checkpoint is written into a temporary directory (every file fsynced), renamed into place,
//! and only then gets its manifest; one without a manifest, or whose files do not match it, is
//! invalid and skipped on resume with a message. Old checkpoints are deleted only after the new
//! one is complete (last `keep_last`, the best `keep_best` by validation PCK, and the one at the end
//! of the strong stages: [`Retention`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// Everything besides tensors that a resume needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Global steps completed.
    pub step: u64,
    /// Best validation PCK so far and its step.
    pub best_pck: Option<f64>,
    /// Step of `best_pck`.
    pub best_step: Option<u64>,
    /// Validation PCK at this checkpoint, if evaluated.
    pub pck: Option<f64>,
    /// Canonical hash of the resolved configuration.
    pub config_hash: String,
    /// Lines of `metrics.jsonl` at this step (resume truncates the file to them).
    pub metrics_lines: u64,
    /// Seed (all data randomness is a pure function of seed, epoch and index).
    pub seed: u64,
}

/// The files of one checkpoint.
pub const MODEL: &str = "model.bpk";
/// Optimizer state (burn's record bytes).
pub const OPTIMIZER: &str = "optimizer.bin";
/// [`TrainState`] as JSON.
pub const STATE: &str = "state.json";
/// The resolved experiment (architecture for `weakalign eval` / `align`).
pub const CONFIG: &str = "config.toml";
/// Where the checkpoint was trained: device, backend, thread counts (a run may reuse a sibling's
/// checkpoint only from the same, see [`super::fork`]).
pub const ENVIRONMENT: &str = "environment.json";
/// Checksums, written last.
pub const MANIFEST: &str = "manifest.json";

fn sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The environment the checkpoint in `dir` was trained in ([`ENVIRONMENT`]); `None` if unreadable.
pub fn environment(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(ENVIRONMENT)).ok()?).ok()
}

/// Directory name of the checkpoint after `step` steps.
pub fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// Writes a checkpoint: `write_files` fills a fresh temporary directory with [`MODEL`] and
/// [`OPTIMIZER`]; then the state, the rename and the manifest follow.
pub fn save(
    root: &Path,
    state: &TrainState,
    write_files: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let final_dir = step_dir(root, state.step);
    let tmp = root.join(format!(
        ".tmp-step-{:08}-{}",
        state.step,
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let filled = fill(&tmp, state, write_files);
    if let Err(e) = filled {
        // A failed write leaves nothing behind (a killed one is cleaned at the next start:
        // [`remove_unfinished`]).
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if final_dir.exists() {
        // A checkpoint of this step from an interrupted earlier attempt: replace it.
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    // Every file of the checkpoint is covered, the configuration included.
    let mut manifest = serde_json::Map::new();
    for f in [MODEL, OPTIMIZER, STATE, CONFIG, ENVIRONMENT] {
        let path = final_dir.join(f);
        if path.exists() {
            manifest.insert(f.into(), serde_json::Value::String(sha256(&path)?));
        }
    }
    write_atomic(
        &final_dir.join(MANIFEST),
        serde_json::to_string_pretty(&manifest).unwrap().as_bytes(),
    )?;
    if let Ok(d) = std::fs::File::open(root) {
        let _ = d.sync_all();
    }
    Ok(final_dir)
}

/// Fills a fresh temporary checkpoint folder: the caller's files, then the state, all synced.
fn fill(
    tmp: &Path,
    state: &TrainState,
    write_files: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    write_files(tmp)?;
    write_atomic(
        &tmp.join(STATE),
        serde_json::to_string_pretty(state)
            .expect("state serializes")
            .as_bytes(),
    )?;
    for f in [MODEL, OPTIMIZER] {
        let p = tmp.join(f);
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// Removes the temporary folders of checkpoint writes that never finished (a process killed
/// mid-write); called by the process that holds the run's lock. Returns how many it removed.
pub fn remove_unfinished(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-step-"))
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

/// Checks a checkpoint directory against its manifest; `Err` says why it is invalid. The model,
/// optimizer and state must be covered; so is every other file the manifest lists (the
/// configuration, in checkpoints written since the manifest covered it).
pub fn verify(dir: &Path) -> std::result::Result<TrainState, String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST))
        .map_err(|_| "no manifest (incomplete write)".to_string())?;
    let manifest: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| format!("corrupt manifest: {e}"))?;
    for f in [MODEL, OPTIMIZER, STATE] {
        if !manifest.contains_key(f) {
            return Err(format!("manifest lacks {f}"));
        }
    }
    for (f, want) in &manifest {
        if f.contains(['/', '\\']) || f.starts_with('.') {
            return Err(format!(
                "manifest names {f:?}, not a file of the checkpoint"
            ));
        }
        let want = want
            .as_str()
            .ok_or(format!("manifest entry {f} is not a checksum"))?;
        let got = sha256(&dir.join(f)).map_err(|e| e.to_string())?;
        if got != want {
            return Err(format!(
                "{f} does not match its checksum (truncated or corrupted)"
            ));
        }
    }
    let state = std::fs::read_to_string(dir.join(STATE)).map_err(|e| e.to_string())?;
    serde_json::from_str(&state).map_err(|e| format!("corrupt state: {e}"))
}

/// All checkpoint directories, newest step first.
pub fn list(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs
}

/// The newest valid checkpoint; invalid newer ones are reported through `warn`.
pub fn latest_valid(root: &Path, mut warn: impl FnMut(String)) -> Option<(PathBuf, TrainState)> {
    for dir in list(root) {
        match verify(&dir) {
            Ok(state) => return Some((dir, state)),
            Err(why) => warn(format!(
                "skipping checkpoint {}: {why}; falling back to an older one",
                dir.display()
            )),
        }
    }
    None
}

/// Which checkpoints of a run are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many.
    pub keep_last: usize,
    /// The best this many by validation PCK.
    pub keep_best: usize,
    /// And the one at this step: the end of the strong stages, which sibling runs reuse
    /// ([`super::fork`]).
    pub pinned: Option<u64>,
}

/// Writes the checkpoint of a training run at `state.step`: the resolved configuration `config`
/// (what `eval` and `align` rebuild the model from), `environment` (where it was trained), the
/// model record (of an inference copy) and the optimizer state; then applies `retention`.
pub fn save_training(
    root: &Path,
    state: &TrainState,
    (config, environment): (&str, &str),
    model: &crate::model::TwoStage,
    optim: &burn::optim::ModuleOptimizer,
    retention: Retention,
) -> Result<PathBuf> {
    let dir = save(root, state, |tmp| {
        write_atomic(&tmp.join(CONFIG), config.as_bytes())?;
        write_atomic(&tmp.join(ENVIRONMENT), environment.as_bytes())?;
        crate::weights::save_record(model, &tmp.join(MODEL))?;
        let path = tmp.join(OPTIMIZER);
        optim.save(&path).map_err(|e| Error::Weights {
            path: path.clone(),
            reason: format!("cannot write optimizer state: {e}"),
        })?;
        super::param_ids::canonicalize(&tmp.join(MODEL), &path)
    })?;
    retain(root, retention, &dir)?;
    Ok(dir)
}

/// Deletes checkpoints beyond the newest `keep_last` valid ones, the best `keep_best` (by PCK)
/// and the pinned one. Never deletes `keep` (the one just written).
pub fn retain(root: &Path, retention: Retention, keep: &Path) -> Result<()> {
    let Retention {
        keep_last,
        keep_best,
        pinned,
    } = retention;
    let valid: Vec<(PathBuf, TrainState)> = list(root)
        .into_iter()
        .filter_map(|d| verify(&d).ok().map(|s| (d, s)))
        .collect();
    let mut kept: Vec<&PathBuf> = valid
        .iter()
        .take(keep_last.max(1))
        .map(|(d, _)| d)
        .collect();
    let mut by_pck: Vec<&(PathBuf, TrainState)> =
        valid.iter().filter(|(_, s)| s.pck.is_some()).collect();
    by_pck.sort_by(|a, b| {
        b.1.pck
            .partial_cmp(&a.1.pck)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    kept.extend(by_pck.iter().take(keep_best).map(|(d, _)| d));
    kept.extend(
        valid
            .iter()
            .filter(|(_, s)| Some(s.step) == pinned)
            .map(|(d, _)| d),
    );
    for (dir, _) in &valid {
        if !kept.contains(&dir) && dir != keep {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    Ok(())
}
