//! Training agreement between a device and the CPU: one experiment trained on both from the same
//! seed, its per-step losses compared over the first steps and its final test PCK compared.
//! `weakalign agree FILE --device wgpu` runs it (`make test-wgpu` on lavapipe in CI).
//!
//! Both runs start from the same weights (every parameter is drawn on the CPU from the seeded RNG
//! and then moved, [`crate::model::ModelConfig::init_two_stage_seeded`]) and see the same batches
//! (data is prepared on the CPU, a pure function of the seed and the step), so the first step's
//! loss differs only by the backends' float rounding. From there the two trainings drift apart as
//! Adam amplifies rounding differences, which is why the losses are held to a tolerance over the
//! first steps only, and the end of training to a band on the test PCK.
//!
//! A loss's error is `|device − cpu| / max(|cpu|, 1e-3)`: relative, with a floor so a loss near
//! zero does not turn rounding into a large ratio.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::Roots;
use super::run_dir::Status;
use super::runner::{RunOptions, RunOutcome};
use super::sweep::{cells, run_cells};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};

/// What the two runs are held to.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tolerances {
    /// How many first global steps' losses must agree.
    pub steps: u64,
    /// Largest relative loss error over those steps.
    pub loss: f64,
    /// Largest absolute difference of the final test PCK.
    pub pck: f64,
}

/// One global step's loss on both sides.
#[derive(Clone, Debug, Serialize)]
pub struct StepLoss {
    /// The global step (1-based).
    pub step: u64,
    /// Its stage.
    pub stage: String,
    /// The CPU's loss.
    pub cpu: f64,
    /// The device's loss.
    pub device: f64,
    /// `|device − cpu| / max(|cpu|, 1e-3)`.
    pub error: f64,
}

/// The verdict on a CPU run and a device run of one experiment.
#[derive(Clone, Debug, Serialize)]
pub struct Agreement {
    /// The CPU's run folder.
    pub cpu_run: PathBuf,
    /// The device's run folder.
    pub device_run: PathBuf,
    /// Every step logged by both runs, in order.
    pub steps: Vec<StepLoss>,
    /// The largest loss error over the first `tolerances.steps` steps.
    pub loss_error: f64,
    /// The largest loss error over all steps (reported, not held to a tolerance).
    pub loss_error_all: f64,
    /// The CPU's final test PCK.
    pub cpu_pck: f64,
    /// The device's final test PCK.
    pub device_pck: f64,
    /// What they were held to.
    pub tolerances: Tolerances,
    /// Whether the losses and the PCK are within the tolerances.
    pub pass: bool,
}

/// A loss's error against the CPU's (module docs).
fn loss_error(device: f64, cpu: f64) -> f64 {
    if device == cpu {
        return 0.0;
    }
    let e = (device - cpu).abs() / cpu.abs().max(1e-3);
    if e.is_nan() { f64::INFINITY } else { e }
}

/// The training loss of every logged step of the run at `run` (`metrics.jsonl`), in order, with
/// its stage.
fn losses(run: &Path) -> Result<Vec<(u64, String, f64)>> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |msg: String| Error::Data {
            file: path.clone(),
            line: Some(i + 1),
            msg,
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        if v["tag"] != "loss" {
            continue;
        }
        let (Some(step), Some(stage), Some(loss)) =
            (v["step"].as_u64(), v["stage"].as_str(), v["value"].as_f64())
        else {
            return Err(bad("a loss line needs `step`, `stage` and `value`".into()));
        };
        out.push((step, stage.to_string(), loss));
    }
    Ok(out)
}

/// The final test PCK in the run's `summary.json`.
fn test_pck(run: &Path) -> Result<f64> {
    let path = run.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Data {
        file: path.clone(),
        line: None,
        msg: format!("not JSON: {e}"),
    })?;
    v["test_pck"].as_f64().ok_or_else(|| Error::Data {
        file: path,
        line: None,
        msg: "no `test_pck` (the run did not finish its test evaluation)".into(),
    })
}

/// Compares the finished runs at `cpu` and `device` (see the module docs). A step logged by one
/// run only, or fewer common steps than `tolerances.steps`, fails the comparison: it could not
/// otherwise tell a short run from an agreeing one.
pub fn compare(cpu: &Path, device: &Path, tolerances: Tolerances) -> Result<Agreement> {
    let (a, b) = (losses(cpu)?, losses(device)?);
    let mut steps = Vec::new();
    for ((step, stage, c), (step_d, _, d)) in a.iter().zip(&b) {
        if step != step_d {
            return Err(Error::Data {
                file: device.join("metrics.jsonl"),
                line: None,
                msg: format!(
                    "the runs logged different steps ({step} on the CPU, {step_d} on the device): \
                     train both with log.every = 1"
                ),
            });
        }
        steps.push(StepLoss {
            step: *step,
            stage: stage.clone(),
            cpu: *c,
            device: *d,
            error: loss_error(*d, *c),
        });
    }
    let worst = |s: &[StepLoss]| s.iter().fold(0.0f64, |m, s| m.max(s.error));
    let held: Vec<StepLoss> = steps
        .iter()
        .filter(|s| s.step <= tolerances.steps)
        .cloned()
        .collect();
    let complete = a.len() == b.len() && held.len() as u64 >= tolerances.steps;
    let (loss_error, loss_error_all) = (worst(&held), worst(&steps));
    let (cpu_pck, device_pck) = (test_pck(cpu)?, test_pck(device)?);
    let pass =
        complete && loss_error <= tolerances.loss && (device_pck - cpu_pck).abs() <= tolerances.pck;
    Ok(Agreement {
        cpu_run: cpu.to_path_buf(),
        device_run: device.to_path_buf(),
        steps,
        loss_error,
        loss_error_all,
        cpu_pck,
        device_pck,
        tolerances,
        pass,
    })
}

/// Trains the experiment `file` (with `overrides`; one cell, no sweep) on the CPU and on `device`
/// under `roots`, logging every step, and compares the two runs. A run already completed under
/// `roots` is not trained again.
pub fn agree(
    file: &Path,
    overrides: &[String],
    device: DeviceChoice,
    roots: &Roots,
    tolerances: Tolerances,
) -> Result<Agreement> {
    if device.is_cpu() {
        return Err(Error::Argument {
            op: "agree",
            arg: "device",
            reason: "compare a GPU device (`wgpu`, `cuda`) with the CPU, not the CPU itself".into(),
        });
    }
    let train = |on: DeviceChoice| -> Result<RunOutcome> {
        let mut set = overrides.to_vec();
        set.extend([format!("device=\"{on}\""), "log.every=1".into()]);
        let cells = cells(file, &set)?;
        if cells.len() != 1 {
            return Err(Error::Argument {
                op: "agree",
                arg: "file",
                reason: format!(
                    "{}: a sweep of {} cells; agreement compares one configuration",
                    file.display(),
                    cells.len()
                ),
            });
        }
        let opts = RunOptions {
            roots: roots.clone(),
            ..RunOptions::default()
        };
        let mut outcome = None;
        run_cells(&cells, &opts, &mut |event| {
            if let super::sweep::Event::Finished { outcome: o, .. } = event {
                outcome = Some(o.clone());
            }
        })?;
        let outcome = outcome.expect("a single cell either finishes or returns its error");
        if outcome.status != Status::Completed {
            return Err(Error::Argument {
                op: "agree",
                arg: "device",
                reason: format!(
                    "{on}: the run stopped before completing ({:?})",
                    outcome.status
                ),
            });
        }
        Ok(outcome)
    };
    let cpu = train(DeviceChoice::Cpu)?;
    let dev = train(device)?;
    compare(&cpu.dir, &dev.dir, tolerances)
}

#[cfg(test)]
mod tests {
    use super::{Tolerances, compare, loss_error};
    use std::path::Path;

    #[test]
    fn a_loss_error_is_relative_with_a_floor() {
        assert_eq!(loss_error(1.0, 1.0), 0.0);
        assert!((loss_error(1.01, 1.0) - 0.01).abs() < 1e-12);
        assert!((loss_error(-0.505, -0.5) - 0.01).abs() < 1e-12);
        // Near zero the floor (1e-3) keeps rounding from looking large.
        assert!((loss_error(1e-7, 0.0) - 1e-4).abs() < 1e-12);
        assert_eq!(loss_error(f64::NAN, 1.0), f64::INFINITY);
    }

    /// A finished run folder with these per-step losses and test PCK.
    fn run(dir: &Path, name: &str, losses: &[f64], pck: f64) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).unwrap();
        let mut lines = String::new();
        for (i, l) in losses.iter().enumerate() {
            let stage = if i < 2 { "strong_affine" } else { "weak" };
            lines += &format!(
                "{{\"step\":{},\"stage\":\"{stage}\",\"tag\":\"loss\",\"value\":{l}}}\n",
                i + 1
            );
            lines += &format!(
                "{{\"step\":{},\"stage\":\"{stage}\",\"tag\":\"lr\",\"value\":0.001}}\n",
                i + 1
            );
        }
        std::fs::write(path.join("metrics.jsonl"), lines).unwrap();
        std::fs::write(
            path.join("summary.json"),
            format!("{{\"test_pck\": {pck}}}"),
        )
        .unwrap();
        path
    }

    const HELD: Tolerances = Tolerances {
        steps: 3,
        loss: 1e-3,
        pck: 0.01,
    };

    #[test]
    fn runs_agree_within_the_tolerances_and_not_beyond() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = run(dir.path(), "cpu", &[0.5, 0.4, -0.1, -0.2], 0.30);
        let same = run(dir.path(), "same", &[0.5, 0.4, -0.1, -0.2], 0.30);
        let a = compare(&cpu, &same, HELD).unwrap();
        assert!(a.pass && a.loss_error == 0.0 && a.steps.len() == 4, "{a:?}");

        // Within tolerance over the held steps, far off after them: passes, and says so.
        let drift = run(dir.path(), "drift", &[0.5002, 0.4, -0.1, -0.3], 0.305);
        let a = compare(&cpu, &drift, HELD).unwrap();
        assert!(a.pass, "{a:?}");
        assert!(
            (a.loss_error - 4e-4).abs() < 1e-9 && a.loss_error_all > 0.4,
            "{a:?}"
        );

        // A held step outside the tolerance, or the PCK outside its band, fails.
        let off = run(dir.path(), "off", &[0.5, 0.4, -0.11, -0.2], 0.30);
        assert!(!compare(&cpu, &off, HELD).unwrap().pass);
        let pck = run(dir.path(), "pck", &[0.5, 0.4, -0.1, -0.2], 0.32);
        assert!(!compare(&cpu, &pck, HELD).unwrap().pass);
    }

    #[test]
    fn a_short_or_misaligned_run_cannot_pass() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = run(dir.path(), "cpu", &[0.5, 0.4, -0.1, -0.2], 0.30);
        let short = run(dir.path(), "short", &[0.5, 0.4], 0.30);
        assert!(!compare(&cpu, &short, HELD).unwrap().pass);
        let cpu_short = run(dir.path(), "cpu_short", &[0.5, 0.4], 0.30);
        assert!(
            !compare(&cpu_short, &short, HELD).unwrap().pass,
            "fewer steps than held"
        );
        // Steps logged at other intervals are an error naming the fix.
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(
            other.join("metrics.jsonl"),
            "{\"step\":5,\"stage\":\"weak\",\"tag\":\"loss\",\"value\":0.5}\n",
        )
        .unwrap();
        std::fs::write(other.join("summary.json"), "{\"test_pck\": 0.3}").unwrap();
        let e = compare(&cpu, &other, HELD).unwrap_err().to_string();
        assert!(
            e.contains("log.every = 1") && e.contains("metrics.jsonl"),
            "{e}"
        );
        // A run without a test result is an error naming the file.
        let unfinished = run(dir.path(), "unfinished", &[0.5, 0.4, -0.1, -0.2], 0.30);
        std::fs::remove_file(unfinished.join("summary.json")).unwrap();
        let e = compare(&cpu, &unfinished, HELD).unwrap_err().to_string();
        assert!(e.contains("summary.json"), "{e}");
    }
}
