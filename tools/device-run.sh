#!/usr/bin/env bash
# The driver for a `device` session (docs/gpu.md, "Plan for the next device session"). It runs on the device machine
# from the repository root, with the GPU bundle carried in .gpu-carry/ (git-excluded):
#   make engine-gpu-bundle && mkdir -p .gpu-carry && cp out/lowbit-engine-gpu-linux-x64.tar.xz .gpu-carry/
#   run: command `bash tools/device-run.sh MODE [ARGS]`, carry [".gpu-carry"]
# One mode per call (a refused or released machine loses nothing else); results go to $OUT, which comes back.
#   check              kernel self-check only (~60 s with the native build)
#   kernels            self-check, bench-kernels, bench.sh --layers 32 (issue 13: bf16/int4 batch 1/32 vs transformers)
#   decode RUNS        self-check, then bench-decode on a random 7B (RUNS like graph:1,int4-graph:1,int4-graph:16)
#   attention [RUNS]   self-check, then bench-decode with SDPA and with the native decode attention, same RUNS; TRACE=1
#                      adds traced runs (LOWBIT_STEP_TRACE=1, TRACE_RUNS default graph:1,graph:32,int4-graph:1): µs per part of the step
#   fusion [RUNS]      self-check, bench-decode with the decode-step fusions and programmatic dependent launch on
#                      (LOWBIT_PDL=1, the default), with PDL off, with the fusions off too (LOWBIT_DECODE_FUSION=0); the int4
#                      kernel selection's timings; KERNELS=1 adds bench-kernels; CONFIGS="1:1 1:0" (fusion:PDL) picks
#   variants [RUNS]    self-check, then bench-decode once per VARIANTS entry (';'-separated, each 'default' or
#                      space-separated NAME=VALUE settings, e.g. VARIANTS="default;LOWBIT_GREEDY_KERNEL=0"; INT4_GROUP=128
#                      there quantizes with group 128 instead of 64, INT4_HEAD=1 lm_head too), same RUNS
#                      (default int4-graph:1); TRACE=1 adds a traced default run (LOWBIT_STEP_TRACE=1)
#   quick [SECONDS]    self-check, then bench-kernels at ROWS (default 1,2), g64: every GEMV per SHAPES shape (7b, 13b,
#                      70b; default 7b), cold
#   calibrate POINTS [SECONDS]   calibrate-lowbit.sh --only POINTS (issue 15; points listed in calibrate_lowbit.py GRID)
#   finetune [ARGS]    bench-finetune.sh --layers 32 --steps 8 --warmup 2 ARGS (issue 10)
#   serve              bench-serve.sh --layers 32
#   ncu [LAUNCHES]     Nsight Compute on the int4 GEMVs v2/wide/occ/shared (one row, g64): occupancy, DRAM throughput, stalls
#   profile [RUNS]     per-kernel device time inside the decode graphs (nsys --cuda-graph-trace=node, if the image has
#                      Nsight Systems; else the tools found are listed): where the ~1 ms of non-GEMV time per token goes
# variants ends with one summary line per setting and run (every repeat's tokens/s, their mean).
# SKIP_SELFCHECK=1 skips the self-check, SELFCHECK_ENV="NAME=VALUE ..." sets variables for it alone; a failed self-check turns the v2 kernels off (LOWBIT_KERNELS_V2=0) for the rest.
# ATTENTION=native runs the decode modes with the native decode attention at every batch (LOWBIT_DECODE_ATTENTION=native;
# the default takes it up to batch 16).
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
repo="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$repo/.gpu-carry/lowbit-engine-gpu-linux-x64.tar.xz"
[ -f "$bundle" ] || bundle="$repo/.gpu-carry/lowbit-engine-gpu.tar.xz"
[ -d /tmp/b/lowbit-engine ] || { mkdir -p /tmp/b && tar -C /tmp/b -xJf "$bundle"; } || { echo "no bundle in .gpu-carry" >&2; exit 1; }
cd /tmp/b/lowbit-engine; export PYTHONUNBUFFERED=1 TMPDIR=/tmp
[ "${ATTENTION:-}" = native ] && export LOWBIT_DECODE_ATTENTION=native
mode="${1:-check}"; shift || true
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader; date +%T

selfcheck() {
  [ "${SKIP_SELFCHECK:-}" = 1 ] && { echo "self-check skipped"; return; }
  # SELFCHECK_ENV: settings for the self-check alone (e.g. LOWBIT_MMA_FUSED_ROWS=8: its opt-in checks run then).
  local settings=(); read -ra settings <<< "${SELFCHECK_ENV:-}"
  env "${settings[@]}" timeout 240 ./run.sh selfcheck-kernels > "$OUT/selfcheck.log" 2>&1; local rc=$?
  echo "self-check rc=$rc, $(grep -c '"pass":true' "$OUT/selfcheck.log") passed"
  grep '"pass":false' "$OUT/selfcheck.log" | cut -c1-250
  grep '"selfcheck-rows"' "$OUT/selfcheck.log" | cut -c1-250
  grep -v '^{\|^|' "$OUT/selfcheck.log" | tail -3 | cut -c1-300
  cp ~/.cache/lowbit-native/*/build.log "$OUT/native-build.log" 2>/dev/null
  # A failed GEMV/dequantize check turns the v2 kernels off; a failed decode attention check only that (SDPA then); a
  # launch the device refused (an "error" in the line) nothing: the kernel selection keeps another kernel for that shape.
  if grep '"pass":false' "$OUT/selfcheck.log" | grep -v '"error"' | grep -qv "decode attention" || { [ $rc -ne 0 ] && ! grep -q '"pass":false' "$OUT/selfcheck.log"; }; then
    export LOWBIT_KERNELS_V2=0; echo "v2 kernels off for the rest of this call"
  elif grep '"pass":false' "$OUT/selfcheck.log" | grep -q "decode attention"; then
    export LOWBIT_DECODE_ATTENTION=sdpa; echo "native decode attention failed its check: SDPA for the rest of this call"
  fi
  date +%T
}

# One line per bench-decode run of a jsonl: attention, weights, mode, batch, tokens/s, greedy tokens matching.
runs() {
  python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r=json.loads(l); print(r.get("attention","-"), r.get("weights"), r.get("mode"), r.get("batch"), r.get("tokensPerSecond"), "matching", r.get("tokensMatchingReference"), "of", r.get("referenceTokens"))' "$1"
}

case "$mode" in
  check) selfcheck ;;
  kernels)
    selfcheck
    timeout 180 ./run.sh bench-kernels --device cuda > "$OUT/kernels.log" 2>&1; tail -12 "$OUT/kernels.log" | cut -c1-250
    timeout 420 ./bench.sh --layers 32 > "$OUT/bench.log" 2>&1; grep -v "kernel selection" "$OUT/bench.log" | grep -i "tokens/s\|error" | cut -c1-200 | tail -30
    cp bench-results/* "$OUT/" 2>/dev/null ;;
  decode)
    selfcheck
    m=/tmp/lowbit-calibrate-work/random-7b
    [ -f "$m/config.json" ] || timeout 150 python3 ./bench_hf.py make --out "$m" --layers 32 > /dev/null 2>&1
    timeout 300 ./run.sh bench-decode --model "$m" --device cuda --dtype bfloat16 --repeats 2 --new-tokens 128 --int4-group 64 \
      --runs "${1:-eager:1,graph:1,graph:32,int4-graph:1,int4-graph:8,int4-graph:16}" > "$OUT/decode.jsonl" 2> "$OUT/decode.err"
    echo "bench-decode rc=$?"; grep -v "kernel selection" "$OUT/decode.err" | tail -14 | cut -c1-300 ;;
  attention)
    selfcheck
    m=/tmp/lowbit-calibrate-work/random-7b
    [ -f "$m/config.json" ] || timeout 150 python3 ./bench_hf.py make --out "$m" --layers 32 > /dev/null 2>&1
    for a in sdpa native; do
      LOWBIT_DECODE_ATTENTION=$a timeout 250 ./run.sh bench-decode --model "$m" --device cuda --dtype bfloat16 --repeats 2 \
        --new-tokens 128 --int4-group 64 --runs "${1:-eager:1,graph:1,graph:32,int4-graph:1}" > "$OUT/decode-$a.jsonl" 2> "$OUT/decode-$a.err"
      echo "attention $a: rc=$?"; grep "differs\|rror" "$OUT/decode-$a.err" | cut -c1-200 | head -5
      [ $a = sdpa ] && grep "kernel selection: int4" "$OUT/decode-$a.err" | cut -c1-250
      runs "$OUT/decode-$a.jsonl"
    done
    # TRACE=1: bf16 batch 1 and 32 and int4 batch 1 again with the step trace (LOWBIT_STEP_TRACE=1): µs per part of the step.
    if [ "${TRACE:-0}" = 1 ]; then
      for a in sdpa native; do
        LOWBIT_STEP_TRACE=1 LOWBIT_DECODE_ATTENTION=$a timeout 200 ./run.sh bench-decode --model "$m" --device cuda --dtype bfloat16 --repeats 2 \
          --new-tokens 128 --int4-group 64 --runs "${TRACE_RUNS:-graph:1,graph:32,int4-graph:1}" > "$OUT/trace-$a.jsonl" 2> "$OUT/trace-$a.err"
        echo "trace $a: rc=$?"; grep "step trace\|rror" "$OUT/trace-$a.err" | cut -c1-600 | head -6
      done
    fi ;;
  variants)
    selfcheck
    m=/tmp/lowbit-calibrate-work/random-7b
    [ -f "$m/config.json" ] || timeout 150 python3 ./bench_hf.py make --out "$m" --layers 32 > /dev/null 2>&1
    IFS=';' read -ra variants <<< "${VARIANTS:-default}"
    [ "${TRACE:-0}" = 1 ] && variants+=("LOWBIT_STEP_TRACE=1")
    # Every variant's lines go to one variants.jsonl / variants.err (a run brings back only so many files: run 37 lost
    # two variants' files), each variant's stderr after a "== variant N (settings)" line; the jsonl lines carry "variant".
    i=0
    for v in "${variants[@]}"; do
      i=$((i + 1)); settings=(); [ "$v" = default ] || read -ra settings <<< "$v"
      # INT4_GROUP=N among the settings: bench-decode's --int4-group (default 64); INT4_HEAD=1: --int4-head true (lm_head
      # quantized too, its GEMV running the final RMSNorm).
      group=64; head=false
      for s in "${settings[@]}"; do case "$s" in INT4_GROUP=*) group="${s#INT4_GROUP=}" ;; INT4_HEAD=1) head=true ;; esac; done
      env "${settings[@]}" timeout 200 ./run.sh bench-decode --model "$m" --device cuda --dtype bfloat16 --repeats 2 --new-tokens 128 \
        --int4-group "$group" --int4-head "$head" --runs "${1:-int4-graph:1}" > /tmp/variant.jsonl 2> /tmp/variant.err
      echo "variant $i ($v): rc=$?"; grep "differs\|rror\|step trace" /tmp/variant.err | cut -c1-600 | head -8
      runs /tmp/variant.jsonl
      { echo "== variant $i ($v)"; cat /tmp/variant.err; } >> "$OUT/variants.err"
      python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r=json.loads(l); r["variant"]=sys.argv[2]; print(json.dumps(r))' /tmp/variant.jsonl "$v" >> "$OUT/variants.jsonl"
    done
    # Identical runs differ by about ±2 % (run 60, H100): one line per setting and run with every repeat's tokens/s.
    python3 -c 'import json,sys,collections
seen=collections.defaultdict(list)
for l in open(sys.argv[1]):
    r=json.loads(l)
    if r.get("tokensPerSecond"): seen[(r["variant"],r.get("weights"),r.get("mode"),r.get("batch"))].append(r["tokensPerSecond"])
for (v,weights,mode,batch),t in seen.items():
    print(f"summary: {v} | {weights} {mode} {batch} | " + " ".join(f"{x:.1f}" for x in t) + f" | mean {sum(t)/len(t):.1f}")' "$OUT/variants.jsonl" 2>/dev/null ;;
  fusion)
    # The decode-step fusions (issue 13): the same runs with everything on, without programmatic dependent launch, and
    # without the fusions, with the int4 kernel selection's timings per shape (int4-v2 against -wide, -occ, -shared); int4
    # graph tokens are compared with int4-native (the same kernels, eager). KERNELS=1 adds bench-kernels. Meanwhile
    # tools/nvcc-check.sh runs on the CPUs with the device's nvcc (its registers against this machine's nvcc 11.8).
    selfcheck
    ( bash "$repo/tools/nvcc-check.sh" "$repo/src/Lowbit.Engine/native/lowbit_kernels_v2.cu" > "$OUT/nvcc-check.txt" 2>&1 ) &
    m=/tmp/lowbit-calibrate-work/random-7b
    [ -f "$m/config.json" ] || timeout 150 python3 ./bench_hf.py make --out "$m" --layers 32 > /dev/null 2>&1
    for c in ${CONFIGS:-1:1 1:0 0:0}; do
      f=${c%:*}; p=${c#*:}
      LOWBIT_DECODE_FUSION=$f LOWBIT_PDL=$p timeout 200 ./run.sh bench-decode --model "$m" --device cuda --dtype bfloat16 --repeats 2 \
        --new-tokens 128 --int4-group 64 --runs "${1:-eager:1,graph:1,int4-native:1,int4-graph:1,int4-graph:2}" > "$OUT/decode-fusion$f-pdl$p.jsonl" 2> "$OUT/decode-fusion$f-pdl$p.err"
      echo "fusion $f, programmatic dependent launch $p: rc=$?"; grep "differs\|rror" "$OUT/decode-fusion$f-pdl$p.err" | cut -c1-200 | head -5
      [ $c = 1:1 ] && grep "kernel selection: int4" "$OUT/decode-fusion$f-pdl$p.err" | cut -c1-250
      runs "$OUT/decode-fusion$f-pdl$p.jsonl"
    done
    [ "${KERNELS:-0}" = 1 ] && { timeout 120 ./run.sh bench-kernels --device cuda > "$OUT/kernels.log" 2>&1; echo "bench-kernels rc=$?"; }
    wait; echo "nvcc-check (device nvcc), bf16 int4 GEMVs: registers, spill stores, stack frame"
    grep "int4_gemv.*__nv_bfloat16, [0-9], [12], [13], 0, false\|int4_gemv_shared.*__nv_bfloat16, 1, [13], 0, false" "$OUT/nvcc-check.txt" | cut -f2,3,5,6 | cut -c1-80 ;;
  quick)
    # The shortest useful run (a few minutes of device time left): self-check, then bench-kernels at 1 (and 2) rows,
    # g64: every GEMV per 7B shape, cold, one line each (µs, GB/s, relative error), then each with the fused variant the
    # decode step runs ("fused" lines: the prologue and epilogue's cost is the difference).
    selfcheck
    timeout "${1:-150}" ./run.sh bench-kernels --device cuda --shapes "${SHAPES:-7b}" --rows "${ROWS:-1,2}" --groups 64 > "$OUT/kernels.log" 2>&1
    echo "bench-kernels rc=$?"
    python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): continue
    r=json.loads(l)
    if r.get("event") not in ("bench-kernel", "bench-kernel-fused"): continue
    tag = "fused " + r["prologue"] + ("+residual" if r["residual"] else "") if r["event"] == "bench-kernel-fused" else "plain"
    print(r.get("shape"), r.get("rows"), r.get("group"), r.get("kernel"), tag, r.get("microseconds"), "us", r.get("gbPerSecond"), "GB/s err", r.get("relativeError", r.get("error")))' "$OUT/kernels.log" ;;
  calibrate)
    t="${2:-420}"
    timeout "$t" ./calibrate-lowbit.sh --out "$OUT" --budget "$(( t - 30 ))" --only "${1:?points}" > "$OUT/calibrate.log" 2>&1
    grep -v "calibrate-progress\|Writing model" "$OUT/calibrate.log" | tail -16 | cut -c1-300
    # The rows' jsonl to $OUT itself (a sub-folder's file did not come back in session 12's first run).
    find "$OUT" -mindepth 2 -name '*.jsonl' -exec mv {} "$OUT/" \; ; rm -rf "$OUT/planner-measurements"
    for f in /tmp/lowbit-calibrate-serve-*.log; do
      [ -f "$f" ] || continue
      echo "== $f"; grep -i "memory\|decode graphs\|warm-up\|rror" "$f" | cut -c1-300 | head -8; cp "$f" "$OUT/"
    done ;;
  finetune)
    timeout 570 ./bench-finetune.sh --layers 32 --steps 8 --warmup 2 "$@" > "$OUT/finetune.log" 2>&1; tail -28 "$OUT/finetune.log"
    cp /tmp/lowbit-bench/*.log /tmp/lowbit-bench/finetune.jsonl "$OUT/" 2>/dev/null ;;
  serve)
    selfcheck
    timeout 240 ./bench-serve.sh --layers 32 > "$OUT/serve.log" 2>&1; tail -20 "$OUT/serve.log" ;;
  profile)
    m=/tmp/lowbit-calibrate-work/random-7b
    [ -f "$m/config.json" ] || timeout 150 python3 ./bench_hf.py make --out "$m" --layers 32 > /dev/null 2>&1
    nsys="$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1)"
    if [ -z "$nsys" ]; then
      echo "no nsys; profilers found:"; ls /usr/local/cuda*/bin 2>/dev/null | grep -i "nsys\|ncu\|nvprof\|cupti"; python3 -c "import torch.profiler; print('torch.profiler ok')"
    else
      timeout 400 "$nsys" profile --cuda-graph-trace=node --stats=true -o "$OUT/decode" --force-overwrite true \
        ./run.sh bench-decode --model "$m" --device cuda --dtype bfloat16 --repeats 1 --new-tokens 64 --int4-group 64 \
        --runs "${1:-graph:1,int4-graph:1}" > "$OUT/profile.log" 2>&1
      echo "nsys rc=$?"; grep -A40 "cuda_gpu_kern_sum" "$OUT/profile.log" | cut -c1-220 | head -45
    fi ;;
  ncu)
    # Nsight Compute on the int4 GEMVs (v2 and wide) at one row, g64, the four 7B shapes: registers, occupancy, DRAM
    # throughput and warp stall reasons, to see what holds them at ~1.8 TB/s (docs/gpu.md, session 13). Needs GPU
    # performance counters (ERR_NVGPUCTRPERM in the log if the container does not allow them).
    n="$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)"
    [ -n "$n" ] || { echo "no ncu"; exit 0; }
    # NCU_KERNELS (a regex of kernel names) and ROWS pick others: e.g. NCU_KERNELS=int4_gemv_mma_kernel ROWS=16.
    # Demangled names spell template arguments with their types: 'int4_gemv_mma_kernel<__nv_bfloat16, \(int\)16'.
    # NCU_ARGS adds options, e.g. '--clock-control none' (the profiler otherwise holds the SM at base clock, 1.45 GHz on
    # the H100) or '--metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' (stall reasons).
    # shellcheck disable=SC2086
    timeout "${NCU_SECONDS:-500}" "$n" --target-processes all --kernel-name-base demangled -k "regex:${NCU_KERNELS:-int4_gemv_(v2|shared)_kernel}" --launch-count "${1:-16}" \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis ${NCU_ARGS:-} \
      ./run.sh bench-kernels --device cuda --rows "${ROWS:-1}" --groups 64 --iterations 1 > "$OUT/ncu.log" 2>&1
    echo "ncu rc=$?"; grep -i "ERR_\|_kernel<\|DRAM Throughput\|Memory Throughput\|Registers Per\|Achieved Occupancy\|Theoretical Occupancy\|Block Limit\|Duration\|Stall\|stalled" "$OUT/ncu.log" | cut -c1-200 | head -"${NCU_LINES:-120}" ;;
  *) echo "device-run.sh: unknown mode $mode (check, kernels, decode, attention, variants, fusion, quick, calibrate, finetune, serve, profile, ncu)" >&2; exit 42 ;;
esac
date +%T
