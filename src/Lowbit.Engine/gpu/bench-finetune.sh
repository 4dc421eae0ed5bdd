#!/usr/bin/env bash
# LoRA / QLoRA fine-tuning throughput and peak memory on a GPU host (PyTorch CUDA install, no .NET), from the
# unpacked GPU bundle (`make engine-gpu-bundle`):
#   ./bench-finetune.sh [--layers N] [--work DIR] [--steps N] [--warmup N] [--checkpointing both|true|false]
#                       [--seq-length N] [--no-qlora] [--phase-sync] [--host-proxy] [--ungrouped] [--shards N]
# Workload (issue 10): the random 7B-shaped bf16 Llama of bench_hf.py make, LoRA r=16 (alpha 32, dropout 0.05) on
# all seven projections, sequence 2048, micro-batch 1, AdamW, random token ids; with and without gradient
# checkpointing (--checkpointing both, the default), each engine side by side with the other in the same setting.
# 1. bench_hf_finetune.py: Hugging Face transformers + PEFT. The issue's anchor (8,833 tokens/s at 30.6 GiB on an
#    H200) is this run WITHOUT checkpointing (calibrate.sh measured 8,817 tokens/s, 30.58 GiB allocated); with it,
#    HF+PEFT gave 4,827-6,179 tokens/s at 15.8 GiB.
# 2. lowbit-engine bench-finetune --method lora: our LoRA on the bf16 weights
# 3. lowbit-engine quantize --method hqq --bits 4 --group-size 64 --format lowbit, then bench-finetune --method qlora
#    (with checkpointing)
# 4. a Markdown table on stdout; raw JSON lines in $WORK/finetune.jsonl
# 5. bench-finetune --optimizer-only: clip + AdamW step + zero-grad alone at the 7B LoRA shapes (448 tensors), the
#    per-tensor reference against the engine's flat-buffer AdamW (ms per phase, each phase synchronized)
# --phase-sync adds one LoRA run (with checkpointing) whose hostMsPerStep phases end with a CUDA synchronize, so they
# show device time per phase (forward+backward, clip, optimizer step, zero-grad); its tokens/s is lower (no overlap).
# --ungrouped adds our LoRA (with checkpointing) with LOWBIT_LORA_GROUPS=0: the per-projection training path instead of
# the fused projection groups (what the groups bought; also the fallback if the grouped rows fail), row "lowbit lora
# ungrouped".
# --host-proxy adds our LoRA (with checkpointing) on a random Llama of the 7B's structure at tiny widths (32 layers,
# hidden 64, sequence 64: bench-finetune --random-layers): the GPU does almost nothing, so its step time is the host's
# per-step cost (TorchSharp calls, autograd nodes, launches) alone; row "lowbit lora host-proxy", ~30 s.
# --shards N (N > 1) adds our LoRA (and QLoRA unless --no-qlora) split over N pipeline shards (finetune --shards,
# docs/finetune.md "Training across GPUs"), with each checkpointing setting: rows "lowbit lora shards=N". With fewer
# GPUs than shards visible, the shards stack on the GPUs in order (1 GPU: --shard-devices cuda:0,cuda:0,...), so one
# GPU measures the same code path (stage hand-offs, per-device optimizer groups); its tokens/s vs the unsplit row is
# the cost of the split, and "peak per device" shows each GPU's share.
# Goal: lowbit LoRA >= 1.5x HF+PEFT tokens/s at <= its peak memory (8,833 tokens/s, 30.6 GiB: compare the rows
# without checkpointing); QLoRA 4-bit peak <= 45% of our LoRA run (both with checkpointing).
# Memory columns: HF reports torch.cuda.max_memory_allocated / max_memory_reserved; both engines report the peak
# device used bytes (total - free, sampled after every step: allocator pool + CUDA context), the comparable column.
# CUDA allocator: lowbit runs with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (run.sh / the engine set it for
# fine-tuning); HF runs with whatever the caller's environment has (default: none). For HF with the same setting:
#   PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True ./bench-finetune.sh ...  (then both runs use it).
# Runtime: ~6-8 minutes on one H200 with 32 layers and --checkpointing both (model write/read dominates).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
layers=32
steps=12
warmup=2
checkpointing=both
seq=2048
qlora=1
phase_sync=0
host_proxy=0
ungrouped=0
shards=1
work="${TMPDIR:-/tmp}/lowbit-bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --checkpointing) checkpointing="$2"; shift 2 ;;
    --seq-length) seq="$2"; shift 2 ;;
    --no-qlora) qlora=0; shift ;;
    --phase-sync) phase_sync=1; shift ;;
    --host-proxy) host_proxy=1; shift ;;
    --ungrouped) ungrouped=1; shift ;;
    --shards) shards="$2"; shift 2 ;;
    *) echo "bench-finetune.sh: unknown argument $1 (accepted: --layers N, --work DIR, --steps N, --warmup N, --checkpointing both|true|false, --seq-length N, --no-qlora, --phase-sync, --host-proxy, --ungrouped, --shards N)" >&2; exit 42 ;;
  esac
done
case "$checkpointing" in
  both) settings=(true false) ;;
  true|false) settings=("$checkpointing") ;;
  *) echo "bench-finetune.sh: --checkpointing must be both, true or false (got $checkpointing)" >&2; exit 42 ;;
esac
case "$shards" in
  ''|*[!0-9]*) echo "bench-finetune.sh: --shards must be an integer from 1 to 16 (got $shards)" >&2; exit 42 ;;
esac
if [ "$shards" -lt 1 ] || [ "$shards" -gt 16 ]; then
  echo "bench-finetune.sh: --shards must be an integer from 1 to 16 (got $shards)" >&2; exit 42
fi
PYTHON="${PYTHON:-python3}"
export PYTHON
model="$work/llama7b-$layers"
quantized="$work/llama7b-$layers-hqq4"
results="$work/finetune.jsonl"
mkdir -p "$work"
: > "$results"
if [ ! -f "$model/config.json" ]; then
  "$PYTHON" "$here/bench_hf.py" make --out "$model" --layers "$layers" | tee -a "$results" || exit 1
fi
common=(--steps "$steps" --warmup "$warmup" --seq-length "$seq" --r 16)
for ck in "${settings[@]}"; do
  "$PYTHON" "$here/bench_hf_finetune.py" --model "$model" "${common[@]}" --gradient-checkpointing "$ck" | tee -a "$results" \
    || echo "{\"engine\":\"transformers+peft\",\"bench\":\"finetune\",\"method\":\"lora\",\"gradientCheckpointing\":$ck,\"error\":\"run failed (see stderr)\"}" | tee -a "$results"
  "$here/run.sh" bench-finetune --model "$model" --method lora "${common[@]}" --device cuda --gradient-checkpointing "$ck" \
    2> "$work/lowbit-lora-ckpt-$ck.log" | tee -a "$results" \
    || { tail -5 "$work/lowbit-lora-ckpt-$ck.log" >&2; echo "{\"engine\":\"lowbit\",\"bench\":\"finetune\",\"method\":\"lora\",\"gradientCheckpointing\":$ck,\"error\":\"run failed\"}" | tee -a "$results"; }
done
# Our LoRA with its micro-step captured as a CUDA graph (finetune --cuda-graph; not with checkpointing + dropout):
# next to the rows without checkpointing above.
if [ "$checkpointing" != true ]; then
  "$here/run.sh" bench-finetune --model "$model" --method lora "${common[@]}" --device cuda --gradient-checkpointing false \
    --cuda-graph true 2> "$work/lowbit-lora-graph.log" | tee -a "$results" \
    || { tail -5 "$work/lowbit-lora-graph.log" >&2; echo '{"engine":"lowbit","bench":"finetune","method":"lora","cudaGraph":true,"gradientCheckpointing":false,"error":"run failed"}' | tee -a "$results"; }
fi
if [ "$qlora" = 1 ]; then
  if [ ! -f "$quantized/lowbit/config.json" ]; then
    "$here/run.sh" quantize --model "$model" --method hqq --bits 4 --group-size 64 --format lowbit --out "$quantized" \
      --device cuda --result-file "$work/quantize-result.json" > "$work/quantize.log" 2>&1 || tail -5 "$work/quantize.log" >&2
  fi
  "$here/run.sh" bench-finetune --model "$quantized/lowbit" --method qlora "${common[@]}" --device cuda --gradient-checkpointing true \
    2> "$work/lowbit-qlora.log" | tee -a "$results" \
    || { tail -5 "$work/lowbit-qlora.log" >&2; echo '{"engine":"lowbit","bench":"finetune","method":"qlora","gradientCheckpointing":true,"error":"run failed"}' | tee -a "$results"; }
fi
if [ "$shards" -gt 1 ]; then
  gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || nvidia-smi -L 2>/dev/null | grep -c '^GPU')
  [ "$gpus" -ge 1 ] || gpus=1
  # Shard i on GPU i*gpus/shards: one shard per GPU when there are enough, else contiguous shards stacked.
  devices=$(for ((i = 0; i < shards; i++)); do printf 'cuda:%d\n' $((i * gpus / shards)); done | paste -sd, -)
  echo "bench-finetune.sh: --shards $shards over $gpus visible GPU(s): --shard-devices $devices" >&2
  for ck in "${settings[@]}"; do
    "$here/run.sh" bench-finetune --model "$model" --method lora "${common[@]}" --device cuda --gradient-checkpointing "$ck" \
      --shards "$shards" --shard-devices "$devices" 2> "$work/lowbit-lora-shards-$shards-ckpt-$ck.log" | tee -a "$results" \
      || { tail -5 "$work/lowbit-lora-shards-$shards-ckpt-$ck.log" >&2; echo "{\"engine\":\"lowbit\",\"bench\":\"finetune\",\"method\":\"lora\",\"shards\":$shards,\"gradientCheckpointing\":$ck,\"error\":\"run failed\"}" | tee -a "$results"; }
  done
  if [ "$qlora" = 1 ]; then
    "$here/run.sh" bench-finetune --model "$quantized/lowbit" --method qlora "${common[@]}" --device cuda --gradient-checkpointing true \
      --shards "$shards" --shard-devices "$devices" 2> "$work/lowbit-qlora-shards-$shards.log" | tee -a "$results" \
      || { tail -5 "$work/lowbit-qlora-shards-$shards.log" >&2; echo "{\"engine\":\"lowbit\",\"bench\":\"finetune\",\"method\":\"qlora\",\"shards\":$shards,\"gradientCheckpointing\":true,\"error\":\"run failed\"}" | tee -a "$results"; }
  fi
fi
"$here/run.sh" bench-finetune --optimizer-only true --device cuda --steps 10 2> "$work/lowbit-optimizer.log" | tee -a "$results" \
  || { tail -5 "$work/lowbit-optimizer.log" >&2; echo '{"engine":"lowbit","bench":"optimizer","error":"run failed"}' | tee -a "$results"; }
if [ "$phase_sync" = 1 ]; then
  "$here/run.sh" bench-finetune --model "$model" --method lora "${common[@]}" --device cuda --gradient-checkpointing true \
    --phase-sync true 2> "$work/lowbit-lora-phase-sync.log" | tee -a "$results" \
    || { tail -5 "$work/lowbit-lora-phase-sync.log" >&2; echo '{"engine":"lowbit","bench":"finetune","method":"lora","phaseSync":true,"gradientCheckpointing":true,"error":"run failed"}' | tee -a "$results"; }
fi
if [ "$ungrouped" = 1 ]; then
  LOWBIT_LORA_GROUPS=0 "$here/run.sh" bench-finetune --model "$model" --method lora "${common[@]}" --device cuda --gradient-checkpointing true \
    2> "$work/lowbit-lora-ungrouped.log" | tee -a "$results" \
    || { tail -5 "$work/lowbit-lora-ungrouped.log" >&2; echo '{"engine":"lowbit","bench":"finetune","method":"lora","loraGroups":false,"gradientCheckpointing":true,"error":"run failed"}' | tee -a "$results"; }
fi
if [ "$host_proxy" = 1 ]; then
  "$here/run.sh" bench-finetune --model "$work/host-proxy-32" --random-layers 32 --method lora --steps 12 --warmup 2 \
    --seq-length 64 --r 16 --device cuda --gradient-checkpointing true 2> "$work/lowbit-lora-host-proxy.log" \
    | sed 's/^{/{"hostProxy":true,/' | tee -a "$results" \
    || { tail -5 "$work/lowbit-lora-host-proxy.log" >&2; echo '{"hostProxy":true,"engine":"lowbit","bench":"finetune","method":"lora","gradientCheckpointing":true,"error":"run failed"}' | tee -a "$results"; }
fi
"$PYTHON" - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
runs = [r for r in rows if r.get("bench") == "finetune"]
def cell(r, key):
    v = r.get(key)
    return "-" if v is None else (f"{v:,.1f}" if isinstance(v, float) and key == "tokensPerSecond" else str(v))
print("\n| run | checkpointing | layers | seq | r | tokens/s | peak device used GiB | peak allocated GiB | peak reserved GiB | CUDA allocator | loss first -> last |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    name = f"{r['engine']} {r.get('method', '')}{' shards=' + str(r['shards']) if r.get('shards', 1) > 1 else ''}{' cuda-graph' if r.get('cudaGraph') else ''}{' phase-sync' if r.get('phaseSync') else ''}{' host-proxy' if r.get('hostProxy') else ''}{' ungrouped' if r.get('loraGroups') is False else ''}".strip()
    ck = "yes" if r.get("gradientCheckpointing") else "no"
    if "error" in r:
        print(f"| {name} | {ck} | - | - | - | {r['error']} | - | - | - | - | - |")
        continue
    print(f"| {name} | {ck} | {r['layers']} | {r['seqLength']} | {r['r']} | {cell(r, 'tokensPerSecond')} | {cell(r, 'peakDeviceUsedGiB')} "
          f"| {cell(r, 'peakAllocatedGiB')} | {cell(r, 'peakReservedGiB')} | {cell(r, 'allocatorConfig')} | {r.get('firstLoss')} -> {r.get('lastLoss')} |")
for r in runs:
    if "error" not in r and r.get("shards", 1) > 1:
        print(f"\nlowbit {r['method']} shards={r['shards']} on {r.get('shardDevices')} (checkpointing {r.get('gradientCheckpointing')}): "
              f"peak per device GiB {r.get('peakDeviceUsedGiBPerDevice')}")
        for line in r.get("shardLines", []):
            print(f"  {line}")
phases = [r for r in runs if "error" not in r and r.get("hostMsPerStep")]
if phases:
    print("\nlowbit host time per step (ms, Stopwatch around each phase's calls; device time shows only with --phase-sync):")
    for r in phases:
        print(f"  {r['method']} checkpointing={r.get('gradientCheckpointing')}{' cuda-graph' if r.get('cudaGraph') else ''}"
              f"{' phase-sync (device-inclusive)' if r.get('phaseSync') else ''}{' host-proxy (tiny widths)' if r.get('hostProxy') else ''}: {json.dumps(r['hostMsPerStep'])}")
for r in rows:
    if r.get("bench") == "optimizer":
        print(f"optimizer alone, {r.get('implementation', '?')}: {json.dumps(r.get('medianMs', r.get('error')))} ({r.get('tensors')} tensors, {r.get('parameters')} parameters)")
by = {(r["engine"], r.get("method"), bool(r.get("gradientCheckpointing")), bool(r.get("cudaGraph"))): r for r in runs
      if "error" not in r and not r.get("phaseSync") and not r.get("hostProxy") and r.get("loraGroups") is not False and r.get("shards", 1) == 1}
for ck in (False, True):
    for graph in (False, True):
        hf, lora = by.get(("transformers+peft", "lora", ck, False)), by.get(("lowbit", "lora", ck, graph))
        if hf and lora:
            ratio = lora["tokensPerSecond"] / hf["tokensPerSecond"]
            print(f"\n{'without' if not ck else 'with'} checkpointing{', CUDA graph' if graph else ''}: lowbit LoRA / HF+PEFT tokens/s {ratio:.2f}x"
                  f" (goal >= 1.5x of 8,833 = 13,250 tokens/s); peak device used {lora['peakDeviceUsedGiB']} vs {hf['peakDeviceUsedGiB']} GiB"
                  f" (goal <= 30.6 GiB; HF allocated {hf['peakAllocatedGiB']}, reserved {hf['peakReservedGiB']})"
                  + (f"; {lora.get('cudaGraphNote')}" if graph else ""))
lora, qlora = by.get(("lowbit", "lora", True, False)), by.get(("lowbit", "qlora", True, False))
if lora and qlora:
    share = qlora["peakDeviceUsedGiB"] / lora["peakDeviceUsedGiB"]
    print(f"QLoRA 4-bit peak / LoRA bf16 peak (both with checkpointing): {share:.0%} (goal <= 45%)")
print("\nPlanner estimate for the same workload: `lowbit plan` on the coordinator side (not computed by this script).")
PY
