#!/usr/bin/env bash
# `make bench-gpu`: the GPU benchmark in one call, for the device machine (needs only the
# stripped binary, python3 with torch + torchvision, and this checkout's tools/).
# Usage: tools/bench_gpu.sh BIN OUT — writes OUT/weakalign-cuda.json, OUT/pytorch-cuda.json,
# OUT/gpu.txt and docs/benchmarks-gpu.md (copied to OUT).
set -euo pipefail
BIN=${1:-target/cuda/weakalign}
OUT=${2:-target/device}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" || echo unknown > "$OUT/gpu.txt"
"$BIN" bench --device cuda --batch 16 --size 240 --runs "${BENCH_RUNS:-5}" --out "$OUT/weakalign-cuda.json"
BENCH_DEVICE=cuda BENCH_BATCH=16 BENCH_OUT="$OUT/pytorch-cuda.json" python3 tools/bench_pytorch.py
python3 tools/bench_table.py --gpu "$OUT/weakalign-cuda.json" "$OUT/pytorch-cuda.json" "$OUT/gpu.txt"
cp docs/benchmarks-gpu.md "$OUT/"
