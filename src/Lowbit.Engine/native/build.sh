#!/usr/bin/env bash
# Builds liblowbit_native.so (CUDA graphs + decode kernels over libtorch) with the host's nvcc and g++ against
# python3's torch (headers in torch/include, libraries in torch/lib). Usage: build.sh SRC_DIR OUT_DIR
# Prints the path of the built library on stdout; the engine finds it through LOWBIT_NATIVE_LIB (run.sh sets it).
set -euo pipefail
src="$1"
out="$2"
python="${PYTHON:-python3}"
torch_dir="$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
abi="$("$python" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
cuda_home="$(cd "$(dirname "$nvcc")/.." && pwd)"
mkdir -p "$out"
# The second-generation kernels (lowbit_kernels_v2.cu) compile in the background while the decode library builds;
# sm_90 only (plus PTX), to keep the first-use build short: elsewhere they fail to launch and kernel selection drops them.
v2_pid=""
if [ -f "$src/lowbit_kernels_v2.cu" ] && [ -f "$src/lowbit_kernels_v2.cpp" ]; then
  # --split-compile spreads the many GEMV instantiations over the cores (nvcc >= 11.8); without it if refused.
  v2_compile() {
    "$nvcc" -O3 -std=c++17 -Xcompiler -fPIC -cudart shared "$@" \
      -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90 \
      -c "$src/lowbit_kernels_v2.cu" -o "$out/lowbit_kernels_v2.o"
  }
  # Without programmatic dependent launch (inline PTX, cudaLaunchKernelEx), then also without the wide and occupancy
  # int4 geometries, if the full compile fails (all written after session 13's last device run, checked with nvcc 11.8
  # only: tools/nvcc-check.sh; the log keeps every attempt).
  { v2_compile --split-compile=0 || v2_compile || v2_compile -DLOWBIT_NO_PDL || v2_compile -DLOWBIT_NO_PDL -DLOWBIT_NO_WIDE; } \
    > "$out/lowbit_kernels_v2.log" 2>&1 &
  v2_pid=$!
fi
"$nvcc" -O3 -std=c++17 -Xcompiler -fPIC -cudart shared \
  -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=compute_90 \
  -c "$src/lowbit_kernels.cu" -o "$out/lowbit_kernels.o" >&2
g++ -O2 -std=c++17 -fPIC -shared -D_GLIBCXX_USE_CXX11_ABI="$abi" \
  -I"$torch_dir/include" -I"$torch_dir/include/torch/csrc/api/include" -I"$cuda_home/include" \
  "$src/lowbit_native.cpp" "$out/lowbit_kernels.o" -o "$out/liblowbit_native.so.tmp" \
  -L"$torch_dir/lib" -ltorch -ltorch_cpu -ltorch_cuda -lc10 -lc10_cuda -L"$cuda_home/lib64" -lcudart \
  -Wl,-rpath,"$torch_dir/lib" >&2
mv "$out/liblowbit_native.so.tmp" "$out/liblowbit_native.so"
# Optional, next to it: the caching allocator's statistics and emptyCache (CudaMemory.cs). A failure here leaves the
# decode library as it is; serve then reports device-used memory only.
if [ -f "$src/lowbit_memory.cpp" ]; then
  g++ -O2 -std=c++17 -fPIC -shared -D_GLIBCXX_USE_CXX11_ABI="$abi" \
    -I"$torch_dir/include" -I"$cuda_home/include" "$src/lowbit_memory.cpp" -o "$out/liblowbit_memory.so" \
    -L"$torch_dir/lib" -lc10 -lc10_cuda -Wl,-rpath,"$torch_dir/lib" >&2 \
    || { echo "build.sh: liblowbit_memory.so did not build (allocator statistics off)" >&2; rm -f "$out/liblowbit_memory.so"; }
fi
# Optional, next to it: liblowbit_kernels_v2.so (the int4 and dense GEMV v2). Built apart so that a compile error there
# leaves the decode library as it is; the engine then measures and uses the first-generation kernels.
if [ -n "$v2_pid" ]; then
  { wait "$v2_pid" \
    && g++ -O2 -std=c++17 -fPIC -shared -D_GLIBCXX_USE_CXX11_ABI="$abi" \
      -I"$torch_dir/include" -I"$torch_dir/include/torch/csrc/api/include" -I"$cuda_home/include" \
      "$src/lowbit_kernels_v2.cpp" "$out/lowbit_kernels_v2.o" -o "$out/liblowbit_kernels_v2.so" \
      -L"$torch_dir/lib" -ltorch -ltorch_cpu -ltorch_cuda -lc10 -lc10_cuda -L"$cuda_home/lib64" -lcudart \
      -Wl,-rpath,"$torch_dir/lib" >&2; } \
    || { cat "$out/lowbit_kernels_v2.log" >&2; echo "build.sh: liblowbit_kernels_v2.so did not build (the v2 GEMVs are off)" >&2; rm -f "$out/liblowbit_kernels_v2.so"; }
fi
echo "$out/liblowbit_native.so"
