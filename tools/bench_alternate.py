#!/usr/bin/env python3
"""`make bench-alternate`: ours and PyTorch timed in alternation, round after round, so that a
slow or fast spell of a shared machine falls on both. Each round runs, per backbone, our
benchmark (`cargo bench --bench models`' binary, one child per backbone) and then
tools/bench_pytorch.py, each for BENCH_RUNS runs (default 3) after a warm-up, without the per-part
profile. Prints every round's times and ratios and the median ratio per backbone, and writes
target/bench/alternate.json, which tools/bench_table.py adds to docs/benchmarks.md.

Environment: BENCH_ROUNDS (default 3), BENCH_BACKBONES (default all three), BENCH_RUNS."""

import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile


def ours_binary():
    out = subprocess.run(["cargo", "bench", "--bench", "models", "--no-run", "--message-format=json"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "models" and msg.get("executable"):
            return msg["executable"]
    sys.exit("bench_alternate: cargo did not name the models benchmark's binary")


def run_ours(binary, backbone, runs):
    env = dict(os.environ, RAYON_NUM_THREADS="2", BENCH_CHILD="1", BENCH_RUNS=str(runs),
               BENCH_PROFILE="0", BENCH_BACKBONES=backbone)
    out = subprocess.run([binary], env=env, capture_output=True, text=True, check=True).stdout
    r = json.loads(out)[0]
    return r["forward_s"], r["train_step_s"]


def run_torch(backbone, runs):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        env = dict(os.environ, BENCH_THREADS="2", BENCH_RUNS=str(runs), BENCH_PROFILE="0",
                   BENCH_BACKBONES=backbone, BENCH_OUT=f.name)
        subprocess.run([sys.executable, "tools/bench_pytorch.py"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = json.load(open(f.name))["results"][0]
        return r["forward_s"], r["train_step_s"]


def main():
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    backbones = os.environ.get("BENCH_BACKBONES", "vgg16,resnet101,efficientnet_lite0").split(",")
    binary = ours_binary()
    results = {b: [] for b in backbones}
    for k in range(rounds):
        for b in backbones:
            of, ot = run_ours(binary, b, runs)
            tf, tt = run_torch(b, runs)
            results[b].append(dict(ours_forward_s=of, ours_train_step_s=ot,
                                   torch_forward_s=tf, torch_train_step_s=tt))
            print(f"round {k + 1} {b}: forward {of:.2f} / {tf:.2f} = {of / tf:.2f}, "
                  f"train step {ot:.2f} / {tt:.2f} = {ot / tt:.2f}", flush=True)
    summary = []
    for b, rs in results.items():
        fr = statistics.median(r["ours_forward_s"] / r["torch_forward_s"] for r in rs)
        tr = statistics.median(r["ours_train_step_s"] / r["torch_train_step_s"] for r in rs)
        summary.append(dict(backbone=b, rounds=rs, median_forward_ratio=fr, median_train_step_ratio=tr))
        print(f"{b}: median ratio forward {fr:.2f}, train step {tr:.2f} over {len(rs)} rounds")
    os.makedirs("target/bench", exist_ok=True)
    json.dump(dict(runs=runs, results=summary), open("target/bench/alternate.json", "w"), indent=1)


if __name__ == "__main__":
    main()
