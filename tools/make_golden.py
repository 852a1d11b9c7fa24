#!/usr/bin/env python3
"""Writes the golden fixtures of tests/golden.rs with PyTorch (run by hand, never by CI).

Every function below re-states the authors' reference semantics (weakalign, PyTorch 0.2 era,
reproduced with modern torch and align_corners=True) as described in
shared/docs/weakalign-reference.md §3, §5, §6, §8: dense identity masks warped with grid_sample,
TPS systems inverted in float32, ComposedGeometricTnf's 1e10 border handling. The Rust side
computes the same quantities its own way (gather form, f64 inverse) and must agree to 1e-5.

Large inputs are not stored: they come from `wave(shape, seed)`, a formula evaluated in f64 and
rounded to f32 that tests/golden.rs evaluates identically.

usage: python3 tools/make_golden.py tests/golden
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_grad_enabled(False)
DT = torch.float32
OFFSET = 227.0 / 210.0


def wave(shape, seed):
    """Deterministic pseudo-random values: sin(0.7071·i + seed)·cos(0.1234·i), i the flat index."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.float64)
    v = np.sin(0.7071 * i + seed) * np.cos(0.1234 * i)
    return torch.tensor(v.astype(np.float32).reshape(shape))


def linspace(n):
    return torch.tensor(np.linspace(-1, 1, n), dtype=DT)


def base_points(h, w):
    """[1, 2, h*w] pixel centres, row-major (x varies fastest)."""
    gy, gx = torch.meshgrid(linspace(h), linspace(w), indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)]).unsqueeze(0)


def aff_points(theta, p):
    a = theta.view(-1, 2, 3)
    return torch.bmm(a[:, :, :2], p.expand(a.shape[0], -1, -1)) + a[:, :, 2:]


def tps_li(lam):
    px = torch.tensor([-1, -1, -1, 0, 0, 0, 1, 1, 1], dtype=DT)
    py = torch.tensor([-1, 0, 1, -1, 0, 1, -1, 0, 1], dtype=DT)
    n = 9
    d2 = (px[:, None] - px[None, :]) ** 2 + (py[:, None] - py[None, :]) ** 2
    d2[d2 == 0] = 1
    k = d2 * torch.log(d2)
    if lam != 0:
        k = k + torch.eye(n, dtype=DT) * lam
    p = torch.stack([torch.ones(n, dtype=DT), px, py], 1)
    l = torch.cat([torch.cat([k, p], 1), torch.cat([p.t(), torch.zeros(3, 3, dtype=DT)], 1)], 0)
    return torch.inverse(l), px, py


def tps_points(theta, p, lam):
    li, px, py = tps_li(lam)
    b = theta.shape[0]
    q = theta.view(b, 2, 9)
    pts = p.expand(b, -1, -1)
    x, y = pts[:, 0], pts[:, 1]  # [B, N]
    out = []
    for c in range(2):
        coeff = li[:, :9] @ q[:, c].t()  # [12, B]
        w_, a_ = coeff[:9].t(), coeff[9:].t()  # [B, 9], [B, 3]
        d2 = (x[:, :, None] - px) ** 2 + (y[:, :, None] - py) ** 2
        d2[d2 == 0] = 1
        u = d2 * torch.log(d2)
        out.append(a_[:, :1] + a_[:, 1:2] * x + a_[:, 2:3] * y + (u * w_[:, None, :]).sum(2))
    return torch.stack(out, 1)


def to_grid(points, h, w):
    return points.transpose(1, 2).reshape(points.shape[0], h, w, 2)


def grid_of(fn, h, w, offset=1.0, padding_crop=1.0):
    return to_grid(fn(base_points(h, w) / offset) * offset * padding_crop, h, w)


def sample(img, grid):
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def composed_grid_reference(theta_aff, theta_tps, lam, h, w, offset):
    """ComposedGeometricTnf: sample the affine grid at the TPS grid, 1e10 outside (-1,1)^2."""
    g_aff = grid_of(lambda p: aff_points(theta_aff, p), h, w, offset)
    g_tps = grid_of(lambda p: tps_points(theta_tps, p, lam), h, w, offset)
    out_aff = (g_aff.abs() >= 1).any(3, keepdim=True).expand_as(g_aff)
    g_aff = g_aff.masked_fill(out_aff, 1e10)
    comp = sample(g_aff.permute(0, 3, 1, 2), g_tps).permute(0, 2, 3, 1)
    out_tps = (g_tps.abs() >= 1).any(3, keepdim=True).expand_as(comp)
    return comp.masked_fill(out_tps, 1e10)


def l2norm(f):
    return f / torch.sqrt((f ** 2).sum(1, keepdim=True) + 1e-6)


def correlation(fa, fb):
    b, c, h, w = fa.shape
    a = fa.transpose(2, 3).contiguous().view(b, c, h * w)
    bb = fb.view(b, c, h * w).transpose(1, 2)
    return torch.bmm(bb, a).view(b, h, w, h * w).permute(0, 3, 1, 2)


def identity_mask(h, w, dilation):
    m = torch.zeros(h * w, h, w, dtype=DT)
    for x in range(w):
        for y in range(h):
            m[x * h + y, y, x] = 1
    if dilation:
        k = torch.ones(3, 3, dtype=DT) if dilation == "square" else torch.tensor(
            [[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=DT)
        m = (F.conv2d(m[:, None], k[None, None], padding=1)[:, 0] > 0).to(DT)
    return m[None]


def inlier(matches, grid, dilation=None, normalize=True):
    b, k, h, w = matches.shape
    mask = sample(identity_mask(h, w, dilation).expand(b, -1, -1, -1), grid)
    if normalize:
        mask = mask / (mask + 1e-5).sum(dim=(1, 2, 3), keepdim=True)
    return (mask * matches).sum(dim=(1, 2, 3))


def grid_loss(pred_fn, gt_fn):
    p = base_points(20, 20)
    return ((pred_fn(p) - gt_fn(p)) ** 2).sum(1).mean()


def main(out_dir):
    fx = {}

    def put(name, t):
        t = torch.as_tensor(t, dtype=DT)
        fx[name] = {"shape": list(t.shape), "data": [float(f"{float(v):.9g}") for v in t.reshape(-1)]}

    theta_aff = torch.tensor([[0.9, -0.15, 0.1, 0.2, 1.1, -0.05],
                              [1.2, 0.1, -0.2, -0.1, 0.8, 0.15]], dtype=DT)
    tps_id = torch.tensor([-1, -1, -1, 0, 0, 0, 1, 1, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1], dtype=DT)
    theta_tps = tps_id + 0.15 * wave([2, 18], 0.3)
    put("theta_aff", theta_aff)
    put("theta_tps", theta_tps)
    h, w = 5, 7
    put("affine_grid", grid_of(lambda p: aff_points(theta_aff, p), h, w))
    put("affine_grid_factors",
        grid_of(lambda p: aff_points(theta_aff, p), h, w, OFFSET, 0.5 * 9 / 16))
    for lam, tag in [(0.0, "0"), (0.2, "02")]:
        put(f"tps_grid_l{tag}", grid_of(lambda p: tps_points(theta_tps, p, lam), h, w))
    points = 1.3 * wave([2, 2, 6], 1.1)
    put("points", points)
    put("affine_points", aff_points(theta_aff, points))
    for lam, tag in [(0.0, "0"), (0.2, "02")]:
        put(f"tps_points_l{tag}", tps_points(theta_tps, points, lam))
    put("composed_points_l02", aff_points(theta_aff, tps_points(theta_tps, points, 0.2)))
    put("composed_grid_analytic_l02",
        grid_of(lambda p: aff_points(theta_aff, tps_points(theta_tps, p, 0.2)), h, w, OFFSET))
    put("composed_grid_reference_l02",
        composed_grid_reference(theta_aff[:1], theta_tps[:1], 0.2, 15, 15, OFFSET))

    put("tps_grid_l02_offset",
        grid_of(lambda p: tps_points(theta_tps, p, 0.2), h, w, OFFSET))

    # Pixel (1-based) -> normalized coordinates, point_tnf.normalize_axis; sizes (h, w).
    px = 1 + 150 * (wave([2, 2, 4], 2.5) + 1)
    sizes = [(300, 200), (120, 160)]
    norm = px.clone()
    for b, (hh, ww) in enumerate(sizes):
        for c, length in [(0, ww), (1, hh)]:
            norm[b, c] = (px[b, c] - 1 - (length - 1) / 2) * 2 / (length - 1)
    put("pixel_points", px)
    put("pixel_points_normalized", norm)

    image = wave([2, 3, 4, 5], 0.5)
    warp_grid = 1.2 * wave([2, 3, 4, 2], 2.0)
    put("warp_image", image)
    put("warp_grid", warp_grid)
    put("warp", sample(image, warp_grid))

    fa, fb = wave([2, 5, 4, 3], 0.1), wave([2, 5, 4, 3], 0.9)
    put("features_a", fa)
    put("features_b", fb)
    put("l2norm_a", l2norm(fa))
    put("correlation", correlation(fa, fb))
    put("correlation_normalized", l2norm(F.relu(correlation(fa, fb))))

    # Inlier counts on a 15×15 normalized correlation of wave features (not stored: the test
    # regenerates wave([2, 8, 15, 15], 0.2) / wave(..., 1.7)).
    ga, gb = wave([2, 8, 15, 15], 0.2), wave([2, 8, 15, 15], 1.7)
    corr = l2norm(F.relu(correlation(l2norm(ga), l2norm(gb))))
    aff_grid = grid_of(lambda p: aff_points(theta_aff, p), 15, 15, OFFSET)
    comp_grid = composed_grid_reference(theta_aff, theta_tps, 0.2, 15, 15, OFFSET)
    put("inlier_affine", inlier(corr, aff_grid))
    put("inlier_affine_unnormalized", inlier(corr, aff_grid, normalize=False))
    put("inlier_affine_cross", inlier(corr, aff_grid, dilation="cross"))
    put("inlier_affine_square", inlier(corr, aff_grid, dilation="square"))
    put("inlier_composed", inlier(corr, comp_grid))
    put("inlier_composed_unnormalized", inlier(corr, comp_grid, normalize=False))
    s_aff, s_comp = inlier(corr, aff_grid), inlier(corr, comp_grid)
    put("weakalign_loss", (-(s_aff + s_comp)).mean().reshape(1))
    ident = identity_mask(15, 15, None)
    put("inlier_identity",
        inlier(ident, grid_of(lambda p: aff_points(torch.tensor([[1., 0, 0, 0, 1, 0]]), p),
                              15, 15, OFFSET)))

    gt_aff = theta_aff + 0.1 * wave([2, 6], 3.0)
    gt_tps = theta_tps + 0.1 * wave([2, 18], 4.0)
    put("grid_loss_gt_aff", gt_aff)
    put("grid_loss_gt_tps", gt_tps)
    put("grid_loss_affine",
        grid_loss(lambda p: aff_points(theta_aff, p), lambda p: aff_points(gt_aff, p)).reshape(1))
    put("grid_loss_tps",
        grid_loss(lambda p: tps_points(theta_tps, p, 0.0),
                  lambda p: tps_points(gt_tps, p, 0.0)).reshape(1))

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "core.json")
    with open(path, "w") as f:
        json.dump({"torch": torch.__version__, "fixtures": fx}, f, separators=(",", ":"))
    print(f"wrote {path}: {len(fx)} fixtures, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden")
