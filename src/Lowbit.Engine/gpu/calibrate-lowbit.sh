#!/usr/bin/env bash
# Our engine's peak GPU memory over a grid of serve slabs and fine-tune shapes (issue 15), on a CUDA host with the
# unpacked GPU bundle (this folder):   calibrate-lowbit.sh [--out DIR] [--budget SECONDS] [--only 0,3,5]
# Points (calibrate_lowbit.py GRID, most important first): serve 7B bf16 at 512x1 .. 16384x2, 1B, 13B, 7B int4;
# LoRA/QLoRA fine-tunes with and without gradient checkpointing. Each row lands in
# DIR/planner-measurements/<gpu>-<date>-lowbit.jsonl as soon as it is measured (planner fixture schema): copy it into
# tests/fixtures/planner-measurements/, where CalibrationTests holds the estimator to issue 15's goals over it.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-${TMPDIR:-/tmp}/lowbit-calibrate}"
budget=540
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "calibrate-lowbit.sh: unknown argument $1 (accepted: --out DIR, --budget SECONDS, --only LIST)" >&2; exit 42 ;;
  esac
done
[ -x "$here/run.sh" ] && [ -x "$here/lowbit-engine" ] || { echo "calibrate-lowbit.sh: run it from the unpacked GPU bundle (make engine-gpu-bundle)" >&2; exit 42; }
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-')"
mkdir -p "$out/planner-measurements"
results="$out/planner-measurements/${gpu:-gpu}-$(date -u +%Y%m%d-%H%M)-lowbit.jsonl"
: > "$results"
"${PYTHON:-python3}" "$here/calibrate_lowbit.py" --engine "$here" --out "$results" --budget "$budget" --only "$only"
echo "rows: $(wc -l < "$results") in $results"
