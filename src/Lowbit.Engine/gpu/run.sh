#!/usr/bin/env bash
# Runs the bundled lowbit-engine (or, for the developer verbs, lowbit-engine-dev) against a PyTorch install's libtorch (no .NET needed on the host).
# PYTHON (default python3) must import torch; LOWBIT_TORCH_LIB overrides the torch/lib directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -z "${LOWBIT_TORCH_LIB:-}" ]; then
  LOWBIT_TORCH_LIB="$("${PYTHON:-python3}" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
fi
export LOWBIT_TORCH_LIB
# The native decode library (CUDA graphs + kernels, ../native): built once with the host's nvcc/g++ against python3's
# torch, cached by source hash. LOWBIT_NATIVE=0 skips it (the engine then decodes eagerly and says so).
if [ -z "${LOWBIT_NATIVE_LIB:-}" ] && [ "${LOWBIT_NATIVE:-1}" != 0 ] && [ -f "$here/native/build.sh" ]; then
  native_hash="$(cat "$here"/native/*.cu "$here"/native/*.cpp "$here"/native/build.sh | sha256sum | cut -c1-16)"
  native_cache="${LOWBIT_NATIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lowbit-native}/$native_hash"
  if [ ! -f "$native_cache/liblowbit_native.so" ]; then
    mkdir -p "$native_cache"
    echo "lowbit-engine: building the native decode library into $native_cache (first use)" >&2
    if ! PYTHON="${PYTHON:-python3}" bash "$here/native/build.sh" "$here/native" "$native_cache" > /dev/null 2> "$native_cache/build.log"; then
      echo "lowbit-engine: native library build failed; see $native_cache/build.log" >&2
      tail -n 20 "$native_cache/build.log" >&2 || true
    fi
  fi
  if [ -f "$native_cache/liblowbit_native.so" ]; then
    export LOWBIT_NATIVE_LIB="$native_cache/liblowbit_native.so"
  fi
fi
export LD_LIBRARY_PATH="$LOWBIT_TORCH_LIB:$here${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DOTNET_gcServer=0
# Fine-tuning: libtorch's caching allocator with expandable segments (less fragmentation; the engine also sets it
# itself before the first CUDA allocation unless PYTORCH_CUDA_ALLOC_CONF / PYTORCH_ALLOC_CONF is set).
case "${1:-}" in
  finetune|bench-finetune) export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}" ;;
esac
# Developer verbs (benchmarks, kernel self-check, fixture training) live in lowbit-engine-dev, published next to the
# engine by bundle.sh; everything else is the shipped engine.
case "${1:-}" in
  bench-decode|bench-quant|bench-finetune|bench-kernels|selfcheck-kernels|train-fixture) exec "$here/lowbit-engine-dev" "$@" ;;
  *) exec "$here/lowbit-engine" "$@" ;;
esac
