//! The standard benchmarks, evaluated as the authors define them: each produces a [`Report`]
//! (JSON with the protocol beside the numbers, and a Markdown table) for the affine and
//! affine∘TPS predictions of a two-stage model and for the identity baseline.
//!
//! | benchmark | metric | module |
//! |---|---|---|
//! | embedded, PF-WILLOW, PF-PASCAL | PCK@α per class and overall | [`keypoints`] |
//! | TSS | the kit's flow accuracy, T5 | [`tss`] |
//! | Caltech-101 | label transfer: LT-ACC, IoU, LOC-ERR | [`caltech`] |

pub mod caltech;
pub mod keypoints;
pub mod report;
pub mod tss;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use report::Report;

use super::keypoints::{KeypointSet, Procedure};
use crate::backbone::Normalization;
use crate::data::embedded::{EmbeddedDataset, Split};
use crate::data::layout;
use crate::error::{Error, Result, check_arg};
use crate::model::TwoStage;

/// A benchmark by name (`"embedded"`, `"pf-willow"`, `"pf-pascal"`, `"tss"`, `"caltech-101"` in
/// files and on the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Benchmark {
    /// The embedded dataset's 336 test pairs (keypoints).
    #[serde(rename = "embedded")]
    Embedded,
    /// PF-WILLOW's 900 pairs (keypoints).
    #[serde(rename = "pf-willow")]
    PfWillow,
    /// PF-PASCAL's test pairs (keypoints; needs the images).
    #[serde(rename = "pf-pascal")]
    PfPascal,
    /// TSS (dense flow).
    #[serde(rename = "tss")]
    Tss,
    /// Caltech-101 label transfer (needs the authors' pair list with polygons).
    #[serde(rename = "caltech-101")]
    Caltech101,
}

impl Benchmark {
    /// Its name in files and reports.
    pub fn name(self) -> String {
        crate::choice::name(&self)
    }

    /// Whether the runner can validate and test on it during training (keypoint sets with a
    /// bounding-box reference, loaded with the run).
    pub fn trains_with(self) -> bool {
        matches!(self, Benchmark::Embedded | Benchmark::PfWillow)
    }

    /// The benchmark's keypoint pairs, images decoded. `embedded` is the embedded dataset when
    /// the caller has it (else the default one is generated) and `split` its split.
    pub fn keypoint_set(
        self,
        datasets: &Path,
        embedded: Option<&EmbeddedDataset>,
        split: Split,
    ) -> Result<KeypointSet> {
        match self {
            Benchmark::Embedded => Ok(match embedded {
                Some(d) => KeypointSet::embedded(d, split),
                None => {
                    KeypointSet::embedded(&EmbeddedDataset::generate(Default::default()), split)
                }
            }),
            Benchmark::PfWillow => KeypointSet::pf_willow(&layout::pf_willow(datasets)),
            Benchmark::PfPascal => {
                let candidates = layout::pf_pascal_candidates(datasets);
                let root = candidates
                    .iter()
                    .find(|d| d.join("test_pairs_pf_pascal.csv").is_file())
                    .unwrap_or(&candidates[0]);
                let pairs =
                    crate::data::pf::read_pascal_csv(&root.join("test_pairs_pf_pascal.csv"))?;
                KeypointSet::load(root, pairs).map_err(|e| Error::Data {
                    file: root.clone(),
                    line: None,
                    msg: format!(
                        "PF-PASCAL images are needed here (PF-dataset-PASCAL/JPEGImages): {e}"
                    ),
                })
            }
            Benchmark::Tss | Benchmark::Caltech101 => Err(Error::Argument {
                op: "eval",
                arg: "dataset",
                reason: format!("{} has no keypoints", self.name()),
            }),
        }
    }
}

/// How to evaluate.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// PCK threshold α (keypoint benchmarks).
    pub alpha: f64,
    /// PF-PASCAL's reference length: `scnet` (224 frame) or `pf` (keypoint bounding box).
    pub procedure: Procedure,
    /// TPS λ of point transfer and warps (reference eval.py: 0).
    pub tps_lambda: f64,
    /// Passes of the affine head ([`TwoStage::forward_refined`]; 1 = the paper and reference).
    pub affine_passes: usize,
    /// The embedded benchmark's split (`Test` unless asked; the other benchmarks have one).
    pub split: Split,
    /// The `datasets/` folder.
    pub datasets: PathBuf,
}

/// The model under evaluation and where it came from (for the report).
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    /// An inference copy of the model.
    pub model: &'a TwoStage,
    /// Its backbone's input normalization.
    pub norm: Normalization,
    /// The checkpoint it was loaded from.
    pub checkpoint: &'a Path,
    /// Its experiment's name.
    pub experiment: &'a str,
}

/// Evaluates `subject` on `benchmark`; `progress(done, total)` is called as pairs finish. TSS
/// writes its flows under `out` (the report itself is the caller's to write, see
/// [`Report::write`]).
pub fn evaluate(
    subject: Subject<'_>,
    benchmark: Benchmark,
    options: &EvalOptions,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report> {
    check_arg(
        options.split == Split::Test || benchmark == Benchmark::Embedded,
        "eval",
        "split",
        || {
            format!(
                "{} has one split; only embedded has others",
                benchmark.name()
            )
        },
    )?;
    let mut report = match benchmark {
        Benchmark::Tss => tss::evaluate(subject, options, out, progress),
        Benchmark::Caltech101 => caltech::evaluate(subject, options, progress),
        keypoint => keypoints::evaluate(subject, keypoint, options, progress),
    }?;
    report.name = stem(report.name, options);
    Ok(report)
}

/// The file stem of a benchmark's report (and of TSS's flow folder): its name, followed by the
/// number of affine passes when refined, so refined files never replace the paper's one-pass ones.
fn stem(name: String, options: &EvalOptions) -> String {
    match options.affine_passes {
        1 => name,
        n => format!("{name}-affine-passes-{n}"),
    }
}
