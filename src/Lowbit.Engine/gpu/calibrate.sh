#!/usr/bin/env bash
# Planner calibration grid (issue 15) for a CUDA host with python3 + torch + transformers + peft (no .NET needed):
#   calibrate.sh [--out DIR] [--engine DIR] [--skip-engine]
# Measures peak GPU memory (torch.cuda.max_memory_allocated / max_memory_reserved and the process's NVML peak via
# nvidia-smi) and decode tokens/s over a small grid that fits in about 4 minutes on one H200:
#   1. transformers inference, random 1B- and 7B-shaped bf16 Llamas, contexts 512-8192, batches 1-32, SDPA and eager
#   2. transformers + PEFT LoRA r=16 (all seven projections), with and without gradient checkpointing, AdamW
#   3. our engine when the bundle is next to this script (run.sh + lowbit-engine): bench-decode at batch 1 with its
#      NVML peak; `serve` and `finetune` when the bundle has those verbs (a tokenizer comes from tests/fixtures)
# Output: DIR/planner-measurements/<gpu>-<date>.jsonl in the planner's fixture schema, and a Markdown table on stdout.
# Copy the .jsonl into tests/fixtures/planner-measurements/: CalibrationTests reads every *.jsonl there and holds the
# estimator to issue 15's goals over them. Every step has its own time limit; a failed step is reported and skipped.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." 2>/dev/null && pwd || echo "$here")"
out="${OUT:-${TMPDIR:-/tmp}/lowbit-calibrate}"
engine="$here"
skip_engine=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --engine) engine="$2"; shift 2 ;;
    --skip-engine) skip_engine=1; shift ;;
    *) echo "calibrate.sh: unknown argument $1 (accepted: --out DIR, --engine DIR, --skip-engine)" >&2; exit 42 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
export PYTHON
helper="$here/calibrate.py"
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-')"
mkdir -p "$out/planner-measurements"
results="$out/planner-measurements/${gpu:-gpu}-$(date -u +%Y%m%d-%H%M).jsonl"
work="${TMPDIR:-/tmp}/lowbit-calibrate-work"
mkdir -p "$work"
: > "$results"
start=$SECONDS

step() { # step NAME SECONDS COMMAND...
  local name="$1" limit="$2"; shift 2
  echo "{\"event\":\"calibrate-step\",\"step\":\"$name\",\"elapsedSeconds\":$((SECONDS - start))}"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  [ $rc -eq 0 ] || echo "{\"event\":\"calibrate-step-failed\",\"step\":\"$name\",\"exitCode\":$rc}"
}

step transformers-infer-1b 45 "$PYTHON" "$helper" infer --shape 1b --out "$results" --budget 35
step transformers-infer-7b 75 "$PYTHON" "$helper" infer --shape 7b --out "$results" --budget 60
step peft-lora-1b 35 "$PYTHON" "$helper" train --shape 1b --out "$results" --budget 25
step peft-lora-7b 70 "$PYTHON" "$helper" train --shape 7b --out "$results" --budget 55

# Our engine, when this folder is the unpacked GPU bundle (make engine-gpu-bundle).
if [ "$skip_engine" -eq 0 ] && [ -x "$engine/run.sh" ] && [ -x "$engine/lowbit-engine" ]; then
  model="$work/llama7b-8"
  if [ ! -f "$model/config.json" ]; then
    step make-model 60 "$PYTHON" "$here/bench_hf.py" make --out "$model" --layers 8 > /dev/null
  fi
  if [ -f "$model/config.json" ]; then
    # bench-decode: tokens/s at batch 1 (128-token prompt, 128 new) and the process's NVML peak.
    "$engine/run.sh" bench-decode --model "$model" --device cuda --dtype bfloat16 > "$work/bench-decode.out" 2> "$work/bench-decode.err" &
    pid=$!
    peak="$(timeout 120 "$PYTHON" "$helper" nvml-peak --pid "$pid")"
    wait "$pid"; rc=$?
    if [ $rc -eq 0 ]; then
      "$PYTHON" - "$model" "$work/bench-decode.out" "$peak" "$results" "$gpu" <<'PY'
import json, sys
model, log, peak, results, gpu = sys.argv[1:6]
config = json.load(open(f"{model}/config.json"))
line = next((json.loads(l) for l in open(log) if l.strip().startswith("{") and "tokensPerSecond" in l), None)
base = {"source": f"src/Lowbit.Engine/gpu/calibrate.sh: lowbit-engine bench-decode on {gpu}", "runtime": "lowbit",
        "mode": "inference", "modelName": "random-7b-8-layers", "hfConfig": config, "weights": "bf16", "context": 256,
        "batch": 1, "prefillChunk": 128, "gpu": "h200-141gb" if "H200" in gpu else None}
with open(results, "a") as f:
    if line:
        f.write(json.dumps(dict(base, id="cal-lowbit-bench-decode-b1-tps", measure="decode-tokens-per-second",
                                value=line["tokensPerSecond"])) + "\n")
    if float(peak or 0) > 0:
        f.write(json.dumps(dict(base, id="cal-lowbit-bench-decode-b1-nvml", measure="nvml", value=float(peak))) + "\n")
PY
    else
      echo "{\"event\":\"calibrate-step-failed\",\"step\":\"lowbit-bench-decode\",\"exitCode\":$rc,\"stderr\":$("$PYTHON" -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()[-400:]))' "$work/bench-decode.err")}"
    fi

    # serve and finetune need a tokenizer: the byte-level fixture's (260 ids, all inside the 32,000 vocabulary).
    if [ -f "$repo/tests/fixtures/tiny-llama/tokenizer.json" ]; then
      cp "$repo/tests/fixtures/tiny-llama/tokenizer.json" "$repo/tests/fixtures/tiny-llama/tokenizer_config.json" "$model/" 2>/dev/null
    fi
    if "$engine/run.sh" serve 2>&1 | grep -q -- "--model"; then
      port=18931
      "$engine/run.sh" serve --model "$model" --port "$port" --max-context 4096 --max-concurrency 8 --device cuda \
        > "$work/serve.out" 2> "$work/serve.err" &
      spid=$!
      timeout 150 "$PYTHON" "$helper" nvml-peak --pid "$spid" > "$work/serve.peak" &
      wpid=$!
      "$PYTHON" - "$port" <<'PY'
import json, sys, threading, time, urllib.request
port = sys.argv[1]
base = f"http://127.0.0.1:{port}"
for _ in range(120):
    try:
        urllib.request.urlopen(base + "/v1/models", timeout=2).read(); break
    except Exception:
        time.sleep(0.5)
def ask():
    body = json.dumps({"model": "x", "prompt": "lorem ipsum " * 1700, "max_tokens": 16, "temperature": 0}).encode()
    try:
        urllib.request.urlopen(urllib.request.Request(base + "/v1/completions", body, {"Content-Type": "application/json"}), timeout=60).read()
    except Exception as e:
        print(json.dumps({"event": "serve-request-failed", "error": str(e)[:200]}))
threads = [threading.Thread(target=ask) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
PY
      kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; wait "$wpid" 2>/dev/null
      "$PYTHON" - "$model" "$work/serve.peak" "$results" "$gpu" <<'PY'
import json, sys
model, peak, results, gpu = sys.argv[1:5]
value = float((open(peak).read().strip() or "0"))
if value > 0:
    with open(results, "a") as f:
        f.write(json.dumps({"id": "cal-lowbit-serve-ctx4096-b8-nvml", "source": f"src/Lowbit.Engine/gpu/calibrate.sh: lowbit-engine serve on {gpu}, 8 concurrent ~3,400-token prompts",
                            "runtime": "lowbit", "mode": "inference", "modelName": "random-7b-8-layers", "hfConfig": json.load(open(f"{model}/config.json")),
                            "weights": "bf16", "context": 4096, "batch": 8, "measure": "nvml", "value": value}) + "\n")
PY
    else
      echo '{"event":"calibrate-skip","step":"lowbit-serve","why":"the bundle has no serve verb"}'
    fi
    if "$engine/run.sh" finetune 2>&1 | grep -q -- "--base-model"; then
      "$PYTHON" -c 'import random; random.seed(0); w=["alpha","beta","gamma","delta","omega","lorem","ipsum"]; print("\n".join(" ".join(random.choice(w) for _ in range(400)) for _ in range(64)))' > "$work/ft.txt"
      "$engine/run.sh" finetune --base-model "$model" --method lora --r 16 \
        --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --dataset "$work/ft.txt" --dataset-format text \
        --max-steps 3 --micro-batch 1 --seq-length 2048 --out "$work/ft-out" --device cuda > "$work/ft.out" 2> "$work/ft.err" &
      fpid=$!
      fpeak="$(timeout 150 "$PYTHON" "$helper" nvml-peak --pid "$fpid")"
      wait "$fpid"; rc=$?
      if [ $rc -eq 0 ] && [ -n "$fpeak" ]; then
        "$PYTHON" - "$model" "$fpeak" "$results" "$gpu" <<'PY'
import json, sys
model, peak, results, gpu = sys.argv[1:5]
with open(results, "a") as f:
    f.write(json.dumps({"id": "cal-lowbit-finetune-lora-seq2048-nvml", "source": f"src/Lowbit.Engine/gpu/calibrate.sh: lowbit-engine finetune on {gpu}",
                        "runtime": "lowbit", "mode": "lora", "modelName": "random-7b-8-layers", "hfConfig": json.load(open(f"{model}/config.json")),
                        "weights": "bf16", "seq": 2048, "microBatch": 1, "loraRank": 16, "measure": "nvml", "value": float(peak),
                        "note": "the engine decides gradient checkpointing itself; the estimate assumes none (the larger)"}) + "\n")
PY
      else
        echo "{\"event\":\"calibrate-step-failed\",\"step\":\"lowbit-finetune\",\"exitCode\":$rc}"
      fi
    else
      echo '{"event":"calibrate-skip","step":"lowbit-finetune","why":"the bundle has no finetune verb"}'
    fi
  fi
else
  echo '{"event":"calibrate-skip","step":"lowbit-engine","why":"no run.sh + lowbit-engine next to this script (or --skip-engine)"}'
fi

echo "{\"event\":\"calibrate-done\",\"results\":\"$results\",\"lines\":$(wc -l < "$results"),\"seconds\":$((SECONDS - start))}"
"$PYTHON" "$helper" table "$results"
