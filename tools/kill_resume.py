#!/usr/bin/env python3
"""Kill-and-resume loop: trains the smoke experiment while killing it at random moments
(SIGKILL and SIGTERM mixed: during training, inside checkpoint writes, during evaluation, during
start-up and during the resumes themselves), resuming with `--resume` after each kill, and checks
that every run that completes ends byte-identical to one that was never interrupted (the final
checkpoint's model.bpk, optimizer.bin and state.json, metrics.jsonl, and the test PCK) with no
temporary file left behind.

usage: python3 tools/kill_resume.py [--kills 24] [--seed 1] [--bin target/release/weakalign]
(`make kill-resume`). Prints one line per kill and a summary; exits 1 if any check fails.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# More steps and a checkpoint every step: more moments inside a checkpoint write to hit.
SETS = ["--set", "strong.steps=4", "--set", "weak.steps=4", "--set", "checkpoint.every=1"]


def exp(binary, root, *extra):
    return [binary, "exp", "experiments/smoke.toml", "--root", root, *SETS, *extra]


def fingerprint(root):
    """What must be identical: the final checkpoint's files, metrics.jsonl, the test PCK."""
    runs = os.path.join(root, "runs", "smoke")
    run = os.path.join(runs, os.listdir(runs)[0])
    ckpts = os.path.join(root, "checkpoints")
    ckpt = os.path.join(ckpts, os.listdir(ckpts)[0])
    last = sorted(d for d in os.listdir(ckpt) if d.startswith("step-"))[-1]
    out = {"checkpoint": last}
    for f in ["model.bpk", "optimizer.bin", "state.json"]:
        with open(os.path.join(ckpt, last, f), "rb") as fh:
            out[f] = hashlib.sha256(fh.read()).hexdigest()
    with open(os.path.join(run, "metrics.jsonl"), "rb") as fh:
        out["metrics.jsonl"] = hashlib.sha256(fh.read()).hexdigest()
    with open(os.path.join(run, "summary.json")) as fh:
        out["test_pck"] = json.load(fh)["test_pck"]
    return out


def run_status(root):
    """status.json's status of the trial's run, if it has one."""
    runs = os.path.join(root, "runs", "smoke")
    try:
        run = os.path.join(runs, os.listdir(runs)[0])
        with open(os.path.join(run, "status.json")) as fh:
            return json.load(fh)["status"]
    except (OSError, IndexError, ValueError, KeyError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bin", default="target/release/weakalign")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="kill-resume-")
    try:
        ref_root = os.path.join(work, "reference")
        t0 = time.time()
        subprocess.run(exp(args.bin, ref_root), check=True, capture_output=True)
        duration = time.time() - t0
        reference = fingerprint(ref_root)
        print(f"reference run: {duration:.1f} s, final {reference['checkpoint']}, "
              f"test PCK {reference['test_pck']:.4f}")
        kills, trials, failures, exits = 0, [], [], []
        while kills < args.kills:
            root = os.path.join(work, f"trial-{len(trials)}")
            launches, trial_kills = 0, []
            while True:
                launches += 1
                p = subprocess.Popen(exp(args.bin, root, "--resume"), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
                # Kill somewhere in what is left of a run (start-up included); after enough
                # kills in this trial, let it finish.
                if kills < args.kills and len(trial_kills) < 6:
                    delay = rng.uniform(0.05, duration)
                    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
                    try:
                        p.wait(timeout=delay)
                    except subprocess.TimeoutExpired:
                        p.send_signal(sig)
                        kills += 1
                        trial_kills.append(sig.name)
                out = p.communicate()[0].decode(errors="replace")
                code = p.returncode
                killed = bool(trial_kills) and launches == len(trial_kills)
                # SIGKILL: -9. SIGTERM: a checkpoint, INTERRUPTED, exit 130 (-15 only before the
                # handler is installed, while the configuration is read).
                expected = {"SIGKILL": {-9}, "SIGTERM": {130, -15}}[trial_kills[-1]] \
                    if killed else {0}
                status = run_status(root)
                if code not in expected:
                    failures.append(f"trial {len(trials)} launch {launches}: exit {code}\n{out}")
                if code == 130 and status != "INTERRUPTED":
                    failures.append(f"trial {len(trials)}: exit 130 with status {status}")
                if "panicked" in out:
                    failures.append(f"trial {len(trials)}: panic\n{out}")
                if killed:
                    exits.append((trial_kills[-1], code))
                    print(f"  kill {kills:2d}: {trial_kills[-1]:7s} after {delay:5.2f} s "
                          f"-> exit {code}, status {status}")
                if code == 0 or code not in expected:
                    break
            got = fingerprint(root) if code == 0 else None
            same = got == reference
            leftovers = [os.path.join(d, n) for d, dirs, files in os.walk(root)
                         for n in dirs + files if ".tmp-" in n]
            if leftovers:
                failures.append(f"trial {len(trials)}: temporary files left: {leftovers}")
            trials.append({"kills": trial_kills, "launches": launches, "identical": same})
            print(f"trial {len(trials) - 1}: {len(trial_kills)} kills, {launches} launches, "
                  f"{'identical to the uninterrupted run' if same else 'DIFFERS'}")
            if not same:
                failures.append(f"trial {len(trials) - 1}: {got} != {reference}")
        by_sig = {s: sum(t["kills"].count(s) for t in trials) for s in ["SIGKILL", "SIGTERM"]}
        for sig in ["SIGKILL", "SIGTERM"]:
            codes = sorted({c for s, c in exits if s == sig})
            counts = ", ".join(f"exit {c}: {sum(1 for s, x in exits if s == sig and x == c)}"
                               for c in codes)
            print(f"{sig}: {counts}")
        print(f"\n{kills} kills ({by_sig['SIGKILL']} SIGKILL, {by_sig['SIGTERM']} SIGTERM) "
              f"over {len(trials)} runs; {sum(t['identical'] for t in trials)} of "
              f"{len(trials)} ended byte-identical to the uninterrupted run "
              f"(model.bpk, optimizer.bin, state.json, metrics.jsonl, test PCK)")
        for f in failures:
            print("FAILED:", f)
        return 1 if failures else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
