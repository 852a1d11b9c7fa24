#!/usr/bin/env python3
"""Writes docs/benchmarks.md from target/bench/{weakalign,pytorch}.json (`make bench`), or with
`--gpu OURS.json PYTORCH.json GPU.txt` docs/benchmarks-gpu.md (`make bench-gpu`)."""
import json
import os
import platform
import subprocess
import sys


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def rows(ours, theirs, digits=4):
    """Table rows: ours against another framework's results per backbone, seconds and ratio."""
    theirs = {r["backbone"]: r for r in theirs["results"]}
    out = []
    for r in ours["results"]:
        t = theirs.get(r["backbone"])
        if t:
            out.append(
                f"| {r['backbone']} | {r['forward_s']:.{digits}f} | {t['forward_s']:.{digits}f} | "
                f"{r['forward_s'] / t['forward_s']:.2f} | {r['train_step_s']:.{digits}f} | "
                f"{t['train_step_s']:.{digits}f} | {r['train_step_s'] / t['train_step_s']:.2f} |")
    return out


def authors(ours):
    """Ours against the authors' model (target/bench/authors.json, when `make bench` ran it)."""
    path = "target/bench/authors.json"
    if not os.path.exists(path):
        return []
    ref = json.load(open(path))
    out = ["## Against the authors' model", "",
           f"tools/bench_authors.py: {ref['framework']}, their TwoStageCNNGeometric and weak loss "
           "(train_weak.py's defaults), same batch, sizes and threads, in the same `make bench` run.",
           "", "| backbone | forward ours | forward authors | ratio | train step ours | "
           "train step authors | ratio |", "|---|---|---|---|---|---|---|"]
    out += rows(ours, ref, digits=2)
    return out + [""]


def memory(ours, theirs):
    """Peak resident memory per backbone (each process resets its mark before a backbone)."""
    out = ["## Peak memory", "",
           "Peak resident set size (VmHWM) while one backbone's forward and training-step timings "
           "ran, MiB; each process resets the mark before each backbone (`/proc/self/clear_refs`).",
           "", "| backbone | ours | PyTorch | ratio |", "|---|---|---|---|"]
    for r in ours["results"]:
        t = theirs.get(r["backbone"])
        a, b = r.get("peak_rss_mib"), t and t.get("peak_rss_mib")
        if a and b:
            out.append(f"| {r['backbone']} | {a:.0f} | {b:.0f} | {a / b:.2f} |")
    return out + [""]


def profile(ours, theirs):
    """Per-part tables: each part of the training step timed alone, ours and PyTorch."""
    out = ["## Where a training step goes", "",
           "Each part of the weak training step timed alone with the step's shapes (medians, "
           "seconds per call; `fwd+bwd` = forward, then backward of the output's sum; `adam` = the "
           "update alone). `share` = calls × fwd+bwd / measured step. Parts: `backbone` (one image "
           "batch through the feature extractor: src, tgt and the warped src), `correlation` "
           "(L2-normalized features, correlation, ReLU, normalization), `regression_*` (the "
           "heads), `warp` (affine sampling grid + bilinear sample of the source), `inlier_loss` "
           "(both grids and both soft inlier counts), `adam`.", ""]
    for r in ours["results"]:
        t = theirs.get(r["backbone"])
        if not r.get("profile") or not t or not t.get("profile"):
            continue
        tp = {p["op"]: p for p in t["profile"]}
        out += [f"### {r['backbone']}", "",
                "| part | calls | fwd ours | fwd PyTorch | fwd+bwd ours | fwd+bwd PyTorch | ratio | share ours | share PyTorch |",
                "|---|---|---|---|---|---|---|---|---|"]
        total = [0.0, 0.0]
        for p in r["profile"]:
            q = tp.get(p["op"])
            if not q:
                continue
            n = p["calls_per_step"]
            total[0] += n * p["forward_backward_s"]
            total[1] += n * q["forward_backward_s"]
            ratio = p["forward_backward_s"] / q["forward_backward_s"] if q["forward_backward_s"] else float("nan")
            out.append(
                f"| {p['op']} | {n} | {p['forward_s']:.4f} | {q['forward_s']:.4f} | "
                f"{p['forward_backward_s']:.4f} | {q['forward_backward_s']:.4f} | {ratio:.2f} | "
                f"{n * p['forward_backward_s'] / r['train_step_s']:.0%} | "
                f"{n * q['forward_backward_s'] / t['train_step_s']:.0%} |")
        out += [f"| sum of parts | | | | {total[0]:.3f} | {total[1]:.3f} | | "
                f"{total[0] / r['train_step_s']:.0%} | {total[1] / t['train_step_s']:.0%} |",
                f"| measured step | | | | {r['train_step_s']:.3f} | {t['train_step_s']:.3f} | "
                f"{r['train_step_s'] / t['train_step_s']:.2f} | | |", ""]
    return out


def alternate():
    """Ours and PyTorch in alternation, round after round (tools/bench_alternate.py), when
    `make bench-alternate` ran."""
    path = "target/bench/alternate.json"
    if not os.path.exists(path):
        return []
    alt = json.load(open(path))
    out = ["## Repeatability: ours and PyTorch in alternation", "",
           "On a shared machine the table above can catch a slow spell on one side. "
           "`make bench-alternate` (tools/bench_alternate.py) runs ours, then PyTorch, per backbone, "
           f"round after round (medians of {alt['runs']} runs each, no per-part profile); each "
           "round's ratio compares two measurements minutes apart. Seconds per round, and the "
           "median ratio.", "",
           "| backbone | round | forward ours | forward PyTorch | ratio | train step ours | train step PyTorch | ratio |",
           "|---|---|---|---|---|---|---|---|"]
    for r in alt["results"]:
        for k, q in enumerate(r["rounds"]):
            out.append(
                f"| {r['backbone']} | {k + 1} | {q['ours_forward_s']:.2f} | {q['torch_forward_s']:.2f} | "
                f"{q['ours_forward_s'] / q['torch_forward_s']:.2f} | {q['ours_train_step_s']:.2f} | "
                f"{q['torch_train_step_s']:.2f} | {q['ours_train_step_s'] / q['torch_train_step_s']:.2f} |")
        out.append(f"| {r['backbone']} | median | | | **{r['median_forward_ratio']:.2f}** | | | "
                   f"**{r['median_train_step_ratio']:.2f}** |")
    return out + [""]


def conv_layers():
    """The per-layer convolution profile (benches/conv_layers.rs + tools/bench_conv_pytorch.py),
    when `make bench` ran it."""
    path = "target/bench/conv_layers_torch.json"
    if not os.path.exists(path):
        return []
    rows_ = json.load(open(path))
    out = ["## Convolutions layer by layer", "",
           "Every distinct convolution of the three backbones (batch 8, 240² input) alone: ours "
           "(`weakalign::backbone::conv::kernels`: shifted products, taps gathered for the stems, "
           "Winograd F(2×2, 3×3) where `Algorithm::choose` picks it — VGG-16 from conv2_2 on; no "
           "bias or activation) against `torch.nn.functional.conv2d` (oneDNN), forward and backward (input "
           "and weight gradients; PyTorch's = forward+backward minus forward), medians of 3, "
           "seconds, same threads. `weighted` sums each backbone's layers times their count "
           "(one pass of one image batch). Regenerate alone with `make bench-conv`.", "",
           "| backbone | weighted fwd ours | fwd PyTorch | ratio | weighted bwd ours | bwd PyTorch | ratio |",
           "|---|---|---|---|---|---|---|"]
    totals = {}
    for r in rows_:
        t = totals.setdefault(r["backbone"], [0.0, 0.0, 0.0, 0.0])
        n = r["count"]
        for i, k in enumerate(["forward_s", "torch_forward_s", "backward_s", "torch_backward_s"]):
            t[i] += n * r[k]
    for b, (fo, ft, bo, bt) in totals.items():
        out.append(f"| {b} | {fo:.3f} | {ft:.3f} | {fo / ft:.2f} | {bo:.3f} | {bt:.3f} | {bo / bt:.2f} |")
    out += ["", "| backbone | × | c_in → c_out | input | kernel | stride | fwd ours | fwd PyTorch | ratio | bwd ours | bwd PyTorch | ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows_:
        kind = " (depthwise)" if r["depthwise"] else ""
        out.append(
            f"| {r['backbone']} | {r['count']} | {r['c_in']} → {r['c_out']}{kind} | {r['size']}² | "
            f"{r['kernel']}×{r['kernel']} | {r['stride']} | {r['forward_s']:.4f} | "
            f"{r['torch_forward_s']:.4f} | {r['forward_s'] / r['torch_forward_s']:.2f} | "
            f"{r['backward_s']:.4f} | {r['torch_backward_s']:.4f} | "
            f"{r['backward_s'] / max(r['torch_backward_s'], 1e-9):.2f} |")
    return out + [""]


def gpu(ours_path, torch_path, gpu_path):
    ours, torch = json.load(open(ours_path)), json.load(open(torch_path))
    name = open(gpu_path).read().strip()
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# GPU benchmarks",
        "",
        "Produced by `make bench-gpu` (tools/bench_gpu.sh: `weakalign bench --device cuda` and "
        "tools/bench_pytorch.py with BENCH_DEVICE=cuda, in the same run on the same machine).",
        f"Two-stage model (affine → TPS), batch {ours['batch']} × 3 × {ours['size']} × {ours['size']}, "
        f"random weights; medians of {ours['runs']} runs after one warm-up, seconds; every timed "
        "region ends with a read-back (ours) or `torch.cuda.synchronize()` (PyTorch).",
        "",
        f"GPU: {name}. Code: {rev}. {ours['framework']} vs {torch['framework']} "
        "(our PyTorch replica of the architecture).",
        "",
        "| backbone | forward ours | forward PyTorch | ratio | train step ours | train step PyTorch | ratio |",
        "|---|---|---|---|---|---|---|",
    ] + rows(ours, torch) + ["", "Ratio = ours / PyTorch (below 1 means we are faster).", ""]
    os.makedirs("docs", exist_ok=True)
    open("docs/benchmarks-gpu.md", "w").write("\n".join(lines))
    print("\n".join(lines))


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--gpu":
        return gpu(*sys.argv[2:])
    ours = json.load(open("target/bench/weakalign.json"))
    torch = json.load(open("target/bench/pytorch.json"))
    theirs = {r["backbone"]: r for r in torch["results"]}
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (benches/models.rs, tools/bench_pytorch.py, tools/bench_authors.py, "
        "tools/bench_table.py); measured on an otherwise idle machine.",
        f"Two-stage model (affine → TPS), batch {ours['batch']} × 3 × {ours['size']} × {ours['size']}, "
        f"random weights; medians of {ours['runs']} runs after one warm-up, seconds.",
        "Training step = forward, WeakAlign loss (−(s_aff + s_aff∘tps), λ = 0.2), backward, Adam; "
        "BatchNorm statistics frozen, all parameters trainable (the reference's weak training).",
        "",
        f"Machine: {cpu()}, {os.cpu_count()} cores; threads: ours {ours['threads']} "
        f"(RAYON_NUM_THREADS), PyTorch {torch['threads']}. Code: {rev}. {ours['framework']} vs "
        f"{torch['framework']} (our PyTorch replica of the architecture, tools/make_model_fixtures.py).",
        "",
        "| backbone | forward ours | forward PyTorch | ratio | train step ours | train step PyTorch | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += rows(ours, torch, digits=2)
    lines += ["", "Ratio = ours / PyTorch (below 1 means we are faster).", ""]
    lines += authors(ours)
    lines += alternate()
    lines += memory(ours, theirs) + profile(ours, theirs) + conv_layers()
    if ours.get("loaders"):
        lines += ["## Data loading", "",
                  "Background loader, 2 worker threads, batches of 8 pairs at 240×240 (decode, crop, "
                  "resize, normalize), against the model's forward throughput above.", "",
                  "| loader | pairs/s |", "|---|---|"]
        lines += [f"| {l['loader']} | {l['pairs_per_s']:.0f} |" for l in ours["loaders"]]
        lines += [""]
    lines += LAVAPIPE
    os.makedirs("docs", exist_ok=True)
    open("docs/benchmarks.md", "w").write("\n".join(lines))
    print("\n".join(lines))


# Not measured by `make bench`: what the wgpu checks on Mesa's software Vulkan showed (issue 30).
LAVAPIPE = [
    "## wgpu on Mesa's software Vulkan: no speed rows",
    "",
    "CI runs the wgpu backend on lavapipe (`make test-wgpu`), a Vulkan device emulated on the CPU: "
    "its speed says nothing about a GPU, so it has no rows here. What is slow there, for anyone "
    "sizing a check for it (2-core VM, Mesa 22.3.6):",
    "",
    "- The first call of every kernel shape compiles it (cubecl, then Mesa's LLVM) and autotunes "
    "it, compiling every candidate: the parity suite's 25 operations compiled 351 kernels (119 "
    "fused element-wise, 56 matmul candidates). With an empty Mesa shader cache (a fresh machine, "
    "as in CI) they take 3.5 minutes, 0.1–66 s each (the grid losses, the TPS grid and the first "
    "3×3 convolution are the slowest first calls); with Mesa's cache (`~/.cache/mesa_shader_cache`) "
    "filled by an earlier run, 65 s. `GALLIVM_PERF=nopt` (no LLVM optimization passes) did not "
    "make the first calls faster.",
    "- EfficientNet-Lite0's two-stage model at 176², one pair: 5.8–6.9 minutes for the first "
    "training forward and backward (the backbone frozen or not changes it by a minute: the "
    "forward's first calls dominate), then 2 s for the inference forward.",
    "- Autotune runs every candidate kernel: on VGG-16's and ResNet-101's large convolutions a "
    "candidate takes 0.2–9 s per call on lavapipe, and with autotune's default 3–10 timed calls "
    "per candidate one VGG-16 model check ran for over 25 minutes. `tools/lavapipe/cubecl.toml` "
    "times each candidate once; CI checks the EfficientNet-Lite0 model only.",
    "- A storage buffer may not exceed 128 MiB there: burn's im2col for VGG-16's input gradient at "
    "176² with two image pairs needs 136 MiB, and burn 0.22 then panics inside its autotuner (and "
    "the process hangs). The parity suite's model checks use one pair.",
    "- A training step of `experiments/agreement.toml`'s cut (EfficientNet-Lite0, 176²) takes "
    "about 8 s at a batch of 2 or 4 once its kernels are compiled (launch-bound), against a "
    "fraction of a second on flex; each stage's first step takes minutes.",
    "",
]


if __name__ == "__main__":
    main()
