//! Alignment of a user's own image pair with a trained model, and the figures that show it.
//!
//! [`align`] computes everything in memory; [`Alignment::write`] then writes `theta.json`
//! (θ_aff, θ_tps), `warped.png` (the source warped onto the target at the target's original
//! resolution, affine∘TPS), `checkerboard.png` (warped source and target in alternating tiles),
//! `matches.png` (source | target; the strongest quarter of the target cells' best matches, by
//! correlation score, each joined to its source cell and coloured from red to green by its
//! soft-inlier weight under the predicted transform — the paper's figure), and with points the
//! transferred keypoints (`points.csv`).

use std::path::Path;

use burn::tensor::DType;

use crate::backbone::Normalization;
use crate::data::image::{RgbImage, resize};
use crate::error::{Error, Result};
use crate::eval::dense::predict;
use crate::eval::pck::{Prediction, transfer};
use crate::geometry::{ComposeBorder, Composed, GridFactors, Theta, Tps, sample};
use crate::model::TwoStage;

/// A finished alignment.
#[derive(Clone, Debug)]
pub struct Alignment {
    /// θ_aff, 6 values (target → source, normalized coordinates).
    pub theta_aff: Vec<f64>,
    /// θ_tps, 18 values.
    pub theta_tps: Vec<f64>,
    /// TPS λ of the warp.
    pub tps_lambda: f64,
    /// Passes of the affine head ([`TwoStage::forward_refined`]; 1 = the paper).
    pub affine_passes: usize,
    /// The source warped onto the target's pixel grid.
    pub warped: RgbImage,
    /// Warped source and target in alternating tiles.
    pub checkerboard: RgbImage,
    /// The matches figure.
    pub matches: RgbImage,
    /// The transferred points, when points were given.
    pub points: Option<Vec<PointTransfer>>,
}

/// A target point and where it lands in the source, `(x, y)` in 1-based pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointTransfer {
    /// In the target.
    pub target: (f64, f64),
    /// In the source.
    pub source: (f64, f64),
}

/// Aligns `source` onto `target` (raw images at any size) and transfers `points` (target
/// pixels) into the source.
pub fn align(
    model: &TwoStage,
    norm: Normalization,
    source: &RgbImage,
    target: &RgbImage,
    points: Option<&[(f64, f64)]>,
    tps_lambda: f64,
    affine_passes: usize,
) -> Result<Alignment> {
    if let Some(p) = points.and_then(|p| p.iter().find(|(x, y)| !(x.is_finite() && y.is_finite())))
    {
        return Err(Error::Argument {
            op: "align",
            arg: "points",
            reason: format!("{p:?} is not a finite point"),
        });
    }
    let device = model.device();
    let size = model.image_size;
    let out = predict(model, norm, source, target, affine_passes)?;
    let theta_aff = crate::device::read_f64(out.theta_aff.tensor().clone());
    let theta_tps = crate::device::read_f64(out.theta_tps.tensor().clone());
    let spline = Tps::new(tps_lambda)?;
    let composed = Composed {
        affine: &out.theta_aff,
        tps: spline.warp(&out.theta_tps),
    };

    // Warp the raw source onto the target's own pixel grid.
    let (th, tw) = (target.height, target.width);
    let grid = composed.grid([th, tw], GridFactors::default(), ComposeBorder::Analytic)?;
    let warped = RgbImage::from_tensor(sample(source.to_tensor(&device, DType::F32), grid)?, None);
    let checkerboard = checkerboard(target, &warped);

    // Matches coloured by soft-inlier weight, on both images resized to the network size.
    let at_size = |img: &RgbImage| {
        RgbImage::from_tensor(
            resize(img.to_tensor(&device, DType::F32), [size, size]),
            None,
        )
    };
    let mut canvas = side_by_side(&at_size(source), &at_size(target));
    let corr = out.corr_aff;
    let [_, _, h, w] = corr.dims();
    let scores = crate::device::read_f64(corr);
    let locations = composed.grid(
        [h, w],
        GridFactors::offset(crate::geometry::WEAK_LOSS_OFFSET_FACTOR),
        ComposeBorder::Analytic,
    )?;
    let locations = crate::device::read_f64(locations);
    draw_matches(&mut canvas, size, [h, w], &scores, &locations);

    let points = match points {
        Some(pts) => {
            let prediction = Prediction::AffineTps(theta_aff.clone(), theta_tps.clone());
            let moved = transfer(
                &prediction,
                pts,
                (th, tw),
                (source.height, source.width),
                &spline,
            )?;
            Some(
                pts.iter()
                    .zip(moved)
                    .map(|(&target, source)| PointTransfer { target, source })
                    .collect(),
            )
        }
        None => None,
    };
    Ok(Alignment {
        theta_aff,
        theta_tps,
        tps_lambda,
        affine_passes,
        warped,
        checkerboard,
        matches: canvas,
        points,
    })
}

/// `target` with every other tile (1/8 of the larger side) taken from `warped`.
fn checkerboard(target: &RgbImage, warped: &RgbImage) -> RgbImage {
    let (th, tw) = (target.height, target.width);
    let tile = (th.max(tw) / 8).max(1);
    let mut out = target.clone();
    for y in 0..th {
        for x in 0..tw {
            if (x / tile + y / tile) % 2 == 0 {
                let k = (y * tw + x) * 3;
                out.pixels[k..k + 3].copy_from_slice(&warped.pixels[k..k + 3]);
            }
        }
    }
    out
}

/// Two square images of side `size`, left and right.
fn side_by_side(left: &RgbImage, right: &RgbImage) -> RgbImage {
    let size = left.height;
    let mut canvas = RgbImage {
        height: size,
        width: 2 * size,
        pixels: vec![0; 2 * size * size * 3],
    };
    for y in 0..size {
        canvas.pixels[(y * 2 * size) * 3..(y * 2 * size + size) * 3]
            .copy_from_slice(&left.pixels[y * size * 3..(y + 1) * size * 3]);
        canvas.pixels[(y * 2 * size + size) * 3..(y * 2 * size + 2 * size) * 3]
            .copy_from_slice(&right.pixels[y * size * 3..(y + 1) * size * 3]);
    }
    canvas
}

/// Draws the strongest quarter of the target cells' best matches on a side-by-side canvas,
/// coloured red → green by the bilinear (soft-inlier) weight of the matched source cell at the
/// predicted location.
///
/// `scores` is the correlation `[1, h·w, h, w]` (channel `k = x·h + y`) and `locations` the
/// predicted normalized source locations `[1, h, w, 2]` of the target cells, both row-major.
fn draw_matches(
    canvas: &mut RgbImage,
    size: usize,
    [h, w]: [usize; 2],
    scores: &[f64],
    locations: &[f64],
) {
    let k = h * w;
    let cell = |i: usize, n: usize| (i as f64 + 0.5) * size as f64 / n as f64;
    // Best source cell per target cell, then keep the strongest quarter (less clutter).
    let best: Vec<(usize, usize, f64)> = (0..h * w)
        .map(|p| {
            let b = (0..k)
                .max_by(|&a, &b| scores[a * h * w + p].total_cmp(&scores[b * h * w + p]))
                .unwrap_or(0);
            (p, b, scores[b * h * w + p])
        })
        .collect();
    let mut sorted: Vec<f64> = best.iter().map(|m| m.2).collect();
    sorted.sort_by(f64::total_cmp);
    let cutoff = sorted[sorted.len() * 3 / 4];
    for &(p, best, _) in best.iter().filter(|m| m.2 >= cutoff) {
        let (xa, ya) = (best / h, best % h); // k = x·h + y
        let (u, v) = (
            (locations[2 * p] + 1.0) / 2.0 * (w as f64 - 1.0),
            (locations[2 * p + 1] + 1.0) / 2.0 * (h as f64 - 1.0),
        );
        let weight = ((1.0 - (u - xa as f64).abs()).max(0.0)
            * (1.0 - (v - ya as f64).abs()).max(0.0))
        .clamp(0.0, 1.0);
        let color = [(255.0 * (1.0 - weight)) as u8, (255.0 * weight) as u8, 40];
        let (xb, yb) = (p % w, p / w);
        line(
            canvas,
            (cell(xa, w), cell(ya, h)),
            (size as f64 + cell(xb, w), cell(yb, h)),
            color,
        );
    }
}

/// A straight line of `color` (clipped to the image).
fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = ((x0 + t * (x1 - x0)).round(), (y0 + t * (y1 - y0)).round());
        if x >= 0.0 && y >= 0.0 && (x as usize) < img.width && (y as usize) < img.height {
            let k = (y as usize * img.width + x as usize) * 3;
            img.pixels[k..k + 3].copy_from_slice(&color);
        }
    }
}

impl Alignment {
    /// Writes the outputs into `out` (created if needed; each file atomically) and returns the
    /// names written. `source` and `target` are recorded in `theta.json`.
    pub fn write(&self, out: &Path, source: &Path, target: &Path) -> Result<Vec<&'static str>> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let json = serde_json::json!({
            "source": source.display().to_string(), "target": target.display().to_string(),
            "theta_aff": self.theta_aff, "theta_tps": self.theta_tps, "tps_lambda": self.tps_lambda, "affine_passes": self.affine_passes,
            "convention": "θ maps target to source, normalized coordinates in [-1, 1], align_corners = true; affine∘TPS applies the TPS first",
        });
        let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
        crate::fsutil::write_atomic(&out.join("theta.json"), text.as_bytes())?;
        self.warped.save_png(&out.join("warped.png"))?;
        self.checkerboard.save_png(&out.join("checkerboard.png"))?;
        self.matches.save_png(&out.join("matches.png"))?;
        let mut written = vec![
            "theta.json",
            "warped.png",
            "checkerboard.png",
            "matches.png",
        ];
        if let Some(points) = &self.points {
            let mut csv = String::from("target_x,target_y,source_x,source_y\n");
            for PointTransfer {
                target: t,
                source: s,
            } in points
            {
                csv += &format!("{:.3},{:.3},{:.3},{:.3}\n", t.0, t.1, s.0, s.1);
            }
            crate::fsutil::write_atomic(&out.join("points.csv"), csv.as_bytes())?;
            written.push("points.csv");
        }
        Ok(written)
    }
}
