//! `weakalign compare`: summaries of runs grouped into cells (same configuration up to the seed),
//! mean ± std over seeds, as Markdown and CSV; `weakalign runs`: every run with its status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::run_dir::RunDir;

/// One run found under `runs/`.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Its directory.
    pub dir: PathBuf,
    /// Experiment name.
    pub experiment: String,
    /// Status as displayed (CRASHED for dead RUNNING runs).
    pub status: String,
    /// Step of the last status update.
    pub step: u64,
    /// `summary.json`, when the run completed.
    pub summary: Option<serde_json::Value>,
}

/// All runs under `root` (`root/<experiment>/<hash>/`), sorted.
pub fn find_runs(root: &Path) -> Vec<RunInfo> {
    let mut out = Vec::new();
    let Ok(experiments) = std::fs::read_dir(root) else {
        return out;
    };
    for e in experiments.filter_map(|e| e.ok()) {
        let Ok(runs) = std::fs::read_dir(e.path()) else {
            continue;
        };
        for r in runs.filter_map(|r| r.ok()) {
            let dir = r.path();
            let Some(status) = RunDir::read_status(&dir) else {
                continue;
            };
            let summary = std::fs::read_to_string(dir.join("summary.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            out.push(RunInfo {
                experiment: e.file_name().to_string_lossy().to_string(),
                status: status.display().to_string(),
                step: status.step,
                summary,
                dir,
            });
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    out
}

/// The runs named by `paths`: a run folder, an experiment folder (its runs), or a folder of
/// experiments (all of them).
pub fn runs_at(paths: &[PathBuf]) -> Vec<RunInfo> {
    let mut runs = Vec::new();
    let holds_runs = |p: &Path| {
        std::fs::read_dir(p)
            .is_ok_and(|d| d.flatten().any(|e| e.path().join("status.json").is_file()))
    };
    for p in paths {
        if p.join("status.json").is_file() {
            let experiments = p.parent().and_then(|e| e.parent()).unwrap_or(p);
            runs.extend(find_runs(experiments).into_iter().filter(|r| r.dir == *p));
        } else if holds_runs(p) {
            let parent = p.parent().unwrap_or(p);
            runs.extend(
                find_runs(parent)
                    .into_iter()
                    .filter(|r| r.dir.starts_with(p)),
            );
        } else {
            runs.extend(find_runs(p));
        }
    }
    runs
}

/// A cell: runs sharing a configuration up to the seed.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// Experiment name, with the cell's sweep values.
    pub name: String,
    /// Completed runs' test PCK, by seed.
    pub pck: Vec<(u64, f64)>,
    /// Completed runs' validation PCK at their last step (what levers and the winner are
    /// chosen on: the test set is only reported).
    pub validation: Vec<f64>,
    /// Identity PCK on the same test set.
    pub identity: Option<f64>,
    /// Completed runs' TSS flow accuracy T5 over all pairs of `datasets/tss-sample`, where
    /// `weakalign eval --dataset tss` wrote `<run>/eval/tss.json` (the prediction of the run's
    /// transform: affine for an affine-only model, affine∘TPS otherwise).
    pub tss: Vec<f64>,
    /// Completed runs' weak-loss inlier score of the affine warp at their last weak step.
    pub inlier_aff: Vec<f64>,
    /// Completed runs' weak-loss inlier score of the warp they predict with (affine∘TPS, or the
    /// one head a TPS-only or affine-only model has) at their last weak step.
    pub inlier: Vec<f64>,
    /// Runs not completed, with status.
    pub missing: Vec<String>,
}

/// Groups runs into cells by their `cell_hash` (from `config.resolved.toml` when not completed).
pub fn cells(runs: &[RunInfo]) -> BTreeMap<String, Cell> {
    let mut cells: BTreeMap<String, Cell> = BTreeMap::new();
    for r in runs {
        let key = match &r.summary {
            Some(s) => s["cell_hash"].as_str().unwrap_or("?").to_string(),
            None => cell_hash_of(&r.dir).unwrap_or_else(|| "?".into()),
        };
        let cell = cells.entry(key).or_default();
        let label = r
            .summary
            .as_ref()
            .and_then(|s| s["cell_label"].as_str())
            .unwrap_or("")
            .to_string();
        // Only a completed run's summary has the label: one still running keeps the cell's.
        if !label.is_empty() {
            cell.name = format!("{} [{label}]", r.experiment);
        } else if cell.name.is_empty() {
            cell.name = r.experiment.clone();
        }
        match &r.summary {
            Some(s) if r.status == "COMPLETED" => {
                cell.pck.push((
                    s["seed"].as_u64().unwrap_or(0),
                    s["test_pck"].as_f64().unwrap_or(f64::NAN),
                ));
                cell.identity = s["test_identity_pck"].as_f64();
                // One read of metrics.jsonl: the inlier scores are logged in the weak stage only.
                let [aff, tps, aff_tps, valid] = super::runner::last_metrics(
                    &r.dir,
                    None,
                    ["inlier_aff", "inlier_tps", "inlier_aff_tps", "valid/pck"],
                );
                cell.inlier_aff.extend(aff);
                cell.inlier.extend(aff_tps.or(tps).or(aff));
                cell.tss.extend(tss_of(&r.dir));
                cell.validation.extend(valid);
            }
            _ => cell.missing.push(format!(
                "{} ({})",
                r.dir.file_name().unwrap_or_default().to_string_lossy(),
                r.status
            )),
        }
    }
    cells
}

/// The TSS T5 of the run at `dir` (`eval/tss.json`, the kind its configuration predicts with).
fn tss_of(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("eval").join("tss.json")).ok()?;
    let report: serde_json::Value = serde_json::from_str(&text).ok()?;
    let affine_only = resolved_config(dir)
        .is_some_and(|e| e.model.transform == crate::model::TransformKind::Affine);
    let kind = if affine_only { "aff" } else { "aff_tps" };
    report["overall"][kind].as_f64()
}

fn cell_hash_of(dir: &Path) -> Option<String> {
    Some(resolved_config(dir)?.cell_hash())
}

/// The run's `config.resolved.toml`, when it reads.
fn resolved_config(dir: &Path) -> Option<super::config::Experiment> {
    let text = std::fs::read_to_string(dir.join("config.resolved.toml")).ok()?;
    toml::from_str(&text).ok()
}

/// Mean and sample standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// `mean ± std` of `values` (Markdown), `mean,std` (CSV), dashes when there are none. One value
/// has no spread (a sample std needs two, and "± 0.0000" would read as a measured one): the
/// value alone, and an empty CSV field.
fn spread(values: &[f64], csv: bool) -> String {
    match (values, csv) {
        ([], true) => ",".into(),
        ([], false) => "–".into(),
        ([v], true) => format!("{v:.4},"),
        ([v], false) => format!("{v:.4}"),
        (_, true) => {
            let (m, s) = mean_std(values);
            format!("{m:.4},{s:.4}")
        }
        (_, false) => {
            let (m, s) = mean_std(values);
            format!("{m:.4} ± {s:.4}")
        }
    }
}

/// The comparison table as Markdown (and CSV when `csv`).
pub fn table(cells: &BTreeMap<String, Cell>, csv: bool) -> String {
    let mut out = String::new();
    if csv {
        out += "cell,experiment,seeds,validation_pck_mean,validation_pck_std,test_pck_mean,test_pck_std,identity_pck,tss_t5_mean,tss_t5_std,weak_inlier_aff_mean,weak_inlier_final_mean,missing\n";
    } else {
        out += "| cell | experiment | seeds | validation PCK, last step (mean ± std) | test PCK (mean ± std) | identity PCK | TSS T5, 6-pair sample (mean ± std) | weak inlier score, affine warp (mean) | weak inlier score, final warp (mean) | missing / failed |\n|---|---|---|---|---|---|---|---|---|---|\n";
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            if csv { String::new() } else { "–".into() }
        } else {
            format!("{:.4}", mean_std(v).0)
        }
    };
    for (hash, c) in cells {
        let mut by_seed = c.pck.clone();
        by_seed.sort_by_key(|p| p.0);
        let values: Vec<f64> = by_seed.iter().map(|p| p.1).collect();
        let seeds: Vec<String> = by_seed.iter().map(|p| p.0.to_string()).collect();
        let identity = c.identity.map_or("–".into(), |v| format!("{v:.4}"));
        let missing = if c.missing.is_empty() {
            "–".to_string()
        } else {
            c.missing.join("; ")
        };
        let columns = [
            hash.clone(),
            c.name.clone(),
            seeds.join(if csv { " " } else { ", " }),
            spread(&c.validation, csv),
            spread(&values, csv),
            identity,
            spread(&c.tss, csv),
            mean(&c.inlier_aff),
            mean(&c.inlier),
            if csv {
                missing.replace(',', ";")
            } else {
                missing
            },
        ];
        if csv {
            out += &columns.join(",");
            out += "\n";
        } else {
            out += &format!("| {} |\n", columns.join(" | "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn a_spread_needs_two_values() {
        assert_eq!(spread(&[], false), "–");
        assert_eq!(spread(&[], true), ",");
        assert_eq!(spread(&[0.5], false), "0.5000");
        assert_eq!(spread(&[0.5], true), "0.5000,");
        // Sample std of 0.5 and 0.7: 0.1414.
        assert_eq!(spread(&[0.5, 0.7], false), "0.6000 ± 0.1414");
        assert_eq!(spread(&[0.5, 0.7], true), "0.6000,0.1414");
    }
}
