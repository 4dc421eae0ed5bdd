#!/usr/bin/env bash
# Serving benchmark on a PyTorch CUDA host (run from the unpacked GPU bundle, `make engine-gpu-bundle`):
#   ./bench-serve.sh [--layers N] [--work DIR] [--concurrency 1,8,32,64] [--max-num-batched-tokens N] [--shards N]
# 1. bench_hf.py make: the random 7B-shaped Llama (bf16) that bench.sh uses (reused when already there)
# 2. run.sh serve on it (bf16, --max-context 320, --max-concurrency 64, --max-num-batched-tokens 2048 unless given:
#    the engine's CUDA default) on 127.0.0.1; the server warms up (one prefill at the budget, a decode step) before /ready
#    With --shards N the server splits the layers over N pipeline shards (docs/serve.md, "Sharding across GPUs"): one GPU
#    each when the host has N, else all stacked on cuda:0 (--shard-devices cuda:0,...: the same code path on one GPU)
# 3. bench_serve.py: 1, 8, 32, 64 concurrent streams, 128-token prompts (token ids), 128 new tokens, greedy, ignore_eos
# Prints JSON lines (including the decode path, CUDA graphs, prefill budget and warm-up the server logged) and a Markdown table
# next to the transformers anchors measured on the H200.
# Budget: < 5 minutes on an H200 (most of it writing/reading the 13.5 GB of weights when not cached).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
layers=32
work="${TMPDIR:-/tmp}/lowbit-bench"
concurrency="1,8,32,64"
budget=2048
port="${PORT:-18080}"
shards=1
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --max-num-batched-tokens) budget="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    *) echo "bench-serve.sh: unknown argument $1 (accepted: --layers N, --work DIR, --concurrency LIST, --max-num-batched-tokens N, --shards N)" >&2; exit 42 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
export PYTHON
model="$work/llama7b-$layers"
results="$work/serve-results.jsonl"
mkdir -p "$work"
: > "$results"
if [ ! -f "$model/config.json" ]; then
  "$PYTHON" "$here/bench_hf.py" make --out "$model" --layers "$layers" | tee -a "$results"
fi
log="$work/serve.log"
shard_args=()
if [ "$shards" -gt 1 ]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then gpus=$(echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .); fi
  if [ "${gpus:-0}" -ge "$shards" ]; then
    shard_args=(--shards "$shards")
  else
    stacked=$(for _ in $(seq "$shards"); do printf 'cuda:0,'; done); stacked="${stacked%,}"
    shard_args=(--shards "$shards" --shard-devices "$stacked")
  fi
fi
echo "{\"engine\":\"lowbit-serve\",\"step\":\"shards\",\"shards\":$shards,\"args\":\"${shard_args[*]:-}\"}" | tee -a "$results"
"$here/run.sh" serve --model "$model" --device cuda --port "$port" --max-context 320 --max-concurrency 64 \
  --max-num-batched-tokens "$budget" --served-name bench "${shard_args[@]}" > "$log" 2>&1 &
server=$!
cleanup() { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap cleanup EXIT
start=$(date +%s)
get() { "$PYTHON" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
until get "http://127.0.0.1:$port/ready" > /dev/null 2>&1; do
  if ! kill -0 "$server" 2>/dev/null; then echo "bench-serve.sh: the server exited:" >&2; tail -40 "$log" >&2; exit 1; fi
  if [ $(( $(date +%s) - start )) -gt 240 ]; then echo "bench-serve.sh: not ready after 240 s" >&2; tail -40 "$log" >&2; exit 1; fi
  sleep 1
done
echo "{\"engine\":\"lowbit-serve\",\"step\":\"ready\",\"seconds\":$(( $(date +%s) - start )),\"maxNumBatchedTokens\":$budget}" | tee -a "$results"
timeout 200 "$PYTHON" "$here/bench_serve.py" --url "http://127.0.0.1:$port" --model bench --concurrency "$concurrency" | tee -a "$results"
get "http://127.0.0.1:$port/metrics" | grep -E '^lowbit:(generation|prompt)_tokens_total' || true
# Memory per GPU while the server still holds it (the driver's view: weights, KV cache, graphs pools, CUDA context).
nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv,noheader,nounits 2>/dev/null | "$PYTHON" -c 'import json, sys
for line in sys.stdin:
    i, used, total = [x.strip() for x in line.split(",")]
    print(json.dumps({"engine": "lowbit-serve", "step": "gpu-memory", "gpu": int(i), "usedMiB": int(used), "totalMiB": int(total)}))' | tee -a "$results" || true
cleanup
trap - EXIT
# Which decode path served the run (fast decode with or without CUDA graphs/native kernels) and the graphs it
# captured, the prefill budget and the warm-up: the serve log's "decode path"/"decode graphs"/"prefill budget"/"warm-up"
# lines, as JSON lines next to the numbers.
grep -E 'decode (path|graphs):|prefill budget:|warm-up:|pipeline split:|shard [0-9]+: layers|memory (after load|at ready)' "$log" | "$PYTHON" -c 'import json, sys
for line in sys.stdin:
    line = line.strip()
    try:
        line = json.loads(line).get("message", line)
    except ValueError:
        pass
    print(json.dumps({"engine": "lowbit-serve", "step": "decode-path", "log": line}))' | tee -a "$results"
"$PYTHON" - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
anchors = {1: ("51.6", "98.7"), 32: ("1,339", "3,670")}
shards = next((r["shards"] for r in rows if r.get("step") == "shards"), 1)
print(f"\nshards: {shards}")
for r in rows:
    if r.get("step") == "decode-path" and ("shard " in r["log"] or "pipeline split" in r["log"] or "memory" in r["log"]):
        print(f"- {r['log']}")
    if r.get("step") == "gpu-memory":
        print(f"- GPU {r['gpu']}: {r['usedMiB']:,} MiB used of {r['totalMiB']:,} (nvidia-smi, server running)")
print("\n| streams | lowbit serve tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | errors | transformers eager | transformers static+compile |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if "concurrency" in r:
        eager, compiled = anchors.get(r["concurrency"], ("", ""))
        print(f"| {r['concurrency']} | {r['tokensPerSecond']:,.1f} | {r['ttftMsP50']} / {r['ttftMsP99']} | {r['itlMsP50']} / {r['itlMsP99']} | {r['errors']} | {eager} | {compiled} |")
PY
