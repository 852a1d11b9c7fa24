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
PROFILE = os.environ.get("BENCH_PROFILE", "1") != "0"
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


def peak_rss_mib():
    """Peak resident set size since the last reset_peak_rss(), MiB (VmHWM; None without procfs)."""
    try:
        with open("/proc/self/status") as f:
            line = next(l for l in f if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024.0
    except (OSError, StopIteration):
        return None


def reset_peak_rss():
    """Resets the kernel's peak-RSS mark, so that each backbone's peak is its own (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def time_op(make):
    """Median forward (no autograd, as inference runs it), and forward + backward of the output's
    sum, of make() (as src/bench.rs)."""
    with torch.no_grad():
        fwd, _ = timed(lambda: make())
    bwd, _ = timed(lambda: make().sum().backward())
    return fwd, bwd


def profile_step(model, src, tgt, mask_id, loss_of):
    """The parts of the weak training step timed alone, as src/bench.rs `profile_step`."""
    with torch.no_grad():
        f = model.FeatureExtraction(src)
    b, c, h, w = f.shape
    gen = torch.Generator().manual_seed(3)
    rnd = lambda *shape: (torch.rand(*shape, generator=gen) * 2 - 1).to(DEVICE)  # noqa: E731
    f_src, f_tgt = rnd(b, c, h, w).requires_grad_(), rnd(b, c, h, w).requires_grad_()
    with torch.no_grad():
        corr = model.corr(f_src, f_tgt)
    corr = corr.clone().requires_grad_()
    ident_aff = torch.tensor([1.0, 0, 0, 0, 1, 0], device=DEVICE)
    ident_tps = torch.tensor([-1.0, -1, -1, 0, 0, 0, 1, 1, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1],
                             device=DEVICE)
    theta_aff = (ident_aff + 0.05 * rnd(b, 6)).requires_grad_()
    theta_tps = (ident_tps + 0.05 * rnd(b, 18)).requires_grad_()

    def warp():
        grid = F.affine_grid(theta_aff.view(-1, 2, 3), src.shape, align_corners=True)
        return F.grid_sample(src, grid, align_corners=True)

    rows = [
        ("backbone", 3, time_op(lambda: model.FeatureExtraction(src))),
        ("correlation", 2, time_op(lambda: model.corr(f_src, f_tgt))),
        ("regression_affine", 1, time_op(lambda: model.FeatureRegression(corr))),
        ("regression_tps", 1, time_op(lambda: model.FeatureRegression2(corr))),
        ("warp", 1, time_op(warp)),
        ("inlier_loss", 1, time_op(lambda: loss_of(theta_aff, theta_tps, corr))),
    ]
    opt = torch.optim.Adam(model.parameters(), lr=5e-8)

    def adam():
        opt.zero_grad()
        f_s, f_t = model.FeatureExtraction(src), model.FeatureExtraction(tgt)
        c_aff = model.corr(f_s, f_t)
        t_aff = model.FeatureRegression(c_aff)
        t_tps = model.FeatureRegression2(c_aff)
        loss_of(t_aff, t_tps, c_aff).backward()
        sync()
        t = time.perf_counter()
        opt.step()
        sync()
        return time.perf_counter() - t

    adam()
    adam_s = statistics.median([adam() for _ in range(RUNS)])
    rows.append(("adam", 1, (0.0, adam_s)))
    return [{"op": op, "calls_per_step": n, "forward_s": fw, "forward_backward_s": fb}
            for op, n, (fw, fb) in rows]


BACKBONES = ["vgg16", "resnet101", "efficientnet_lite0"]


def in_children(only):
    """Times each backbone in its own process (so that its peak memory is its own) and merges."""
    import subprocess
    import tempfile
    results = []
    for name in [b for b in BACKBONES if not only or b in only]:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            env = dict(os.environ, BENCH_CHILD="1", BENCH_BACKBONES=name, BENCH_OUT=f.name)
            subprocess.run([sys.executable, __file__], env=env, check=True, stdout=subprocess.DEVNULL)
            results += json.load(open(f.name))["results"]
    return results


def main():
    only = [b for b in os.environ.get("BENCH_BACKBONES", "").split(",") if b]
    if DEVICE.type == "cpu" and not os.environ.get("BENCH_CHILD"):
        return report(in_children(only))
    results = []
    for name, fe in [("vgg16", vgg_fe), ("resnet101", resnet_fe), ("efficientnet_lite0", effnet_fe)]:
        if only and name not in only:
            continue
        reset_peak_rss()
        model = TwoStage(fe()).eval().to(DEVICE)  # eval: BN running statistics (reference's weak training)
        src, tgt = torch.randn(B, 3, S, S, device=DEVICE), torch.randn(B, 3, S, S, device=DEVICE)
        with torch.no_grad():
            fwd, fwd_samples = timed(lambda: model(src, tgt))
        print(f"{name}: two-stage forward {fwd:.3f} s", file=sys.stderr)

        mask_id = identity_mask(15, 15, None).to(DEVICE)

        def loss_of(theta_aff, theta_tps, corr_aff):
            g_aff = grid_of(lambda p: aff_points(theta_aff, p), 15, 15, OFFSET)
            g_comp = composed_grid_reference(theta_aff, theta_tps, 0.2, 15, 15, OFFSET)
            return -(inlier(corr_aff, g_aff, mask_id) + inlier(corr_aff, g_comp, mask_id)).mean()
        opt = torch.optim.Adam(model.parameters(), lr=5e-8)

        def step():
            f_src, f_tgt = model.FeatureExtraction(src), model.FeatureExtraction(tgt)
            corr_aff = model.corr(f_src, f_tgt)
            theta_aff = model.FeatureRegression(corr_aff)
            grid = F.affine_grid(theta_aff.view(-1, 2, 3), src.shape, align_corners=True)
            warped = F.grid_sample(src, grid, align_corners=True)
            theta_tps = model.FeatureRegression2(model.corr(model.FeatureExtraction(warped), f_tgt))
            loss = loss_of(theta_aff, theta_tps, corr_aff)
            opt.zero_grad()
            loss.backward()
            opt.step()

        torch.set_grad_enabled(True)
        train, train_samples = timed(step)
        rss = peak_rss_mib()
        profile = profile_step(model, src, tgt, mask_id, loss_of) if PROFILE else []
        torch.set_grad_enabled(False)
        print(f"{name}: weak training step {train:.3f} s", file=sys.stderr)
        results.append({"backbone": name, "forward_s": fwd, "forward_samples": fwd_samples,
                        "train_step_s": train, "train_step_samples": train_samples,
                        "profile": profile, "peak_rss_mib": rss})
    report(results)


def report(results, framework=None, out_path=OUT):
    """Writes the results with the run's settings to `out_path` (default BENCH_OUT) and prints
    them; `framework` names what ran (default: this PyTorch on this device)."""
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    out = {"framework": framework or f"PyTorch {torch.__version__} {where}", "batch": B,
           "size": S, "runs": RUNS, "threads": torch.get_num_threads(), "results": results}
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))

if __name__ == "__main__":
    main()
