#!/usr/bin/env bash
# Whole-model quantization timing on a GPU host (PyTorch CUDA install, no .NET): a 7B-shaped random bf16 Llama
# (Llama-2-7B shapes, 32 layers) quantized by RTN, HQQ and GPTQ (128 x 2048 random calibration tokens), 4-bit, g64.
# Usage: bench-quant.sh [ENGINE_DIR] [extra bench-quant args, e.g. --layers 4 --method hqq]
# ENGINE_DIR is the unpacked bundle (lowbit-engine/ with run.sh); default: this script's folder.
# Output: one JSON line per method ({"event":"bench-quant","method":...,"seconds":...}) on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
engine="${1:-$here}"
[ $# -gt 0 ] && shift
for method in rtn hqq gptq; do
  "$engine/run.sh" bench-quant --shape 7b --device cuda --bits 4 --group-size 64 \
    --calibration-samples 128 --calibration-length 2048 --method "$method" "$@"
done
