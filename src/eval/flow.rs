//! Dense flow and the TSS flow-accuracy metric, as the TSS evaluation kit computes it.
//!
//! For each pair folder the kit scores `(flow1 on image 1 → image 2)` and `(flow2, the reverse)`
//! against ground truth: a ground-truth pixel is valid where `u_gt < 1e9`; the accuracy at
//! threshold `t` (`T1 … T50`) is `1 − #{valid, ‖flow − flow_gt‖ > t/100 · max(H, W)} / #valid`,
//! with `H, W` the size of the *other* image's ground-truth flow; T5 is the number papers report.
//! A method's flow of another size is first resized the kit's way (its C++ tool, which wrote the
//! sample's `scores.csv`): OpenCV `INTER_LINEAR` on each component, vectors rescaled to the new
//! image sizes, pixels invalidated where interpolation touched an invalid one; everything in f32.
//! `Average` is the mean over rows, `w/o flip` over rows whose pair has `flip_gt = 0`.
//!
//! ## Reference
//! TSS evaluation kit: `EvalToolVC` (`main.cpp` `compute_score`, `CvUtils.h` `ResizeFlow`,
//! `computeFlowError`); the MATLAB tool (`RunEvaluation.m`) defines the same metric
//! (weakalign-reference §10.4, §17); weakalign `geotnf/flow.py` for flow from a sampling grid.

use crate::data::tss::{Flow, UNKNOWN_FLOW};

/// Value written into invalid flow pixels.
pub const INVALID: f32 = 1e10;

/// Linear-interpolation taps of OpenCV's `cv::resize(INTER_LINEAR)` along one axis, in f32 as
/// OpenCV computes them: `f = (x + 0.5)·in/out − 0.5`, clamped to the border.
fn taps(in_len: usize, out_len: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = 1.0 / (out_len as f64 / in_len as f64);
    (0..out_len)
        .map(|x| {
            let f = ((x as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut frac = f - s as f32;
            if s < 0 {
                s = 0;
                frac = 0.0;
            }
            if s >= in_len as i64 - 1 {
                s = in_len as i64 - 1;
                frac = 0.0;
            }
            let s = s as usize;
            (s, (s + 1).min(in_len - 1), 1.0 - frac, frac)
        })
        .collect()
}

/// `cv::resize(INTER_LINEAR)` of a row-major f32 image with `channels` interleaved channels:
/// horizontal pass per row, then vertical, in f32.
fn resize_linear(
    src: &[f32],
    (h, w): (usize, usize),
    channels: usize,
    (nh, nw): (usize, usize),
) -> Vec<f32> {
    let (tx, ty) = (taps(w, nw), taps(h, nh));
    let rows: Vec<Vec<f32>> = (0..h)
        .map(|y| {
            let row = &src[y * w * channels..(y + 1) * w * channels];
            let mut out = vec![0.0f32; nw * channels];
            for (x, &(s0, s1, a0, a1)) in tx.iter().enumerate() {
                for c in 0..channels {
                    out[x * channels + c] =
                        row[s0 * channels + c] * a0 + row[s1 * channels + c] * a1;
                }
            }
            out
        })
        .collect();
    let mut out = vec![0.0f32; nh * nw * channels];
    for (y, &(s0, s1, b0, b1)) in ty.iter().enumerate() {
        for i in 0..nw * channels {
            out[y * nw * channels + i] = rows[s0][i] * b0 + rows[s1][i] * b1;
        }
    }
    out
}

fn valid_pixel(u: f32, v: f32) -> bool {
    u.abs() <= UNKNOWN_FLOW && v.abs() <= UNKNOWN_FLOW
}

/// Resizes a method's flow on image A (pointing into image B) to the ground-truth sizes, as the
/// kit's `ResizeFlow`: components resized linearly, vectors mapped through the old and new sizes
/// of both images (0-based pixel grids), and pixels whose interpolation touched an invalid pixel
/// set to unknown (1e10). All in f32, as the kit.
pub fn resize_flow(
    flow: &Flow,
    size_b: (usize, usize),
    new_a: (usize, usize),
    new_b: (usize, usize),
) -> Flow {
    let (h, w) = (flow.height, flow.width);
    if (h, w) == new_a && size_b == new_b {
        return flow.clone();
    }
    let valid: Vec<f32> = flow
        .uv
        .chunks(2)
        .map(|p| if valid_pixel(p[0], p[1]) { 1.0 } else { 0.0 })
        .collect();
    let valid = resize_linear(&valid, (h, w), 1, new_a);
    let resized = resize_linear(&flow.uv, (h, w), 2, new_a);
    let (nh, nw) = new_a;
    let (sx_old, sy_old) = ((w as f64 / nw as f64) as f32, (h as f64 / nh as f64) as f32);
    let (sx_new, sy_new) = (
        (new_b.1 as f64 / size_b.1 as f64) as f32,
        (new_b.0 as f64 / size_b.0 as f64) as f32,
    );
    let mut uv = Vec::with_capacity(2 * nh * nw);
    for y in 0..nh {
        for x in 0..nw {
            let i = y * nw + x;
            if valid[i] != 1.0 {
                uv.extend([INVALID, INVALID]);
                continue;
            }
            let (gx, gy) = (x as f32, y as f32);
            uv.push((resized[2 * i] + gx * sx_old) * sx_new - gx);
            uv.push((resized[2 * i + 1] + gy * sy_old) * sy_new - gy);
        }
    }
    Flow {
        height: nh,
        width: nw,
        uv,
    }
}

/// Flow accuracy at thresholds `1..=50` % of `reference_side` (the other image's larger side),
/// over the ground truth's valid pixels; errors in f32 as the kit, and 1000 where exactly one of
/// the two flows is unknown.
pub fn flow_accuracy(flow: &Flow, truth: &Flow, reference_side: usize) -> [f64; 50] {
    let mut errors = Vec::new();
    for (p, g) in flow.uv.chunks(2).zip(truth.uv.chunks(2)) {
        let (vp, vg) = (valid_pixel(p[0], p[1]), valid_pixel(g[0], g[1]));
        if vg {
            let (du, dv) = (p[0] - g[0], p[1] - g[1]);
            errors.push(if vp {
                (du * du + dv * dv).sqrt()
            } else {
                1000.0
            });
        }
    }
    let n = errors.len().max(1) as f64;
    let mut out = [0.0; 50];
    for (k, o) in out.iter_mut().enumerate() {
        let threshold = ((k + 1) as f64 / 100.0 * reference_side as f64) as f32;
        *o = 1.0 - errors.iter().filter(|&&e| e > threshold).count() as f64 / n;
    }
    out
}

/// The kit's two rows for a pair: `(1to2, 2to1)` accuracies of a method's `flow1`, `flow2`
/// against the ground truth `gt1`, `gt2`.
pub fn pair_scores(flow1: &Flow, flow2: &Flow, gt1: &Flow, gt2: &Flow) -> ([f64; 50], [f64; 50]) {
    let (s1, s2) = ((gt1.height, gt1.width), (gt2.height, gt2.width));
    let f1 = resize_flow(flow1, (flow2.height, flow2.width), s1, s2);
    let f2 = resize_flow(flow2, (flow1.height, flow1.width), s2, s1);
    (
        flow_accuracy(&f1, gt1, s2.0.max(s2.1)),
        flow_accuracy(&f2, gt2, s1.0.max(s1.1)),
    )
}

/// Dense flow on a target image from normalized source locations: `(u, v)` = source pixel −
/// target pixel (1-based), `1e10` where a location leaves `(-1, 1)²` (weakalign
/// `th_sampling_grid_to_np_flow`).
///
/// `locations` holds `(x, y)` per target pixel, row-major, for a `target` of `(h, w)`.
pub fn flow_from_locations(
    locations: &[(f64, f64)],
    target: (usize, usize),
    source: (usize, usize),
) -> Flow {
    use crate::geometry::points::unnormalize_axis;
    let (h, w) = target;
    let mut uv = Vec::with_capacity(2 * h * w);
    for (i, &(x, y)) in locations.iter().enumerate() {
        if x.abs() >= 1.0 || y.abs() >= 1.0 || !x.is_finite() || !y.is_finite() {
            uv.extend([INVALID, INVALID]);
            continue;
        }
        let (tx, ty) = ((i % w + 1) as f64, (i / w + 1) as f64);
        uv.extend([
            (unnormalize_axis(x, source.1) - tx) as f32,
            (unnormalize_axis(y, source.0) - ty) as f32,
        ]);
    }
    Flow {
        height: h,
        width: w,
        uv,
    }
}
