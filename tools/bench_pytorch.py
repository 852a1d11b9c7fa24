#!/usr/bin/env python3
"""PyTorch side of `make bench` and `make bench-gpu` (needs torch + torchvision): the same
two-stage architecture and weak-training step as src/bench.rs, medians of BENCH_RUNS runs
(default 5) after one warm-up. The weak loss is the reference's dense form (identity mask warped
with grid_sample), as the authors' code computes it.

Environment: BENCH_DEVICE (cpu, default, with BENCH_THREADS threads; or cuda), BENCH_BATCH
(default 8), BENCH_OUT (default target/bench/pytorch.json), BENCH_BACKBONES.
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from make_model_fixtures import (EfficientNetLite0, TwoStage, correlation, l2norm,  # noqa: E402
                                 resnet_fe, vgg_fe)
from make_golden import composed_grid_reference, grid_of, aff_points, identity_mask  # noqa: E402

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
DEVICE = torch.device(os.environ.get("BENCH_DEVICE", "cpu"))
B, S = int(os.environ.get("BENCH_BATCH", "8")), 240
OUT = os.environ.get("BENCH_OUT", "target/bench/pytorch.json")
if DEVICE.type == "cuda":
    torch.set_default_device(DEVICE)  # the golden helpers create their grids with factory calls


def sync():
    """Waits for the GPU, so that the timed region holds the work it launched."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
OFFSET = 227.0 / 210.0


def effnet_fe():
    net = EfficientNetLite0()
    return torch.nn.Sequential(net._conv_stem, net._bn0, torch.nn.ReLU6(), *net._blocks[:11])


def inlier(matches, grid, mask_id):
    mask = F.grid_sample(mask_id.expand(matches.shape[0], -1, -1, -1), grid, align_corners=True)
    mask = mask / (mask + 1e-5).sum(dim=(1, 2, 3), keepdim=True)
    return (mask * matches).sum(dim=(1, 2, 3))


def timed(fn):
    fn()
    sync()
    samples = []
    for _ in range(RUNS):
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples), samples


def main():
    only = [b for b in os.environ.get("BENCH_BACKBONES", "").split(",") if b]
    results = []
    for name, fe in [("vgg16", vgg_fe), ("resnet101", resnet_fe), ("efficientnet_lite0", effnet_fe)]:
        if only and name not in only:
            continue
        model = TwoStage(fe()).eval().to(DEVICE)  # eval: BN running statistics (reference's weak training)
        src, tgt = torch.randn(B, 3, S, S, device=DEVICE), torch.randn(B, 3, S, S, device=DEVICE)
        with torch.no_grad():
            fwd, fwd_samples = timed(lambda: model(src, tgt))
        print(f"{name}: two-stage forward {fwd:.3f} s", file=sys.stderr)

        mask_id = identity_mask(15, 15, None).to(DEVICE)
        opt = torch.optim.Adam(model.parameters(), lr=5e-8)

        def step():
            f_src, f_tgt = model.FeatureExtraction(src), model.FeatureExtraction(tgt)
            corr_aff = model.corr(f_src, f_tgt)
            theta_aff = model.FeatureRegression(corr_aff)
            grid = F.affine_grid(theta_aff.view(-1, 2, 3), src.shape, align_corners=True)
            warped = F.grid_sample(src, grid, align_corners=True)
            theta_tps = model.FeatureRegression2(model.corr(model.FeatureExtraction(warped), f_tgt))
            g_aff = grid_of(lambda p: aff_points(theta_aff, p), 15, 15, OFFSET)
            g_comp = composed_grid_reference(theta_aff, theta_tps, 0.2, 15, 15, OFFSET)
            loss = -(inlier(corr_aff, g_aff, mask_id) + inlier(corr_aff, g_comp, mask_id)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        torch.set_grad_enabled(True)
        train, train_samples = timed(step)
        torch.set_grad_enabled(False)
        print(f"{name}: weak training step {train:.3f} s", file=sys.stderr)
        results.append({"backbone": name, "forward_s": fwd, "forward_samples": fwd_samples,
                        "train_step_s": train, "train_step_samples": train_samples})
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    report = {"framework": f"PyTorch {torch.__version__} {where}", "batch": B, "size": S,
              "runs": RUNS, "threads": torch.get_num_threads(), "results": results}
    os.makedirs(os.path.dirname(OUT) or ".", exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
