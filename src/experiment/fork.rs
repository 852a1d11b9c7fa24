//! Reusing another run's strong stages (`weakalign exp --reuse-strong`).
//!
//! Runs of one experiment that differ only in their weak stage (its steps, learning rate,
//! trained blocks; the inlier count) train the same strong stages: equal
//! [`Experiment::strong_stages_hash`](super::config::Experiment::strong_stages_hash), and, since
//! training is bit-reproducible for a device and thread count, equal weights, optimizer state
//! and logs at the end of the strong stages. Every run keeps its checkpoint at that step
//! ([`super::checkpoint::Retention::pinned`]), with the environment it was trained in. A run
//! that has no checkpoint of its own and finds such a checkpoint, trained where this run
//! trains, copies it (and the donor's logs up to that step) and continues from there: the
//! ablation rows "hard inlier count" and "strong stage only" then cost their weak stage alone.
//! The donor is a sibling (same experiment) if one qualifies, else a run of another experiment
//! under the same runs root (the experiment's name is not in the hash): a sweep of weak-stage
//! levers reuses what its parent's sweep trained. `strong-stages-from.json` in the run records
//! where the copy came from.
//!
//! That the copy equals training from step 0 is tested (`tests/experiments.rs`: metrics and
//! final checkpoint files byte for byte).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::checkpoint::{self, CONFIG, ENVIRONMENT, MODEL, OPTIMIZER, TrainState};
use super::config::{Roots, parse};
use super::resolve::Resolved;
use super::run_dir::{RunDir, same_arithmetic};
use super::tensorboard::event_files;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// Another run's checkpoint at the end of the strong stages that this run can start from.
#[derive(Clone, Debug)]
pub struct Donor {
    /// The donor's run directory.
    pub run: PathBuf,
    /// Its checkpoint at the end of the strong stages.
    pub checkpoint: PathBuf,
    /// That checkpoint's state.
    pub state: TrainState,
}

/// The checkpoint at step `at` (the end of `r`'s strong stages) that `r` can start from: another
/// run with an equal strong-stages hash, trained in an environment with `same_arithmetic` as
/// `here`. Siblings (runs of the same experiment) come first, then the runs of every other
/// experiment under `roots.runs`, each set in hash order, for a deterministic choice: a new sweep
/// of weak-stage levers reuses the strong stages its parent's sweep trained. The name is not in
/// the hash, so this is as exact as a sibling's copy.
pub fn find_donor(r: &Resolved, roots: &Roots, at: u64, here: &Value) -> Option<Donor> {
    let want = r.experiment.strong_stages_hash();
    let own = r.experiment.name.as_str();
    let mut others: Vec<String> = std::fs::read_dir(&roots.runs)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    others.retain(|n| n != own);
    others.sort();
    std::iter::once(own.to_string())
        .chain(others)
        .find_map(|name| donor_in(&name, r, roots, at, &want, here))
}

/// The first run of experiment `name` (by hash, `r`'s own excluded) whose checkpoint at `at`
/// verifies, has strong-stages hash `want` and was trained with `same_arithmetic` as `here`.
fn donor_in(
    name: &str,
    r: &Resolved,
    roots: &Roots,
    at: u64,
    want: &str,
    here: &Value,
) -> Option<Donor> {
    let mut hashes: Vec<String> = std::fs::read_dir(roots.runs.join(name))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|h| !(name == r.experiment.name && *h == r.hash))
        .collect();
    hashes.sort();
    hashes.into_iter().find_map(|hash| {
        let dir = checkpoint::step_dir(&roots.checkpoints.join(format!("{name}-{hash}")), at);
        let config_path = dir.join(CONFIG);
        let text = std::fs::read_to_string(&config_path).ok()?;
        let theirs = parse(&config_path, &text, &[]).ok()?;
        let env = checkpoint::environment(&dir)?;
        if theirs.strong_stages_hash() != want || !same_arithmetic(&env, here) {
            return None;
        }
        // Checksums last: they read the whole checkpoint, which every run of the root may have.
        let state = checkpoint::verify(&dir).ok()?;
        (state.step == at).then(|| Donor {
            run: roots.runs.join(name).join(&hash),
            checkpoint: dir,
            state,
        })
    })
}

/// Copies `donor` into `run`: its checkpoint (with this run's hash, configuration and
/// environment) and its logs (`metrics.jsonl`, the `train/` and `valid/` event files; the
/// logger drops what they hold after the donor's step). `run` has no checkpoint, so whatever
/// logs it holds are of steps never saved, which a restart at step 0 would drop too: they are
/// replaced. Returns this run's new checkpoint and state.
pub fn adopt(
    donor: &Donor,
    r: &Resolved,
    run: &RunDir,
    environment: &str,
) -> Result<(PathBuf, TrainState)> {
    let state = TrainState {
        config_hash: r.hash.clone(),
        ..donor.state.clone()
    };
    let config = r.experiment.to_toml();
    let dir = checkpoint::save(&run.checkpoints, &state, |tmp| {
        for f in [MODEL, OPTIMIZER] {
            let (from, to) = (donor.checkpoint.join(f), tmp.join(f));
            std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
        }
        write_atomic(&tmp.join(CONFIG), config.as_bytes())?;
        write_atomic(&tmp.join(ENVIRONMENT), environment.as_bytes())
    })?;
    copy_file(
        &donor.run.join("metrics.jsonl"),
        &run.path.join("metrics.jsonl"),
    )?;
    for split in ["train", "valid"] {
        replace_events(&donor.run.join(split), &run.path.join(split))?;
    }
    let record = serde_json::json!({
        "run": donor.run,
        "checkpoint": donor.checkpoint,
        "step": donor.state.step,
        "model_sha256": manifest_entry(&donor.checkpoint, MODEL),
    });
    run.write(
        "strong-stages-from.json",
        &serde_json::to_string_pretty(&record).expect("JSON values serialize"),
    )?;
    Ok((dir, state))
}

/// The checksum `dir`'s manifest records for `file`.
fn manifest_entry(dir: &Path, file: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(checkpoint::MANIFEST)).ok()?;
    let manifest: Value = serde_json::from_str(&text).ok()?;
    manifest[file].as_str().map(str::to_string)
}

/// Copies `from` over `to` atomically (a missing `from` is an empty file).
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let bytes = match std::fs::read(from) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(from, e)),
    };
    write_atomic(to, &bytes)
}

/// Replaces the TensorBoard event files in `to` by copies of those in `from`.
fn replace_events(from: &Path, to: &Path) -> Result<()> {
    for old in event_files(to) {
        std::fs::remove_file(&old).map_err(|e| Error::io(&old, e))?;
    }
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for file in event_files(from) {
        let target = to.join(file.file_name().expect("a file name"));
        copy_file(&file, &target)?;
    }
    Ok(())
}
