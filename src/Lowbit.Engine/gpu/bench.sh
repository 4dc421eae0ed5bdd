#!/usr/bin/env bash
# GPU benchmark for a PyTorch CUDA host without .NET (run from the unpacked GPU bundle, `make engine-gpu-bundle`):
#   ./bench.sh [--layers N] [--work DIR]
# 1. bench_hf.py make: a random 7B-shaped Llama (bf16, Llama-2-7B dimensions, N layers, default 32) saved as safetensors
# 2. lowbit-engine bench-decode: our greedy decode tokens/s at batch 1 (KV cache, 128 prompt + 128 new tokens)
# 3. bench_hf.py decode: Hugging Face transformers' generate() on the same weights, same prompt
# 4. a comparison table (Markdown) on stdout; the raw JSON lines in $WORK/results.jsonl
# Quantizer timings (HQQ/RTN/GPTQ) append their lines to the same results file (see the QUANT section below).
# Runtime: ~4 minutes with 32 layers on one H100 (most of it writing and reading 13.5 GB of weights).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
layers=32
work="${TMPDIR:-/tmp}/lowbit-bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    *) echo "bench.sh: unknown argument $1 (accepted: --layers N, --work DIR)" >&2; exit 42 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
export PYTHON
model="$work/llama7b-$layers"
results="$work/results.jsonl"
mkdir -p "$work"
: > "$results"
if [ ! -f "$model/config.json" ]; then
  "$PYTHON" "$here/bench_hf.py" make --out "$model" --layers "$layers" | tee -a "$results"
fi
"$here/run.sh" bench-decode --model "$model" --device cuda --dtype bfloat16 | tee -a "$results"
"$PYTHON" "$here/bench_hf.py" decode --model "$model" | tee -a "$results"
# QUANT: whole-model RTN / HQQ / GPTQ (4-bit, g64; GPTQ with 128 x 2048 calibration tokens) on the same 7B shapes,
# weights generated on the GPU per layer (bench-quant.sh; H100: RTN 0.6 s, HQQ 9.3 s, GPTQ 335 s for 32 layers).
"$here/bench-quant.sh" "$here" --layers "$layers" | tee -a "$results"
"$PYTHON" - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
decode = {r["engine"]: r for r in rows if "tokensPerSecond" in r}
print("\n| engine | layers | dtype | decode tokens/s (batch 1) | load s |")
print("|---|---|---|---|---|")
for name in ("lowbit", "transformers"):
    if name in decode:
        r = decode[name]
        print(f"| {name} | {r['layers']} | {r['dtype']} | {r['tokensPerSecond']:.1f} | {r['loadSeconds']} |")
if "lowbit" in decode and "transformers" in decode:
    print(f"\nlowbit / transformers decode ratio: {decode['lowbit']['tokensPerSecond'] / decode['transformers']['tokensPerSecond']:.2f}")
quant = [r for r in rows if r.get("event") == "bench-quant"]
if quant:
    print("\n| quantizer (whole model) | bits | group | layers | seconds | parameters/s | mean rel. error |")
    print("|---|---|---|---|---|---|---|")
    for r in quant:
        print(f"| {r['method']} | {r['bits']} | {r['groupSize']} | {r['layers']} | {r['seconds']} | {r['parametersPerSecond']:.3g} | {r['meanRelativeError']} |")
for r in rows:
    if "step" in r and r.get("step") != "make":
        print(f"| {r['engine']} {r['step']} | {r.get('seconds')} s |")
PY
