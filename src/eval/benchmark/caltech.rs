//! Caltech-101 label transfer (needs the authors' `test_pairs_caltech_with_category.csv` with
//! object polygons): LT-ACC, IoU and LOC-ERR of the identity, affine and affine∘TPS transfers.

use super::{EvalOptions, Report, Subject};
use crate::data::image::load_rgb;
use crate::data::layout;
use crate::error::{Error, Result};
use crate::eval::caltech::{label_transfer, polygon_mask};
use crate::eval::dense::dense_locations;
use crate::geometry::Tps;

/// The label-transfer report of `subject`.
pub fn evaluate(
    subject: Subject<'_>,
    options: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report> {
    let root = layout::caltech_101(&options.datasets);
    let csv = root.join("test_pairs_caltech_with_category.csv");
    if !csv.is_file() {
        return Err(Error::data(
            &csv,
            None,
            "missing: Caltech-101 evaluation needs the authors' pair list with object polygons (the images alone are not enough)",
        ));
    }
    let pairs = crate::data::caltech::read_pairs(&csv)?;
    let spline = Tps::new(options.tps_lambda)?;
    let mut sums = [[0.0f64; 3]; 3]; // kind × (lt_acc, iou, loc_err)
    let mut counts = [[0usize; 3]; 3];
    for (done, p) in pairs.iter().enumerate() {
        let (src, tgt) = (
            load_rgb(&root.join(&p.source))?,
            load_rgb(&root.join(&p.target))?,
        );
        let (th, tw) = (tgt.height, tgt.width);
        let (ms, mt) = (
            polygon_mask(&p.source_polygon, src.height, src.width),
            polygon_mask(&p.target_polygon, th, tw),
        );
        let locations = dense_locations(
            subject.model,
            subject.norm,
            &src,
            &tgt,
            &spline,
            options.affine_passes,
        )?;
        for (k, locs) in locations.iter().enumerate() {
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
        progress(done + 1, pairs.len());
    }
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
    let json = serde_json::json!({"dataset": "caltech-101", "pairs": pairs.len(), "protocol": {"resolution": "target's original", "threshold": 0.5, "tps_lambda": options.tps_lambda, "affine_passes": options.affine_passes}, "scores": json});
    Ok(Report {
        name: "caltech-101".into(),
        json,
        markdown: md,
    })
}
