//! `weakalign eval`: benchmark metrics of a checkpoint, as the authors define them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::eval::keypoints::{KeypointSet, PairPck, Procedure, Scored, evaluate_pairs};
use crate::eval::pck::mean_over_pairs;
use crate::experiment::checkpoint::load_model;
use crate::geometry::Tps;

/// Options of `weakalign eval`.
pub struct EvalArgs {
    /// Checkpoint (step folder, its model.bpk, or a run's checkpoint folder).
    pub checkpoint: Option<PathBuf>,
    /// Or: the authors' two-stage checkpoint converted to safetensors, with its backbone.
    pub official: Option<(PathBuf, String)>,
    /// `embedded`, `pf-willow`, `pf-pascal` or `tss`.
    pub dataset: String,
    /// PCK α.
    pub alpha: f64,
    /// PF-PASCAL procedure: `scnet` or `pf`.
    pub procedure: String,
    /// TPS λ for point transfer (reference eval.py: 0).
    pub tps_lambda: f64,
    /// `datasets/` root.
    pub datasets: PathBuf,
    /// Output folder (default: the run's `eval/` folder).
    pub out: Option<PathBuf>,
}

fn summarize(pairs: &[PairPck], pick: fn(&PairPck) -> Option<f64>) -> serde_json::Value {
    let mut classes: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    for p in pairs {
        classes.entry(p.0.as_str()).or_default().push(pick(p));
    }
    let per_class: serde_json::Map<String, serde_json::Value> = classes
        .iter()
        .map(|(c, v)| {
            (
                c.to_string(),
                serde_json::json!(mean_over_pairs(v.iter().copied())),
            )
        })
        .collect();
    serde_json::json!({
        "overall": mean_over_pairs(pairs.iter().map(pick)),
        "per_class": per_class,
        "pairs_scored": pairs.iter().filter(|p| pick(p).is_some()).count(),
    })
}

/// The model to evaluate, its experiment (defaults for an official checkpoint) and its source.
fn model(
    args: &EvalArgs,
) -> Result<(
    crate::model::TwoStage,
    crate::experiment::config::Experiment,
    PathBuf,
)> {
    match (&args.checkpoint, &args.official) {
        (Some(c), None) => Ok(load_model(c)?),
        (None, Some((file, backbone))) => {
            let mut exp = crate::experiment::config::Experiment {
                name: "official".into(),
                ..Default::default()
            };
            exp.model.backbone = backbone.clone();
            exp.model.image_size = 240; // the authors' models
            let r = crate::experiment::resolve::resolve(&exp, file)?;
            let config = crate::model::ModelConfig {
                backbone: r.backbone,
                image_size: 240,
                ..Default::default()
            };
            let mut m = config.init_two_stage(&crate::device::inference())?;
            let report = crate::weights::load_official_two_stage(&mut m, file)?;
            if !report.unexpected.is_empty() {
                eprintln!(
                    "warning: {} keys of {} were not used: {:?}",
                    report.unexpected.len(),
                    file.display(),
                    report.unexpected
                );
            }
            Ok((m, exp, file.clone()))
        }
        _ => bail!("give exactly one of --checkpoint and --official"),
    }
}

/// Runs the evaluation and writes `<dataset>.json` and `<dataset>.md`.
pub fn run(args: EvalArgs) -> Result<()> {
    let (model, exp, step_dir) = model(&args)?;
    let norm = crate::experiment::resolve::resolve(&exp, &step_dir)?
        .backbone
        .normalization();
    let tps = Tps::new(args.tps_lambda)?;
    let out_dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs")
            .join(&exp.name)
            .join(exp.hash())
            .join("eval")
    });
    if args.dataset == "tss" {
        return tss(&model, norm, &args, &out_dir);
    }
    if args.dataset == "caltech-101" {
        return caltech(&model, norm, &args, &out_dir);
    }
    let (set, procedure, reference) = match args.dataset.as_str() {
        "embedded" => {
            let d = crate::data::embedded::EmbeddedDataset::generate(Default::default());
            (
                KeypointSet::embedded(&d, crate::data::embedded::Split::Test),
                Procedure::BoundingBox,
                "max side of the source keypoint bounding box",
            )
        }
        "pf-willow" => (
            KeypointSet::pf_willow(&args.datasets.join("pf-willow"))?,
            Procedure::BoundingBox,
            "max side of the source keypoint bounding box",
        ),
        "pf-pascal" => {
            // Full dataset at datasets/pf-pascal; the annotations-only copy has the pair list.
            let root = ["pf-pascal", "pf-pascal-annotations-only"]
                .iter()
                .map(|d| args.datasets.join(d))
                .find(|d| d.join("test_pairs_pf_pascal.csv").is_file())
                .unwrap_or_else(|| args.datasets.join("pf-pascal"));
            let csv = root.join("test_pairs_pf_pascal.csv");
            let pairs = crate::data::pf::read_pascal_csv(&csv)?;
            let set = KeypointSet::load(&root, pairs).with_context(|| {
                format!(
                    "PF-PASCAL images are needed under {} (PF-dataset-PASCAL/JPEGImages)",
                    root.display()
                )
            })?;
            match args.procedure.as_str() {
                "scnet" => (
                    set,
                    Procedure::ImageSize224,
                    "224 (keypoints rescaled to a 224×224 frame; 'scnet')",
                ),
                "pf" => (
                    set,
                    Procedure::BoundingBox,
                    "max side of the source keypoint bounding box ('pf')",
                ),
                other => bail!("--procedure {other:?}: use scnet or pf"),
            }
        }
        other => bail!("unknown dataset {other:?} (embedded, pf-willow, pf-pascal, tss)"),
    };
    let bar = indicatif::ProgressBar::new(set.pairs.len() as u64 * 2);
    let mut results = serde_json::Map::new();
    let mut identity = None;
    for (name, scored, offset) in [
        ("aff", Scored::Affine, 0u64),
        ("aff_tps", Scored::AffineTps, set.pairs.len() as u64),
    ] {
        let pairs = evaluate_pairs(
            &model,
            &set,
            scored,
            norm,
            args.alpha,
            &tps,
            8,
            procedure,
            &mut |n| bar.set_position(offset + n as u64),
        )?;
        results.insert(name.into(), summarize(&pairs, |p| p.1));
        identity.get_or_insert_with(|| summarize(&pairs, |p| p.2));
    }
    bar.finish_and_clear();
    results.insert("identity".into(), identity.unwrap_or_default());
    let report = serde_json::json!({
        "dataset": args.dataset,
        "checkpoint": step_dir.display().to_string(),
        "experiment": exp.name,
        "protocol": {
            "alpha": args.alpha,
            "reference_length": reference,
            "network_resolution": exp.model.image_size,
            "tps_lambda": args.tps_lambda,
            "averaging": "mean over pairs of the per-pair fraction of correct keypoints",
        },
        "pairs": set.pairs.len(),
        "pck": results,
    });
    let mut md = format!(
        "# PCK@{} on {} ({} pairs)\n\nReference length: {reference}; network input {} px; TPS λ {}.\n\n| class | affine | affine∘TPS | identity |\n|---|---|---|---|\n",
        args.alpha,
        args.dataset,
        set.pairs.len(),
        exp.model.image_size,
        args.tps_lambda
    );
    let pck = &report["pck"];
    let fmt = |v: &serde_json::Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.4}"));
    if let Some(classes) = pck["aff"]["per_class"].as_object() {
        for c in classes.keys() {
            md += &format!(
                "| {c} | {} | {} | {} |\n",
                fmt(&pck["aff"]["per_class"][c]),
                fmt(&pck["aff_tps"]["per_class"][c]),
                fmt(&pck["identity"]["per_class"][c])
            );
        }
    }
    md += &format!(
        "| **overall** | **{}** | **{}** | **{}** |\n",
        fmt(&pck["aff"]["overall"]),
        fmt(&pck["aff_tps"]["overall"]),
        fmt(&pck["identity"]["overall"])
    );
    write_report(&out_dir, &args.dataset, &report, &md)
}

fn write_report(dir: &Path, name: &str, report: &serde_json::Value, md: &str) -> Result<()> {
    crate::fsutil::write_atomic(
        &dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(report)?.as_bytes(),
    )?;
    crate::fsutil::write_atomic(&dir.join(format!("{name}.md")), md.as_bytes())?;
    print!("{md}");
    println!(
        "\nwritten to {}",
        dir.join(format!("{name}.{{json,md}}")).display()
    );
    Ok(())
}

/// TSS: dense flows of the model for both directions of every pair (written as `.flo` under
/// `<out>/tss/<subset>/<pair>/`), scored with the kit's flow accuracy (T5 = α 0.05).
fn tss(
    model: &crate::model::TwoStage,
    norm: crate::backbone::Normalization,
    args: &EvalArgs,
    out_dir: &Path,
) -> Result<()> {
    use crate::data::image::load_rgb;
    use crate::data::tss::{read_flo, tss_pairs, write_flo};
    use crate::eval::flow::{flow_from_locations, pair_scores};

    let root = args.datasets.join("tss-sample/TSS_CVPR2016");
    let root = if root.is_dir() {
        root
    } else {
        args.datasets.join("tss")
    };
    let pairs = tss_pairs(&root)?;
    let spline = Tps::new(args.tps_lambda)?;
    let mut rows: BTreeMap<String, Vec<[f64; 3]>> = BTreeMap::new(); // subset → T5 of (identity, aff, aff_tps)
    let bar = indicatif::ProgressBar::new(pairs.len() as u64);
    for pair in &pairs {
        let images = [load_rgb(&pair.image(1))?, load_rgb(&pair.image(2))?];
        let mut flows = Vec::new();
        // flow1 lives on image 1 (target) and points into image 2 (source); flow2 the reverse.
        for (t, s) in [(0usize, 1usize), (1, 0)] {
            let mut src = images[s].clone();
            if pair.flip {
                src = crate::data::weak::flip_horizontal(&src);
            }
            let (th, tw) = (images[t].height, images[t].width);
            let per_kind: Vec<_> = dense_locations(model, norm, &src, &images[t], &spline)?
                .iter()
                .map(|locs| flow_from_locations(locs, (th, tw), (src.height, src.width)))
                .collect();
            flows.push(per_kind);
        }
        let rel = pair
            .dir
            .strip_prefix(&root)
            .unwrap_or(&pair.dir)
            .to_path_buf();
        let gt = [read_flo(&pair.flow(1))?, read_flo(&pair.flow(2))?];
        let mut t5 = Vec::new();
        for (k, kind) in ["identity", "aff", "aff_tps"].iter().enumerate() {
            let dir = out_dir.join("tss").join(kind).join(&rel);
            write_flo(&dir.join("flow1.flo"), &flows[0][k])?;
            write_flo(&dir.join("flow2.flo"), &flows[1][k])?;
            let (a, b) = pair_scores(&flows[0][k], &flows[1][k], &gt[0], &gt[1]);
            t5.push((a[4] + b[4]) / 2.0);
        }
        rows.entry(pair.subset.clone())
            .or_default()
            .push([t5[0], t5[1], t5[2]]);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut md = String::from(
        "# TSS flow accuracy (T5: error ≤ 5 % of the larger image side, foreground pixels)\n\n| subset | pairs | affine | affine∘TPS | identity |\n|---|---|---|---|---|\n",
    );
    let mut json = serde_json::Map::new();
    for (subset, v) in &rows {
        let n = v.len() as f64;
        let mean = |k: usize| v.iter().map(|x| x[k]).sum::<f64>() / n;
        let (i, a, b) = (mean(0), mean(1), mean(2));
        md += &format!("| {subset} | {} | {a:.4} | {b:.4} | {i:.4} |\n", v.len());
        json.insert(
            subset.clone(),
            serde_json::json!({"pairs": v.len(), "aff": a, "aff_tps": b, "identity": i}),
        );
    }
    let report = serde_json::json!({"dataset": "tss", "protocol": {"metric": "kit flow accuracy T5", "alpha": 0.05, "frame": "larger side of the other image's ground truth", "tps_lambda": args.tps_lambda}, "subsets": json});
    write_report(out_dir, "tss", &report, &md)
}

/// Caltech-101 label transfer (needs `test_pairs_caltech_with_category.csv` with polygons).
fn caltech(
    model: &crate::model::TwoStage,
    norm: crate::backbone::Normalization,
    args: &EvalArgs,
    out_dir: &Path,
) -> Result<()> {
    use crate::data::image::load_rgb;
    use crate::eval::caltech::{label_transfer, polygon_mask};

    let root = args.datasets.join("caltech-101");
    let csv = root.join("test_pairs_caltech_with_category.csv");
    if !csv.is_file() {
        bail!(
            "{} is missing: Caltech-101 evaluation needs the authors' pair list with object polygons (the images alone are not enough)",
            csv.display()
        );
    }
    let pairs = crate::data::caltech::read_pairs(&csv)?;
    let spline = Tps::new(args.tps_lambda)?;
    let mut sums = [[0.0f64; 3]; 3]; // kind × (lt_acc, iou, loc_err)
    let mut counts = [[0usize; 3]; 3];
    let bar = indicatif::ProgressBar::new(pairs.len() as u64);
    for p in &pairs {
        let (src, tgt) = (
            load_rgb(&root.join(&p.source))?,
            load_rgb(&root.join(&p.target))?,
        );
        let (th, tw) = (tgt.height, tgt.width);
        let (ms, mt) = (
            polygon_mask(&p.source_polygon, src.height, src.width),
            polygon_mask(&p.target_polygon, th, tw),
        );
        for (k, locs) in dense_locations(model, norm, &src, &tgt, &spline)?
            .iter()
            .enumerate()
        {
            let s = label_transfer(&ms, &mt, locs)?;
            for (j, value) in [Some(s.lt_acc), Some(s.iou), s.loc_err]
                .into_iter()
                .enumerate()
            {
                if let Some(x) = value {
                    sums[k][j] += x;
                    counts[k][j] += 1;
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mean = |k: usize, j: usize| sums[k][j] / counts[k][j].max(1) as f64;
    let mut md = format!(
        "# Caltech-101 label transfer ({} pairs)\n\n| transform | LT-ACC | IoU | LOC-ERR |\n|---|---|---|---|\n",
        pairs.len()
    );
    let mut json = serde_json::Map::new();
    for (k, name) in ["identity", "aff", "aff_tps"].iter().enumerate() {
        md += &format!(
            "| {name} | {:.4} | {:.4} | {:.4} |\n",
            mean(k, 0),
            mean(k, 1),
            mean(k, 2)
        );
        json.insert(
            name.to_string(),
            serde_json::json!({"lt_acc": mean(k, 0), "iou": mean(k, 1), "loc_err": mean(k, 2)}),
        );
    }
    let report = serde_json::json!({"dataset": "caltech-101", "pairs": pairs.len(), "protocol": {"resolution": "target's original", "threshold": 0.5, "tps_lambda": args.tps_lambda}, "scores": json});
    write_report(out_dir, "caltech-101", &report, &md)
}

/// Normalized source locations of every target pixel (row-major, the target's own resolution)
/// under the identity, θ_aff and θ_aff∘θ_tps predicted for `(source, target)`.
fn dense_locations(
    model: &crate::model::TwoStage,
    norm: crate::backbone::Normalization,
    source: &crate::data::image::RgbImage,
    target: &crate::data::image::RgbImage,
    spline: &Tps,
) -> Result<[Vec<(f64, f64)>; 3]> {
    use crate::data::image::{normalize, resize};
    use crate::geometry::{
        AffineTheta, ComposeBorder, Composed, GridFactors, Theta, sampling_grid,
    };

    let device = crate::device::inference();
    let size = model.image_size;
    let input = |img: &crate::data::image::RgbImage| {
        normalize(
            resize(
                img.to_tensor(&device, burn::tensor::DType::F32),
                [size, size],
            ),
            norm,
        )
    };
    let out = model.forward(input(source), input(target))?;
    let (h, w) = (target.height, target.width);
    let identity = AffineTheta::identity(1, &device, burn::tensor::DType::F32);
    let composed = Composed {
        affine: &out.theta_aff,
        tps: spline.warp(&out.theta_tps),
    };
    let grids = [
        sampling_grid(&identity, [h, w], GridFactors::default())?,
        sampling_grid(&out.theta_aff, [h, w], GridFactors::default())?,
        composed.grid([h, w], GridFactors::default(), ComposeBorder::Analytic)?,
    ];
    let mut out = [Vec::new(), Vec::new(), Vec::new()];
    for (k, g) in grids.into_iter().enumerate() {
        let v = crate::device::read_f64(g);
        out[k] = v.chunks(2).map(|p| (p[0], p[1])).collect();
    }
    Ok(out)
}
