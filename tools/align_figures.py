#!/usr/bin/env python3
"""Figures of a checkpoint's best, median and worst PF-WILLOW pairs, picked by the per-pair PCK
that `weakalign eval --dataset pf-willow` wrote, each aligned with `weakalign align`.

    python3 tools/align_figures.py --checkpoint checkpoints/<run> \
        --report runs/<experiment>/<hash>/eval/pf-willow.json --out docs/figures

Per pair, one JPEG: the source with its annotated keypoints (circles) and the target's keypoints
transferred into it by the predicted warp (crosses; green within α·L of the annotation, red
beyond, L = the larger side of the source keypoints' bounding box: the benchmark's rule), the
target with its keypoints, and the source warped onto the target (`warped.png`). The PCK in the
caption is the report's; the script recomputes it from `weakalign align`'s transferred points and
fails if the two disagree, so the figure shows what the benchmark scored.
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageDraw

PANEL_HEIGHT = 260
GREEN, RED, YELLOW = (40, 200, 60), (230, 40, 40), (255, 220, 0)


def keypoints(image: Path) -> np.ndarray:
    """PF-WILLOW keypoints of `image` (`pts_coord` of the .mat beside it), `[n, 2]` (x, y),
    1-based pixels."""
    mat = scipy.io.loadmat(image.with_suffix(".mat"))
    return np.asarray(mat["pts_coord"], dtype=np.float64).T


def pick(rows: list, kind: str) -> dict:
    """Best, median and worst pair by `kind`'s PCK (first in benchmark order on ties)."""
    scored = [(r[kind], i) for i, r in enumerate(rows) if r[kind] is not None]
    ranked = sorted(scored, key=lambda s: (-s[0], s[1]))
    return {
        "good": rows[ranked[0][1]],
        "average": rows[ranked[len(ranked) // 2][1]],
        "failure": rows[ranked[-1][1]],
    }


def panel(image: Image.Image) -> tuple:
    scale = PANEL_HEIGHT / image.height
    resized = image.resize((round(image.width * scale), PANEL_HEIGHT), Image.BILINEAR)
    return resized, scale


def cross(draw, x, y, color, r=5):
    draw.line([(x - r, y - r), (x + r, y + r)], fill=color, width=2)
    draw.line([(x - r, y + r), (x + r, y - r)], fill=color, width=2)


def circle(draw, x, y, color, r=5):
    draw.ellipse([(x - r, y - r), (x + r, y + r)], outline=color, width=2)


def figure(row, root, args, out_png) -> float:
    source, target = root / row["source"], root / row["target"]
    src_pts, tgt_pts = keypoints(source), keypoints(target)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        points = tmp / "points.csv"
        points.write_text("x,y\n" + "".join(f"{x},{y}\n" for x, y in tgt_pts))
        subprocess.run(
            [args.bin, "align", str(source), str(target), "--checkpoint", str(args.checkpoint),
             "--out", str(tmp / "out"), "--points", str(points)],
            check=True, stdout=subprocess.DEVNULL)
        with open(tmp / "out" / "points.csv") as f:
            moved = np.array([[float(r["source_x"]), float(r["source_y"])] for r in csv.DictReader(f)])
        warped = Image.open(tmp / "out" / "warped.png").convert("RGB")
    bbox = src_pts.max(axis=0) - src_pts.min(axis=0)
    threshold = args.alpha * bbox.max()
    correct = np.linalg.norm(moved - src_pts, axis=1) <= threshold
    pck = float(correct.mean())
    reported = row[args.kind]
    if abs(pck - reported) > 1e-9:
        sys.exit(f"error: {row['source']} → {row['target']}: PCK from align's points {pck} "
                 f"differs from the report's {reported}")

    src_img, s_scale = panel(Image.open(source).convert("RGB"))
    tgt_img, t_scale = panel(Image.open(target).convert("RGB"))
    warp_img, _ = panel(warped)
    d = ImageDraw.Draw(src_img)
    for (gx, gy), (mx, my), ok in zip(src_pts, moved, correct):
        # 1-based pixel centres to the panel's 0-based pixels.
        g = ((gx - 1) * s_scale, (gy - 1) * s_scale)
        m = ((mx - 1) * s_scale, (my - 1) * s_scale)
        d.line([g, m], fill=GREEN if ok else RED, width=1)
        circle(d, *g, YELLOW)
        cross(d, *m, GREEN if ok else RED)
    d = ImageDraw.Draw(tgt_img)
    for x, y in tgt_pts:
        circle(d, (x - 1) * t_scale, (y - 1) * t_scale, YELLOW)
    gap, caption = 8, 22
    width = src_img.width + tgt_img.width + warp_img.width + 2 * gap
    canvas = Image.new("RGB", (width, PANEL_HEIGHT + caption), (255, 255, 255))
    x = 0
    for img in (src_img, tgt_img, warp_img):
        canvas.paste(img, (x, caption))
        x += img.width + gap
    ImageDraw.Draw(canvas).text(
        (4, 5),
        f"{row['class']}: {Path(row['source']).name} -> {Path(row['target']).name}   "
        f"PCK@{args.alpha} = {pck:.2f}   (source + transferred keypoints | target | source warped)",
        fill=(0, 0, 0))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png, quality=88)  # photographs: JPEG is a fifth of the PNG
    return pck


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--report", type=Path, required=True, help="weakalign eval's pf-willow.json")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--datasets", type=Path, default=Path("datasets"))
    p.add_argument("--bin", default="target/release/weakalign")
    p.add_argument("--kind", default="aff_tps", help="the report's prediction kind: aff or aff_tps")
    args = p.parse_args()
    report = json.loads(args.report.read_text())
    if report.get("dataset") != "pf-willow" or "per_pair" not in report:
        sys.exit(f"error: {args.report}: not a pf-willow report with per-pair rows")
    args.alpha = report["protocol"]["alpha"]
    if report["protocol"]["tps_lambda"] != 0.0:
        sys.exit(f"error: {args.report}: made with TPS λ ≠ 0; align here uses λ = 0")
    root = args.datasets / "pf-willow"
    overall = report["pck"][args.kind]["overall"]
    md = [
        "# PF-WILLOW pairs aligned by the best model\n",
        f"Written by `python3 tools/align_figures.py --checkpoint {args.checkpoint} --report "
        f"{args.report} --out {args.out}`: the best, median and worst of the 900 pairs by the "
        f"per-pair PCK@{args.alpha} ({args.kind}) that `weakalign eval --dataset pf-willow` "
        f"reported (overall {overall:.4f}; ties go to the first pair in the benchmark's order), "
        "each aligned with `weakalign align`.\n",
        "Left: the source with its annotated keypoints (yellow circles) and the target's keypoints "
        "transferred by the predicted warp (crosses, green within α·L of the annotation, red "
        "beyond). Middle: the target and its keypoints. Right: the source warped onto the "
        "target.\n",
    ]
    for name, row in pick(report["per_pair"], args.kind).items():
        out_png = args.out / f"pf_willow_{name}.jpg"
        pck = figure(row, root, args, out_png)
        print(f"{name}: {row['source']} -> {row['target']} PCK {pck:.2f} ({out_png})")
        md.append(f"## {name}: {row['class']}, PCK {pck:.2f}\n\n`{row['source']}` → "
                  f"`{row['target']}`\n\n![{name}]({out_png.name})\n")
    (args.out / "README.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
