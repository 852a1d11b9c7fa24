//! Dense flow and the TSS flow-accuracy metric, as the TSS evaluation kit computes it.
//!
//! For each pair folder the kit scores `(flow1 on image 1 → image 2)` and `(flow2, the reverse)`
//! against ground truth: a ground-truth pixel is valid where `u_gt < 1e9`; the accuracy at
//! threshold `t` (`T1 … T50`) is `1 − #{valid, ‖flow − flow_gt‖ > t/100 · max(H, W)} / #valid`,
//! with `H, W` the size of the *other* image's ground-truth flow; T5 is the number papers report.
//! A method's flow of another size is first resized the kit's way: MATLAB `imresize` bilinear on
//! each component, vectors rescaled to the new image sizes, and pixels invalidated where any
//! interpolation input was invalid. `Average` is the mean over rows, `w/o flip` over rows whose pair
//! has `flip_gt = 0`.
//!
//! ## Reference
//! TSS evaluation kit: `RunEvaluation.m`, `compute_scores.m`, `resize_flows.m`
//! (weakalign-reference §10.4, §17); weakalign `geotnf/flow.py` for flow from a sampling grid.

use crate::data::tss::{Flow, UNKNOWN_FLOW};

/// Value written into invalid flow pixels.
pub const INVALID: f32 = 1e10;

/// MATLAB `imresize(..., 'bilinear')` weights along one axis: for each output index, the input
/// indices and weights (antialiasing when shrinking, mirrored borders, weights normalized).
fn contributions(in_len: usize, out_len: usize) -> Vec<Vec<(usize, f64)>> {
    let scale = out_len as f64 / in_len as f64;
    let (kernel_scale, width) = if scale < 1.0 {
        (scale, 2.0 / scale)
    } else {
        (1.0, 2.0)
    };
    let tri = |x: f64| (1.0 - x.abs()).max(0.0);
    (1..=out_len)
        .map(|x| {
            let u = x as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
            let left = (u - width / 2.0).floor() as i64;
            let taps = width.ceil() as i64 + 2;
            let mut w: Vec<(i64, f64)> = (0..taps)
                .map(|k| {
                    (
                        left + k,
                        kernel_scale * tri(kernel_scale * (u - (left + k) as f64)),
                    )
                })
                .collect();
            let sum: f64 = w.iter().map(|p| p.1).sum();
            for p in &mut w {
                p.1 /= sum;
            }
            let n = in_len as i64;
            w.into_iter()
                .filter(|p| p.1 != 0.0)
                .map(|(i, wt)| {
                    // Mirror out-of-range indices (1-based), as MATLAB's `[1:n, n:-1:1]`.
                    let mut j = (i - 1).rem_euclid(2 * n);
                    if j >= n {
                        j = 2 * n - 1 - j;
                    }
                    (j as usize, wt)
                })
                .collect()
        })
        .collect()
}

/// Resizes a single-channel row-major image with MATLAB's bilinear `imresize`: separable passes,
/// rows first (MATLAB resizes the dimension with the smaller scale first, rows on ties), each
/// output a sequential sum over its taps. Also reports, per output pixel, whether every input
/// with non-zero weight satisfied `valid` (the kit's `imresize(bwdist(valid)) == 0`).
fn imresize(
    src: &[f64],
    (h, w): (usize, usize),
    (nh, nw): (usize, usize),
    valid: &[bool],
) -> (Vec<f64>, Vec<bool>) {
    let rows = contributions(h, nh);
    let cols = contributions(w, nw);
    let (rows, cols, rows_first) = (rows, cols, (nh as f64 / h as f64) <= (nw as f64 / w as f64));
    let mut out = vec![0.0; nh * nw];
    let mut ok = vec![true; nh * nw];
    if rows_first {
        let mut mid = vec![0.0; nh * w];
        let mut mid_ok = vec![true; nh * w];
        for (y, taps) in rows.iter().enumerate() {
            for x in 0..w {
                let (mut acc, mut all) = (0.0, true);
                for &(sy, wy) in taps {
                    acc += wy * src[sy * w + x];
                    all &= valid[sy * w + x];
                }
                mid[y * w + x] = acc;
                mid_ok[y * w + x] = all;
            }
        }
        for y in 0..nh {
            for (x, taps) in cols.iter().enumerate() {
                let (mut acc, mut all) = (0.0, true);
                for &(sx, wx) in taps {
                    acc += wx * mid[y * w + sx];
                    all &= mid_ok[y * w + sx];
                }
                out[y * nw + x] = acc;
                ok[y * nw + x] = all;
            }
        }
    } else {
        let mut mid = vec![0.0; h * nw];
        let mut mid_ok = vec![true; h * nw];
        for y in 0..h {
            for (x, taps) in cols.iter().enumerate() {
                let (mut acc, mut all) = (0.0, true);
                for &(sx, wx) in taps {
                    acc += wx * src[y * w + sx];
                    all &= valid[y * w + sx];
                }
                mid[y * nw + x] = acc;
                mid_ok[y * nw + x] = all;
            }
        }
        for (y, taps) in rows.iter().enumerate() {
            for x in 0..nw {
                let (mut acc, mut all) = (0.0, true);
                for &(sy, wy) in taps {
                    acc += wy * mid[sy * nw + x];
                    all &= mid_ok[sy * nw + x];
                }
                out[y * nw + x] = acc;
                ok[y * nw + x] = all;
            }
        }
    }
    (out, ok)
}

/// Resizes a method's flow (defined on image A, pointing into image B) to the ground-truth sizes,
/// as the kit's `resize_flows`: components resized bilinearly, vectors mapped through the old and
/// new sizes of both images, invalid where any input pixel was invalid.
///
/// Values stay in f64, as the kit computes in double precision.
pub fn resize_flow(
    flow: &Flow,
    size_b: (usize, usize),
    new_a: (usize, usize),
    new_b: (usize, usize),
) -> Vec<f64> {
    let (h, w) = (flow.height, flow.width);
    if (h, w) == new_a && size_b == new_b {
        return flow.uv.iter().map(|&v| v as f64).collect();
    }
    let valid: Vec<bool> = flow
        .uv
        .chunks(2)
        .map(|p| p[0].abs() < UNKNOWN_FLOW && p[1].abs() < UNKNOWN_FLOW)
        .collect();
    let component = |c: usize| -> Vec<f64> { flow.uv.chunks(2).map(|p| p[c] as f64).collect() };
    let (u, ok) = imresize(&component(0), (h, w), new_a, &valid);
    let (v, _) = imresize(&component(1), (h, w), new_a, &valid);
    let (nh, nw) = new_a;
    let mut uv = Vec::with_capacity(2 * nh * nw);
    for y in 0..nh {
        for x in 0..nw {
            let i = y * nw + x;
            if !ok[i] {
                uv.extend([INVALID as f64, INVALID as f64]);
                continue;
            }
            let (nx, ny) = ((x + 1) as f64, (y + 1) as f64);
            let (ox, oy) = (nx / nw as f64 * w as f64, ny / nh as f64 * h as f64);
            let fu = (u[i] + ox) / size_b.1 as f64 * new_b.1 as f64 - nx;
            let fv = (v[i] + oy) / size_b.0 as f64 * new_b.0 as f64 - ny;
            uv.extend([fu, fv]);
        }
    }
    uv
}

/// Flow accuracy at thresholds `1..=50` % of `reference_side` (the other image's larger side);
/// `flow` is `(u, v)` interleaved at the ground truth's size.
pub fn flow_accuracy(flow: &[f64], truth: &Flow, reference_side: usize) -> [f64; 50] {
    let mut errors = Vec::new();
    for (p, g) in flow.chunks(2).zip(truth.uv.chunks(2)) {
        if g[0] < UNKNOWN_FLOW {
            let (du, dv) = (p[0] - g[0] as f64, p[1] - g[1] as f64);
            errors.push((du * du + dv * dv).sqrt());
        }
    }
    let n = errors.len().max(1) as f64;
    let mut out = [0.0; 50];
    for (k, o) in out.iter_mut().enumerate() {
        let threshold = (k + 1) as f64 / 100.0 * reference_side as f64;
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
