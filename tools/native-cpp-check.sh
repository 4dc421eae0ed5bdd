#!/usr/bin/env bash
# Type-checks the v2 kernels' C ABI over libtorch (src/Lowbit.Engine/native/lowbit_kernels_v2.cpp) with g++ -fsyntax-only
# against declaration-only stand-ins for the libtorch headers it includes (tools/torch-stubs) and the CUDA runtime
# headers (.ci/tools.sh installs Debian's CUDA 11.8). PyTorch's headers exist only on the device, where the GPU bundle
# compiles the file for real on first use; a mistake found there costs a device run. Exit 0 when it type-checks.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cuda_include="$(dirname "$(command -v nvcc)")/../include"
[ -f "$cuda_include/cuda_runtime_api.h" ] || cuda_include=/usr/include
g++ -std=c++17 -fsyntax-only -Wall -Werror=shadow -I"$repo/tools/torch-stubs" -I"$cuda_include" "$repo/src/Lowbit.Engine/native/lowbit_kernels_v2.cpp"
echo "lowbit_kernels_v2.cpp: type-checks against the libtorch stand-ins"
