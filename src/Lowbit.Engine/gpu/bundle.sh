#!/usr/bin/env bash
# `make engine-gpu-bundle`: a self-contained linux-x64 lowbit-engine without libtorch (LowbitTorchBackend=none),
# xz-compressed, for a host that has a PyTorch CUDA install but no .NET. Inside the tarball:
#   lowbit-engine/run.sh     launcher: finds python3's torch/lib, sets LD_LIBRARY_PATH and LOWBIT_TORCH_LIB
#   lowbit-engine/...        the published engine (TorchSharp's libLibTorchSharp.so, patched as on the build host)
#                            and lowbit-engine-dev (the bench-*/selfcheck-kernels/train-fixture verbs)
#   lowbit-engine/bench.sh, bench_hf.py   the decode benchmark (ours vs Hugging Face transformers), and the other
#                            gpu/ scripts (bench-quant.sh: quantizer timings)
# Output: out/lowbit-engine-gpu-linux-x64.tar.xz (must stay under 40 MB).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="$repo/out"
stage="$out/engine-gpu/lowbit-engine"
rm -rf "$out/engine-gpu"
mkdir -p "$stage"
# The engine and, next to it, the developer verbs (bench-decode, bench-quant, bench-finetune, selfcheck-kernels,
# train-fixture: tests/Lowbit.Engine.DevTools, not shipped in the engine image); run.sh dispatches between them.
for project in src/Lowbit.Engine/Lowbit.Engine.csproj tests/Lowbit.Engine.DevTools/Lowbit.Engine.DevTools.csproj; do
  dotnet publish "$repo/$project" -c Release -r linux-x64 --self-contained \
    -p:LowbitTorchBackend=none -p:UseAppHost=true -p:GenerateDocumentationFile=false -p:DebugType=none -o "$stage" >&2
done
# Natives that the engine never loads (TorchSharp's image helpers, other platforms).
find "$stage" -name 'libSkiaSharp*' -delete
rm -rf "$stage/runtimes"
# The launcher and every benchmark script of this folder (bench.sh, bench_hf.py, bench-quant.sh, ...).
for script in "$here"/*.sh "$here"/*.py; do
  [ "$(basename "$script")" = bundle.sh ] || install -m 0755 "$script" "$stage/$(basename "$script")"
done
# The native decode library's sources: run.sh builds them on first use (nvcc + g++ against python3's torch).
mkdir -p "$stage/native"
install -m 0644 "$here/../native/lowbit_kernels.cu" "$here/../native/lowbit_native.cpp" "$here/../native/lowbit_memory.cpp" \
  "$here/../native/lowbit_kernels_v2.cu" "$here/../native/lowbit_kernels_v2.cpp" "$stage/native/"
install -m 0755 "$here/../native/build.sh" "$stage/native/build.sh"
tarball="$out/lowbit-engine-gpu-linux-x64.tar.xz"
tar -C "$out/engine-gpu" -cf - lowbit-engine | xz -T2 -6 > "$tarball"
bytes=$(stat -c %s "$tarball")
echo "engine-gpu-bundle: $tarball ($((bytes / 1024 / 1024)) MB)"
if [ "$bytes" -ge $((40 * 1024 * 1024)) ]; then
  echo "engine-gpu-bundle: over the 40 MB budget" >&2
  exit 1
fi
