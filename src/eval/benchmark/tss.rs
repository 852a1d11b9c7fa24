//! TSS: dense flows of the model for both directions of every pair (written as `.flo` under
//! `<out>/tss/<kind>/<subset>/<pair>/`), scored with the kit's flow accuracy (T5 = α 0.05).

use std::collections::BTreeMap;
use std::path::Path;

use super::{EvalOptions, Report, Subject};
use crate::data::image::load_rgb;
use crate::data::layout;
use crate::data::tss::{Flow, read_flo, tss_pairs, write_flo};
use crate::error::Result;
use crate::eval::dense::dense_locations;
use crate::eval::flow::{flow_from_locations, pair_scores};
use crate::geometry::Tps;

/// The prediction kinds, in the order of [`dense_locations`].
const KINDS: [&str; 3] = ["identity", "aff", "aff_tps"];

/// T5 per subset for the three kinds; each flow is written under `out` as it is computed (the
/// full benchmark's flows would not fit in memory).
fn score(
    subject: Subject<'_>,
    options: &EvalOptions,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BTreeMap<String, Vec<[f64; 3]>>> {
    let root = layout::tss(&options.datasets);
    let pairs = tss_pairs(&root)?;
    let spline = Tps::new(options.tps_lambda)?;
    let mut rows: BTreeMap<String, Vec<[f64; 3]>> = BTreeMap::new();
    for (done, pair) in pairs.iter().enumerate() {
        let images = [load_rgb(&pair.image(1))?, load_rgb(&pair.image(2))?];
        let mut flows = Vec::new();
        // flow1 lives on image 1 (target) and points into image 2 (source); flow2 the reverse.
        for (t, s) in [(0usize, 1usize), (1, 0)] {
            let mut src = images[s].clone();
            if pair.flip {
                src = crate::data::weak::flip_horizontal(&src);
            }
            let (th, tw) = (images[t].height, images[t].width);
            let per_kind: Vec<Flow> = dense_locations(
                subject.model,
                subject.norm,
                &src,
                &images[t],
                &spline,
                options.affine_passes,
            )?
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
        let mut t5 = [0.0; 3];
        for (k, kind) in KINDS.iter().enumerate() {
            let dir = out
                .join(super::stem("tss".into(), options))
                .join(kind)
                .join(&rel);
            write_flo(&dir.join("flow1.flo"), &flows[0][k])?;
            write_flo(&dir.join("flow2.flo"), &flows[1][k])?;
            let (a, b) = pair_scores(&flows[0][k], &flows[1][k], &gt[0], &gt[1]);
            t5[k] = (a[4] + b[4]) / 2.0;
        }
        rows.entry(pair.subset.clone()).or_default().push(t5);
        progress(done + 1, pairs.len());
    }
    Ok(rows)
}

/// Mean of each column of `rows` (identity, affine, affine∘TPS T5 per pair); 0 for no rows.
fn column_means(rows: &[[f64; 3]]) -> [f64; 3] {
    let n = rows.len().max(1) as f64;
    [0, 1, 2].map(|k| rows.iter().map(|r| r[k]).sum::<f64>() / n)
}

/// The TSS report; the `.flo` files of every pair and kind are written under `out`.
pub fn evaluate(
    subject: Subject<'_>,
    options: &EvalOptions,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report> {
    let rows = score(subject, options, out, progress)?;
    let mut md = String::from(
        "# TSS flow accuracy (T5: error ≤ 5 % of the larger image side, foreground pixels)\n\n| subset | pairs | affine | affine∘TPS | identity |\n|---|---|---|---|---|\n",
    );
    let mut json = serde_json::Map::new();
    for (subset, v) in &rows {
        let [i, a, b] = column_means(v);
        md += &format!("| {subset} | {} | {a:.4} | {b:.4} | {i:.4} |\n", v.len());
        json.insert(
            subset.clone(),
            serde_json::json!({"pairs": v.len(), "aff": a, "aff_tps": b, "identity": i}),
        );
    }
    // Over all pairs, whatever their subset: the sample's one number (`weakalign compare`'s).
    let all: Vec<[f64; 3]> = rows.values().flatten().copied().collect();
    let [i, a, b] = column_means(&all);
    md += &format!(
        "| **all** | **{}** | **{a:.4}** | **{b:.4}** | **{i:.4}** |\n",
        all.len()
    );
    let overall = serde_json::json!({"pairs": all.len(), "aff": a, "aff_tps": b, "identity": i});
    let json = serde_json::json!({"dataset": "tss", "overall": overall, "protocol": {"metric": "kit flow accuracy T5", "alpha": 0.05, "frame": "larger side of the other image's ground truth", "tps_lambda": options.tps_lambda, "affine_passes": options.affine_passes}, "subsets": json});
    Ok(Report {
        name: "tss".into(),
        json,
        markdown: md,
    })
}
