//! Caltech-101 label transfer: LT-ACC, IoU and LOC-ERR of a dense transform, at the target's
//! original resolution.
//!
//! Polygons become masks by an even-odd test at integer pixel coordinates (as
//! `skimage.draw.polygon`, `x` = column, `y` = row); every target pixel `p` samples the source mask
//! at `T(p)` (bilinear, zeros outside); LT-ACC is the fraction of target pixels whose transferred
//! label (> 0.5) equals the target's, IoU that of the two foregrounds. LOC-ERR (DSP's definition)
//! averages, over target pixels whose `T(p)` falls inside the source, `|x_s,rel − x_t,rel| +
//! |y_s,rel − y_t,rel|` with coordinates relative to each mask's bounding box
//! (`(x − left)/(right − left + 1)`, 1-based pixels, the source position truncated to an integer).
//! The bounding-box and truncation details follow weakalign-reference §10.3; no annotated pair was
//! available here to check LOC-ERR against the reference's numbers.
//!
//! ## Reference
//! weakalign: `eval.py` (caltech), `data/caltech_dataset.py` (weakalign-reference §10.3).

use crate::error::Result;
use crate::geometry::points::unnormalize_axis;

/// A binary mask, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Foreground flags.
    pub fg: Vec<bool>,
}

/// Rasterizes a polygon (`(x, y)` pixel vertices) by the even-odd rule at integer coordinates.
pub fn polygon_mask(polygon: &[(f64, f64)], height: usize, width: usize) -> Mask {
    let mut fg = vec![false; height * width];
    let n = polygon.len();
    for y in 0..height {
        for x in 0..width {
            let (px, py) = (x as f64, y as f64);
            let mut inside = false;
            let mut j = n - 1;
            for i in 0..n {
                let (a, b) = (polygon[i], polygon[j]);
                if (a.1 > py) != (b.1 > py) && px < (b.0 - a.0) * (py - a.1) / (b.1 - a.1) + a.0 {
                    inside = !inside;
                }
                j = i;
            }
            fg[y * width + x] = inside;
        }
    }
    Mask { height, width, fg }
}

/// Bilinear sample of a mask (as 0/1) at a 0-based position, zero outside.
fn sample_mask(m: &Mask, x: f64, y: f64) -> f64 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let mut v = 0.0;
    for (dx, wx) in [(0.0, 1.0 - fx), (1.0, fx)] {
        for (dy, wy) in [(0.0, 1.0 - fy), (1.0, fy)] {
            let (xi, yi) = (x0 + dx, y0 + dy);
            if xi >= 0.0
                && yi >= 0.0
                && (xi as usize) < m.width
                && (yi as usize) < m.height
                && m.fg[yi as usize * m.width + xi as usize]
            {
                v += wx * wy;
            }
        }
    }
    v
}

fn bbox(m: &Mask) -> Option<(f64, f64, f64, f64)> {
    let (mut l, mut t, mut r, mut b) = (usize::MAX, usize::MAX, 0, 0);
    let mut any = false;
    for y in 0..m.height {
        for x in 0..m.width {
            if m.fg[y * m.width + x] {
                any = true;
                l = l.min(x);
                r = r.max(x);
                t = t.min(y);
                b = b.max(y);
            }
        }
    }
    any.then_some((l as f64, t as f64, r as f64, b as f64))
}

/// Label-transfer scores of one pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LabelTransfer {
    /// Label-transfer accuracy.
    pub lt_acc: f64,
    /// Intersection over union of the foregrounds.
    pub iou: f64,
    /// Localization error (`None` when no target pixel maps inside the source).
    pub loc_err: Option<f64>,
}

/// Scores a transform given, for every target pixel (row-major), its normalized source location.
pub fn label_transfer(
    source: &Mask,
    target: &Mask,
    locations: &[(f64, f64)],
) -> Result<LabelTransfer> {
    let (h, w) = (target.height, target.width);
    let (mut agree, mut inter, mut union) = (0usize, 0usize, 0usize);
    let (sb, tb) = (bbox(source), bbox(target));
    let (mut loc_sum, mut loc_n) = (0.0, 0usize);
    for (i, &(u, v)) in locations.iter().enumerate().take(h * w) {
        let (xs, ys) = (
            unnormalize_axis(u, source.width),
            unnormalize_axis(v, source.height),
        ); // 1-based
        let warped = sample_mask(source, xs - 1.0, ys - 1.0) > 0.5;
        let t = target.fg[i];
        agree += usize::from(warped == t);
        inter += usize::from(warped && t);
        union += usize::from(warped || t);
        let (xi, yi) = (xs.trunc(), ys.trunc());
        if let (Some((sl, st, sr, sbm)), Some((tl, tt, tr, tbm))) = (sb, tb)
            && xi >= 1.0
            && yi >= 1.0
            && xi <= source.width as f64
            && yi <= source.height as f64
        {
            {
                let (xt, yt) = ((i % w + 1) as f64, (i / w + 1) as f64);
                let rel = |p: f64, lo: f64, hi: f64| (p - lo) / (hi - lo + 1.0);
                loc_sum += (rel(xi, sl, sr) - rel(xt, tl, tr)).abs()
                    + (rel(yi, st, sbm) - rel(yt, tt, tbm)).abs();
                loc_n += 1;
            }
        }
    }
    Ok(LabelTransfer {
        lt_acc: agree as f64 / (h * w) as f64,
        iou: if union == 0 {
            1.0
        } else {
            inter as f64 / union as f64
        },
        loc_err: (loc_n > 0).then(|| loc_sum / loc_n as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_locations(h: usize, w: usize) -> Vec<(f64, f64)> {
        let lin = |n: usize, i: usize| -1.0 + 2.0 * i as f64 / (n - 1) as f64;
        (0..h * w).map(|i| (lin(w, i % w), lin(h, i / w))).collect()
    }

    #[test]
    fn identity_on_identical_masks_is_perfect() {
        let m = polygon_mask(&[(2.0, 2.0), (12.0, 3.0), (10.0, 9.0), (3.0, 8.0)], 12, 16);
        assert!(m.fg.iter().filter(|&&f| f).count() > 20);
        let s = label_transfer(&m, &m, &identity_locations(12, 16)).unwrap();
        assert_eq!((s.lt_acc, s.iou), (1.0, 1.0));
        assert!(s.loc_err.unwrap() < 1e-12);
    }

    #[test]
    fn disjoint_masks_have_zero_iou() {
        let a = polygon_mask(&[(0.5, 0.5), (5.5, 0.5), (5.5, 5.5), (0.5, 5.5)], 10, 20);
        let b = polygon_mask(
            &[(12.5, 0.5), (18.5, 0.5), (18.5, 5.5), (12.5, 5.5)],
            10,
            20,
        );
        let s = label_transfer(&a, &b, &identity_locations(10, 20)).unwrap();
        assert_eq!(s.iou, 0.0);
        let fg = (a.fg.iter().filter(|&&f| f).count() + b.fg.iter().filter(|&&f| f).count()) as f64;
        assert!((s.lt_acc - (1.0 - fg / 200.0)).abs() < 1e-12);
    }
}
