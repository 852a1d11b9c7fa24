#!/usr/bin/env bash
# Runs every cell of a sweep file on this machine, PARALLEL at a time (each with an equal share of
# the cores: on 2 CPU cores two one-thread runs do ~25 % more steps per second than one two-thread
# run), resuming cells that stopped, skipping those already complete, and reusing identical
# strong stages (`weakalign exp --reuse-strong`: the cells that share them run after the first
# that trains them); then evaluates each
# completed cell's checkpoint on the TSS sample when `datasets/tss-sample` is there (the report
# goes to runs/<experiment>/<hash>/eval/tss.json, where `weakalign compare` reads it) and prints
# `weakalign compare` of the sweep.
#
#   tools/sweep.sh experiments/ablation_caltech.toml        (make ablation)
#   PARALLEL=1 tools/sweep.sh FILE                           (one at a time, all cores)
#   THREADS=1 PARALLEL=1 tools/sweep.sh FILE &               (beside another sweep)
#
# Logs: logs/sweep/<experiment>/cell<INDEX>.log. Exit status: 0 when every cell completed, 1
# otherwise (the failed cells' logs are named).
set -uo pipefail

file=${1:?usage: tools/sweep.sh EXPERIMENT.toml}
bin=${BIN:-target/release/weakalign}
parallel=${PARALLEL:-2}
name=$(basename "$file" .toml)
logs=logs/sweep/$name
mkdir -p "$logs"

# One "# <name> — hash <h> (cell <c>, strong stages <s>) — <values>" line per cell.
plan=$("$bin" exp "$file" --dry-run | grep "^# $name — hash ") || {
    echo "error: $file: cannot resolve the sweep (weakalign exp $file --dry-run)" >&2
    exit 1
}
cells=$(printf '%s\n' "$plan" | wc -l)
threads=${THREADS:-$(( $(nproc) / parallel ))}
(( threads >= 1 )) || threads=1
echo "$name: $cells cells, $parallel at a time, $threads thread(s) each; logs in $logs/"

# Two passes: first the first cell of each set of identical strong stages (equal strong-stages
# hash), in file order; then the cells that can reuse those strong stages. In one pass, two cells
# of a set that start side by side would both train them.
leaders=() followers=()
declare -A seen=()
index=0
while read -r line; do
    strong=$(sed 's/.*, strong stages \([0-9a-f]*\)).*/\1/' <<< "$line")
    if [[ -z ${seen[$strong]:-} ]]; then
        seen[$strong]=1
        leaders+=("$index")
    else
        followers+=("$index")
    fi
    index=$((index + 1))
done <<< "$plan"

# --resume continues a stopped cell from its checkpoint, starts one that never ran, and returns
# at once for one already complete; --reuse-strong starts a cell that differs from another run
# only in the weak stage from that run's checkpoint at the end of the strong stages, if any.
run_cells() {
    (( $# )) || return 0
    printf '%s\n' "$@" | xargs -P "$parallel" -I{} sh -c \
        "RAYON_NUM_THREADS=$threads '$bin' exp '$file' --cell {} --resume --reuse-strong > '$logs/cell{}.log' 2>&1 \
         || { echo \"cell {} failed (exit \$?): $logs/cell{}.log\" >&2; exit 1; }"
}
failed=0
run_cells "${leaders[@]}" || failed=1
run_cells "${followers[@]}" || failed=1

if [[ -d datasets/tss-sample ]]; then
    for hash in $(printf '%s\n' "$plan" | sed 's/.* hash \([0-9a-f]*\) .*/\1/'); do
        run=runs/$name/$hash
        if grep -q '"COMPLETED"' "$run/status.json" 2>/dev/null && [[ ! -f $run/eval/tss.json ]]; then
            "$bin" eval --dataset tss --checkpoint "checkpoints/$name-$hash" --out "$run/eval" \
                > "$logs/tss-$hash.log" 2>&1 || { echo "TSS eval of $run failed: $logs/tss-$hash.log" >&2; failed=1; }
        fi
    done
fi

"$bin" compare "runs/$name"
exit $failed
