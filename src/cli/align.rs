//! `weakalign align A B`: align your own images with a checkpoint and show the result.
//!
//! Writes `theta.json` (θ_aff, θ_tps), `warped.png` (the source warped onto the target at the
//! target's original resolution, affine∘TPS), `checkerboard.png` (warped source and target in
//! alternating tiles), `matches.png` (source | target; the strongest quarter of the target cells'
//! best matches, by correlation score, each joined to its source cell and coloured from red to
//! green by its soft-inlier weight under the predicted transform — the paper's figure), and with
//! `--points` the transferred keypoints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{DType, Tensor};

use crate::data::image::{RgbImage, load_rgb, normalize, resize};
use crate::experiment::checkpoint::load_model;
use crate::geometry::{ComposeBorder, Composed, GridFactors, Theta, Tps, sample};

/// Options of `weakalign align`.
pub struct AlignArgs {
    /// Source image (warped onto the target).
    pub source: PathBuf,
    /// Target image.
    pub target: PathBuf,
    /// Checkpoint.
    pub checkpoint: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Optional CSV of target points `x,y` (1-based pixels), transferred into the source.
    pub points: Option<PathBuf>,
    /// TPS λ of the warp (reference eval: 0).
    pub tps_lambda: f64,
}

fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    let buf = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.pixels.clone())
        .expect("buffer size");
    let tmp = crate::fsutil::temporary_sibling(path);
    buf.save_with_format(&tmp, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn to_rgb(t: Tensor<4>) -> Result<RgbImage> {
    let [_, _, h, w] = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut pixels = vec![0u8; h * w * 3];
    for c in 0..3 {
        for i in 0..h * w {
            pixels[i * 3 + c] = v[c * h * w + i].clamp(0.0, 255.0).round() as u8;
        }
    }
    Ok(RgbImage {
        height: h,
        width: w,
        pixels,
    })
}

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

/// Runs the alignment.
pub fn run(args: AlignArgs) -> Result<()> {
    let (model, exp, _) = load_model(&args.checkpoint)?;
    let norm = crate::experiment::resolve::resolve(&exp, &args.checkpoint)?
        .backbone
        .normalization();
    let (src, tgt) = (load_rgb(&args.source)?, load_rgb(&args.target)?);
    let device = crate::device::inference();
    let size = model.image_size;
    let input = |img: &RgbImage| {
        normalize(
            resize(img.to_tensor(&device, DType::F32), [size, size]),
            norm,
        )
    };
    let out = model.forward(input(&src), input(&tgt))?;
    let theta_aff = crate::device::read_f64(out.theta_aff.tensor().clone());
    let theta_tps = crate::device::read_f64(out.theta_tps.tensor().clone());
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = serde_json::json!({
        "source": args.source.display().to_string(), "target": args.target.display().to_string(),
        "theta_aff": theta_aff, "theta_tps": theta_tps, "tps_lambda": args.tps_lambda,
        "convention": "θ maps target to source, normalized coordinates in [-1, 1], align_corners = true; affine∘TPS applies the TPS first",
    });
    crate::fsutil::write_atomic(
        &args.out.join("theta.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;

    // Warp the raw source onto the target's own pixel grid.
    let spline = Tps::new(args.tps_lambda)?;
    let composed = Composed {
        affine: &out.theta_aff,
        tps: spline.warp(&out.theta_tps),
    };
    let (th, tw) = (tgt.height, tgt.width);
    let grid = composed.grid([th, tw], GridFactors::default(), ComposeBorder::Analytic)?;
    let warped = to_rgb(sample(src.to_tensor(&device, DType::F32), grid)?)?;
    save_png(&args.out.join("warped.png"), &warped)?;
    let tile = (th.max(tw) / 8).max(1);
    let mut checker = tgt.clone();
    for y in 0..th {
        for x in 0..tw {
            if (x / tile + y / tile) % 2 == 0 {
                let k = (y * tw + x) * 3;
                checker.pixels[k..k + 3].copy_from_slice(&warped.pixels[k..k + 3]);
            }
        }
    }
    save_png(&args.out.join("checkerboard.png"), &checker)?;

    // Matches coloured by soft-inlier weight, on both images resized to the network size.
    let (sr, tr) = (
        to_rgb(resize(src.to_tensor(&device, DType::F32), [size, size]))?,
        to_rgb(resize(tgt.to_tensor(&device, DType::F32), [size, size]))?,
    );
    let mut canvas = RgbImage {
        height: size,
        width: 2 * size,
        pixels: vec![0; 2 * size * size * 3],
    };
    for y in 0..size {
        canvas.pixels[(y * 2 * size) * 3..(y * 2 * size + size) * 3]
            .copy_from_slice(&sr.pixels[y * size * 3..(y + 1) * size * 3]);
        canvas.pixels[(y * 2 * size + size) * 3..(y * 2 * size + 2 * size) * 3]
            .copy_from_slice(&tr.pixels[y * size * 3..(y + 1) * size * 3]);
    }
    let corr = out.corr_aff;
    let [_, k, h, w] = corr.dims();
    let c = crate::device::read_f64(corr);
    let locations = composed.grid(
        [h, w],
        GridFactors::offset(crate::geometry::WEAK_LOSS_OFFSET_FACTOR),
        ComposeBorder::Analytic,
    )?;
    let loc = crate::device::read_f64(locations);
    let cell = |i: usize, n: usize| (i as f64 + 0.5) * size as f64 / n as f64;
    // Best source cell per target cell, then keep the strongest quarter (less clutter).
    let best: Vec<(usize, usize, f64)> = (0..h * w)
        .map(|p| {
            let b = (0..k)
                .max_by(|&a, &b| c[a * h * w + p].total_cmp(&c[b * h * w + p]))
                .unwrap_or(0);
            (p, b, c[b * h * w + p])
        })
        .collect();
    let mut scores: Vec<f64> = best.iter().map(|m| m.2).collect();
    scores.sort_by(f64::total_cmp);
    let cutoff = scores[scores.len() * 3 / 4];
    for &(p, best, _) in best.iter().filter(|m| m.2 >= cutoff) {
        let (xa, ya) = (best / h, best % h); // k = x·h + y
        // Bilinear (soft-inlier) weight of the matched cell at the predicted location T(p).
        let (u, v) = (
            (loc[2 * p] + 1.0) / 2.0 * (w as f64 - 1.0),
            (loc[2 * p + 1] + 1.0) / 2.0 * (h as f64 - 1.0),
        );
        let weight = ((1.0 - (u - xa as f64).abs()).max(0.0)
            * (1.0 - (v - ya as f64).abs()).max(0.0))
        .clamp(0.0, 1.0);
        let color = [(255.0 * (1.0 - weight)) as u8, (255.0 * weight) as u8, 40];
        let (xb, yb) = (p % w, p / w);
        line(
            &mut canvas,
            (cell(xa, w), cell(ya, h)),
            (size as f64 + cell(xb, w), cell(yb, h)),
            color,
        );
    }
    save_png(&args.out.join("matches.png"), &canvas)?;

    if let Some(points) = &args.points {
        let text = std::fs::read_to_string(points)
            .with_context(|| format!("reading {}", points.display()))?;
        let mut pts = Vec::new();
        for (i, l) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let f: Vec<&str> = l.split(',').collect();
            let parse = |s: &str| s.trim().parse::<f64>().ok();
            match (
                f.first().and_then(|s| parse(s)),
                f.get(1).and_then(|s| parse(s)),
            ) {
                (Some(x), Some(y)) => pts.push((x, y)),
                _ if i == 0 => {} // header
                _ => bail!("{}:{}: expected `x,y`", points.display(), i + 1),
            }
        }
        let prediction =
            crate::eval::pck::Prediction::AffineTps(theta_aff.clone(), theta_tps.clone());
        let moved = crate::eval::pck::transfer(
            &prediction,
            &pts,
            (th, tw),
            (src.height, src.width),
            &spline,
        )?;
        let mut csv = String::from("target_x,target_y,source_x,source_y\n");
        for (a, b) in pts.iter().zip(&moved) {
            csv += &format!("{:.3},{:.3},{:.3},{:.3}\n", a.0, a.1, b.0, b.1);
        }
        crate::fsutil::write_atomic(&args.out.join("points.csv"), csv.as_bytes())?;
    }
    println!(
        "wrote theta.json, warped.png, checkerboard.png, matches.png{} to {}",
        if args.points.is_some() {
            ", points.csv"
        } else {
            ""
        },
        args.out.display()
    );
    Ok(())
}
