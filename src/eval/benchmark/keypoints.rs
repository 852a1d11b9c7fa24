//! Keypoint benchmarks (embedded, PF-WILLOW, PF-PASCAL): PCK@α of the affine and affine∘TPS
//! predictions and of the identity, per class and overall.

use super::{Benchmark, EvalOptions, Report, Subject, report};
use crate::data::embedded::Split;
use crate::data::pf::KeypointPair;
use crate::error::Result;
use crate::eval::keypoints::{PairScore, Procedure, evaluate_pairs};
use crate::geometry::Tps;
use crate::model::TransformKind;

/// The reference length of PCK as the report states it.
fn reference_length(benchmark: Benchmark, procedure: Procedure) -> &'static str {
    match (benchmark, procedure) {
        (Benchmark::PfPascal, Procedure::ImageSize224) => {
            "224 (keypoints rescaled to a 224×224 frame; 'scnet')"
        }
        (Benchmark::PfPascal, Procedure::BoundingBox) => {
            "max side of the source keypoint bounding box ('pf')"
        }
        _ => "max side of the source keypoint bounding box",
    }
}

/// One row per pair, in the benchmark's order: its images (relative to the dataset root), class
/// and the PCK of each prediction kind and of the identity (`null`: no keypoints). What picks
/// the pairs to show (`weakalign align` on the best, median and worst) reads.
///
/// `per_kind` holds the affine then the affine∘TPS scores, each in `pairs`' order.
fn per_pair_rows(pairs: &[KeypointPair], per_kind: &[Vec<PairScore>]) -> Vec<serde_json::Value> {
    let [aff, aff_tps] = per_kind else {
        unreachable!("one pass scores the affine and affine∘TPS kinds")
    };
    pairs
        .iter()
        .zip(aff.iter().zip(aff_tps))
        .map(|(p, (a, b))| {
            serde_json::json!({
                "source": p.source.display().to_string(),
                "target": p.target.display().to_string(),
                "class": p.class,
                "aff": a.model,
                "aff_tps": b.model,
                "identity": a.identity,
            })
        })
        .collect()
}

/// PCK of `subject` on a keypoint benchmark (the PF-PASCAL procedure from `options`, the
/// bounding box elsewhere).
pub fn evaluate(
    subject: Subject<'_>,
    benchmark: Benchmark,
    options: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report> {
    let set = benchmark.keypoint_set(&options.datasets, None, options.split)?;
    let procedure = match benchmark {
        Benchmark::PfPascal => options.procedure,
        _ => Procedure::BoundingBox,
    };
    let reference = reference_length(benchmark, procedure);
    let tps = Tps::new(options.tps_lambda)?;
    let n = set.pairs.len();
    // One pass of the two-stage model gives both the affine and the affine∘TPS predictions.
    let kinds = [TransformKind::Affine, TransformKind::AffineTps];
    let per_kind = evaluate_pairs(
        subject.model,
        &set,
        &kinds,
        subject.norm,
        options.alpha,
        &tps,
        8,
        options.affine_passes,
        procedure,
        &mut |done| {
            progress(done, n);
            std::ops::ControlFlow::Continue(())
        },
    )?
    .expect("an evaluation that never breaks finishes");
    let mut results = serde_json::Map::new();
    let mut identity = None;
    for (name, pairs) in ["aff", "aff_tps"].into_iter().zip(&per_kind) {
        let scores = |pick: fn(&PairScore) -> Option<f64>| {
            report::summarize(pairs.iter().map(|p| (p.class.as_str(), pick(p))))
        };
        results.insert(name.into(), scores(|p| p.model));
        identity.get_or_insert_with(|| scores(|p| p.identity));
    }
    results.insert("identity".into(), identity.unwrap_or_default());
    let per_pair = per_pair_rows(&set.pairs, &per_kind);
    // The embedded set's other splits get their own report file beside the test split's.
    let name = match options.split {
        Split::Test => benchmark.name(),
        split => format!("{}-{}", benchmark.name(), crate::choice::name(&split)),
    };
    let json = serde_json::json!({
        "dataset": name,
        "checkpoint": subject.checkpoint.display().to_string(),
        "experiment": subject.experiment,
        "protocol": {
            "alpha": options.alpha,
            "reference_length": reference,
            "network_resolution": subject.model.image_size,
            "tps_lambda": options.tps_lambda,
            "affine_passes": options.affine_passes,
            "averaging": "mean over pairs of the per-pair fraction of correct keypoints",
        },
        "pairs": n,
        "pck": results,
        "per_pair": per_pair,
    });
    let mut md = format!(
        "# PCK@{} on {name} ({n} pairs)\n\nReference length: {reference}; network input {} px; TPS λ {}.\n\n| class | affine | affine∘TPS | identity |\n|---|---|---|---|\n",
        options.alpha, subject.model.image_size, options.tps_lambda
    );
    let pck = &json["pck"];
    if let Some(classes) = pck["aff"]["per_class"].as_object() {
        for c in classes.keys() {
            md += &format!(
                "| {c} | {} | {} | {} |\n",
                report::cell(&pck["aff"]["per_class"][c]),
                report::cell(&pck["aff_tps"]["per_class"][c]),
                report::cell(&pck["identity"]["per_class"][c])
            );
        }
    }
    md += &format!(
        "| **overall** | **{}** | **{}** | **{}** |\n",
        report::cell(&pck["aff"]["overall"]),
        report::cell(&pck["aff_tps"]["overall"]),
        report::cell(&pck["identity"]["overall"])
    );
    Ok(Report {
        name,
        json,
        markdown: md,
    })
}
