#!/usr/bin/env python3
"""`make bench-conv`, PyTorch side: times the convolutions listed in
target/bench/conv_layers.json (written by `cargo bench --bench conv_layers`) with
torch.nn.functional.conv2d (forward; backward = input and weight gradients), medians of
BENCH_RUNS runs (default 3) after one warm-up, BENCH_THREADS threads (default 2), and prints
ours and PyTorch's side by side, with per-backbone totals weighted by each layer's count.
Writes target/bench/conv_layers_torch.json."""

import json
import os
import sys

import torch
import torch.nn.functional as F

os.environ.setdefault("BENCH_RUNS", "3")  # before bench_pytorch reads it (its own default is 5)
sys.path.insert(0, os.path.dirname(__file__))
from bench_pytorch import timed  # noqa: E402  (the same timer, threads and runs as make bench)

torch.set_grad_enabled(True)  # the fixtures bench_pytorch imports turn it off


def main():
    rows = json.load(open("target/bench/conv_layers.json"))
    totals = {}
    out = []
    for r in rows:
        b, c_in, c_out, size, k, s = r["batch"], r["c_in"], r["c_out"], r["size"], r["kernel"], r["stride"]
        groups = c_in if r["depthwise"] else 1
        p0, p1 = r["padding"]
        x = torch.rand(b, c_in, size, size) * 2 - 1
        w = torch.rand(c_out, c_in // groups, k, k) * 2 - 1

        def conv(x, w):
            return F.conv2d(F.pad(x, (p0, p1, p0, p1)) if p0 != p1 else x, w, stride=s,
                            padding=0 if p0 != p1 else p0, groups=groups)

        with torch.no_grad():
            fwd, _ = timed(lambda: conv(x, w))
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = conv(xg, wg)
        dy = torch.rand_like(y)

        def step():
            y = conv(xg, wg)
            torch.autograd.grad(y, (xg, wg), dy)

        bwd = max(timed(step)[0] - fwd, 0.0)  # the backward alone: step minus its forward
        n = r["count"]
        t = totals.setdefault(r["backbone"], [0.0, 0.0, 0.0, 0.0])
        t[0] += n * r["forward_s"]
        t[1] += n * fwd
        t[2] += n * r["backward_s"]
        t[3] += n * bwd
        print(f"{r['backbone']:>18} x{n:<2} {c_in:>4}->{c_out:<4} {size:>3}^2 k{k} s{s}{' dw' if groups > 1 else '   '}"
              f"  fwd ours {r['forward_s']:.4f} torch {fwd:.4f} ({r['forward_s'] / fwd:.2f}x)"
              f"  bwd ours {r['backward_s']:.4f} torch {bwd:.4f} ({r['backward_s'] / max(bwd, 1e-9):.2f}x)")
        out.append(dict(r, torch_forward_s=fwd, torch_backward_s=bwd))
    print()
    for name, (fo, ft, bo, bt) in totals.items():
        print(f"{name:>18} weighted: fwd ours {fo:.3f} torch {ft:.3f} ({fo / ft:.2f}x)  "
              f"bwd ours {bo:.3f} torch {bt:.3f} ({bo / bt:.2f}x)")
    json.dump(out, open("target/bench/conv_layers_torch.json", "w"), indent=1)


if __name__ == "__main__":
    main()
