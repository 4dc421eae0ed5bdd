#!/usr/bin/env bash
# GPU decode benchmark for a PyTorch CUDA host without .NET (run from the unpacked GPU bundle, `make engine-gpu-bundle`):
#   ./bench.sh [--layers N] [--work DIR] [--new-tokens N] [--quant] [--shards N]
# 1. bench_hf.py make: a random 7B-shaped Llama (bf16, Llama-2-7B dimensions, N layers, default 32) as safetensors
# 2. lowbit-engine selfcheck-kernels: every native decode kernel against its eager reference (relative errors)
# 3. lowbit-engine bench-kernels: every decode kernel alone on the 7B shapes (cuBLAS, native GEMV, int4 v1/v2/dequant
#    at 1..32 rows; attention, norms, RoPE, SiLU; a device copy): microseconds and GB/s per call, one JSON line each
# 4. lowbit-engine bench-decode: eager (TextGenerator), the fused decode step without and with native kernels and
#    CUDA graphs, batch 4/8/32 (8 also with cuBLAS for the dense GEMV: the serve 8-stream ITL question), and RTN int4 (g64) through the int4 GEMVs at batch 1-32; greedy tokens compared with the eager path
#    (graph-fixed: the fixed kernel defaults instead of the ones measured at build; graph-unfused: without the fused
#    decode step's kernels; int4-graph-silu-in-down: SiLU·mul back in the down GEMV's prologue; all for comparison),
#    then int4 with lm_head quantized too (--int4-head true, g64 and g128) at batch 1 and 16
# 5. bench_hf.py decode: transformers generate() eager and with a static cache (torch.compile), batch 1 and 32
# 6. a Markdown table on stdout; raw JSON lines in $WORK/results.jsonl. --quant adds the quantizer timings
#    (bench-quant.sh; GPTQ alone takes ~5 minutes at 32 layers).
# --shards N (docs/serve.md, "Sharding across GPUs"): step 4 splits the fused decoder's layers into N pipeline stages (one
#    GPU each when the host has N, else all stacked on cuda:0 with --shard-devices: the same code path on one GPU) and
#    runs native:1, graph:1/8/32 and int4-graph:1/16 only (plus eager:1 as the token reference when stacked on one
#    GPU); steps 3 and 5 are skipped. Compare its graph:1 and graph:32
#    rows with a run without --shards; the shard split and the allocator's memory per GPU are printed under the table.
# Every step is bounded by a timeout and a failed step does not stop the others. Runtime target: <= 6 minutes at 32 layers.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
layers=32
new_tokens=128
quant=0
shards=1
work="${TMPDIR:-/tmp}/lowbit-bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --new-tokens) new_tokens="$2"; shift 2 ;;
    --quant) quant=1; shift ;;
    --shards) shards="$2"; shift 2 ;;
    *) echo "bench.sh: unknown argument $1 (accepted: --layers N, --work DIR, --new-tokens N, --quant, --shards N)" >&2; exit 42 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
export PYTHON PYTHONUNBUFFERED=1
model="$work/llama7b-$layers"
results="$work/results.jsonl"
mkdir -p "$work"
: > "$results"
step() { # step NAME SECONDS CMD...: runs CMD under a timeout, JSON lines to results, a failure recorded as a line
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" | tee -a "$results"
  local rc=${PIPESTATUS[0]}
  echo "{\"event\":\"bench-step\",\"step\":\"$name\",\"rc\":$rc,\"seconds\":$((SECONDS - t0))}" | tee -a "$results"
}
if [ ! -f "$model/config.json" ]; then
  step make 240 "$PYTHON" "$here/bench_hf.py" make --out "$model" --layers "$layers"
fi
# First use builds the native library (run.sh); its time is this step's.
step selfcheck-kernels 420 "$here/run.sh" selfcheck-kernels
if [ "$shards" -gt 1 ]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then gpus=$(echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .); fi
  shard_args=(--shards "$shards")
  shard_runs="native:1,graph:1,graph:8,graph:32,int4-graph:1,int4-graph:16"
  if [ "${gpus:-0}" -lt "$shards" ]; then
    stacked=$(for _ in $(seq "$shards"); do printf 'cuda:0,'; done)
    shard_args+=(--shard-devices "${stacked%,}")
    # Every stage on one GPU: the model's own eager forward still runs, so the split runs' greedy tokens and prefill
    # logits are compared with it (the "greedy = reference" column).
    shard_runs="eager:1,$shard_runs"
  fi
  echo "{\"event\":\"bench-shards\",\"shards\":$shards,\"args\":\"${shard_args[*]}\"}" | tee -a "$results"
  step lowbit-decode-shards 300 "$here/run.sh" bench-decode --model "$model" --device cuda --dtype bfloat16 --repeats 2 \
    --new-tokens "$new_tokens" --int4-group 64 "${shard_args[@]}" \
    --runs "$shard_runs"
else
step bench-kernels 150 "$here/run.sh" bench-kernels --device cuda
step lowbit-decode 300 "$here/run.sh" bench-decode --model "$model" --device cuda --dtype bfloat16 --repeats 2 \
  --new-tokens "$new_tokens" --int4-group 64 \
  --runs "eager:1,fused:1,native:1,graph-cublas:1,graph-fixed:1,graph-unfused:1,graph:1,fused:4,graph:4,graph:8,graph-cublas:8,graph:32,int4-native:1,int4-graph-fixed:1,int4-graph-unfused:1,int4-graph-silu-in-down:1,int4-graph:1,int4-graph:2,int4-graph:4,int4-graph:8,int4-graph:16,int4-graph:32"
# Every weight in 4 bits (quantize --quantize-head: lm_head too, its GEMV running the final RMSNorm), groups of 64 and 128.
for g in 64 128; do
  step "lowbit-decode-int4-head-g$g" 120 "$here/run.sh" bench-decode --model "$model" --device cuda --dtype bfloat16 --repeats 2 \
    --new-tokens "$new_tokens" --int4-group "$g" --int4-head true --runs "int4-graph:1,int4-graph:16"
done
step hf-eager 180 "$PYTHON" "$here/bench_hf.py" decode --model "$model" --batches 1,32 --repeats 2 --new-tokens "$new_tokens"
step hf-static 240 "$PYTHON" "$here/bench_hf.py" decode --model "$model" --batches 1,32 --repeats 2 --new-tokens "$new_tokens" --cache static
fi
if [ "$quant" = 1 ]; then
  "$here/bench-quant.sh" "$here" --layers "$layers" | tee -a "$results"
fi
"$PYTHON" - "$results" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
checks = [r for r in rows if r.get("event") == "selfcheck-kernel"]
if checks:
    print("\n| kernel check | rel. error | pass |")
    print("|---|---|---|")
    for r in checks:
        print(f"| {r['check']} | {r['relativeError']:.2e} | {r['pass']} |")
kernels = [r for r in rows if r.get("event") == "bench-kernel"]
if kernels:
    print("\n| kernel | shape | group | rows | us/call | GB/s | of 4.28 TB/s | rel. error |")
    print("|---|---|---|---|---|---|---|---|")
    for r in kernels:
        shape = f"{r['shape']} {r['n']}x{r['k']}" if "shape" in r else (f"context {r['context']}" if "context" in r else "")
        us = r.get("microseconds", r.get("error", ""))
        print(f"| {r['kernel']} | {shape} | {r.get('group') or ''} | {r['rows']} | {us} | {r.get('gbPerSecond', '')} | "
              f"{r.get('fractionOfReference', '')} | {r.get('relativeError', '')} |")
# The fused variants the decode step runs, beside the plain kernel on the same weights (the prologue/epilogue's cost).
plain = {(r["kernel"], r.get("shape"), r.get("group"), r["rows"]): r.get("microseconds") for r in kernels if "shape" in r}
fused = [r for r in rows if r.get("event") == "bench-kernel-fused" and "microseconds" in r]
if fused:
    print("\n| kernel | shape | group | rows | fused | us/call | plain us/call | difference | rel. error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in fused:
        base = plain.get((r["kernel"], r["shape"], r.get("group"), r["rows"]))
        extra = f"{r['microseconds'] - base:+.2f}" if isinstance(base, (int, float)) else ""
        what = r["prologue"] + (" + residual" if r["residual"] else "")
        print(f"| {r['kernel']} | {r['shape']} {r['n']}x{r['k']} | {r.get('group') or ''} | {r['rows']} | {what} | "
              f"{r['microseconds']} | {base if base is not None else ''} | {extra} | {r.get('relativeError', '')} |")
decode = [r for r in rows if "tokensPerSecond" in r]
eager = next((r["tokensPerSecond"] for r in decode if r["engine"] == "lowbit" and r.get("mode") == "eager"), None)
print("\n| engine | mode | weights | batch | layers | tokens/s | x lowbit eager | capture s | greedy = reference | prefill logit max diff | vs fp32: max / rms diff, argmax |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in decode:
    ratio = f"{r['tokensPerSecond'] / eager:.2f}" if eager else ""
    match = f"{r['tokensMatchingReference']}/{r['referenceTokens']}" if "tokensMatchingReference" in r else ""
    diff = f"{r['prefillLogitMaxAbsDiff']} (of {r['prefillLogitMaxAbs']})" if "prefillLogitMaxAbsDiff" in r else ""
    exact = (f"{r['prefillLogitMaxAbsDiffFp32']} / {r['prefillLogitRmsDiffFp32']}, "
             f"{'same' if r['prefillArgmaxEqualsFp32'] else 'differs'}") if "prefillLogitMaxAbsDiffFp32" in r else ""
    print(f"| {r['engine']} | {r.get('mode', '')} | {r.get('weights', 'bf16')} | {r.get('batch', 1)} | {r['layers']} | "
          f"{r['tokensPerSecond']:.1f} | {ratio} | {r.get('captureSeconds', '')} | {match} | {diff} | {exact} |")
for r in decode:
    if r["engine"] == "lowbit":
        print(f"\nlowbit 7B load: {r['loadSeconds']} s")
        break
split = [r for r in decode if "shardPlan" in r]
if split:
    print(f"\npipeline split ({split[0]['shards']} shards, {next((r['args'] for r in rows if r.get('event') == 'bench-shards'), '')}):")
    for line in split[0]["shardPlan"]:
        print(f"- {line}")
    for r in split:
        print(f"- {r['weights']} {r['mode']}:{r['batch']} memory: {'; '.join(r['gpuMemory']) or 'n/a'}")
print("\n| step | rc | seconds |")
print("|---|---|---|")
for r in rows:
    if r.get("event") == "bench-step":
        print(f"| {r['step']} | {r['rc']} | {r['seconds']} |")
    elif "step" in r and "engine" in r:
        print(f"| {r['engine']} {r['step']} | | {r.get('seconds')} |")
PY
