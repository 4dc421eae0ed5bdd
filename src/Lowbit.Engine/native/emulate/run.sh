#!/usr/bin/env bash
# Runs the int4 GEMV v2 kernel (../lowbit_kernels_v2.cu) on the CPU, without a CUDA compiler: the headers here emulate
# the CUDA subset it uses (a block is 256 std::threads with barriers for __syncthreads and the warp shuffles), and
# main.cpp compares its output with a float64 reference for a few shapes (tail rows, several blocks, batch 1 and 2,
# K up to 16384). It checks indexing, packing order and the reduction, not speed or the real compiler's behaviour.
# Usage: src/Lowbit.Engine/native/emulate/run.sh   (needs g++ with C++20 and perl; a CPU test runs it)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# kernel<<<blocks, threads, 0, stream>>>(args); -> emul_launch(blocks, threads, [&]{ kernel(args); });
perl -0pe 's/(\w+<[^<>]*>)<<<([^,]+), ([^,]+), [^>]*>>>\((.*?)\);/emul_launch($2, $3, [&]{ $1($4); });/gs' \
  "$here/../lowbit_kernels_v2.cu" > "$work/v2.cpp"
grep -q emul_launch "$work/v2.cpp" || { echo "emulate: no kernel launch found to rewrite" >&2; exit 1; }
g++ -std=c++20 -O1 -pthread -w -I"$here" "$work/v2.cpp" "$here/main.cpp" -o "$work/emulate"
# The first pass without -shared past three chunks per thread (on by default since session 33): its 44 KB limit.
LOWBIT_INT4_SHARED_LONG=0 "$work/emulate"
# The packed-fp16 GEMVs at 2-3 chunks per thread, offered only with LOWBIT_INT4_HALF2=2 (read once per process).
LOWBIT_INT4_HALF2=2 "$work/emulate" half2-wide
# The packed-fp16 GEMVs' RMSNorm prologues with rmsnorm_kernel's roundings (LOWBIT_NORM_DEFER=0; deferred by default).
LOWBIT_NORM_DEFER=0 "$work/emulate" norm-rounded
# -shared past three chunks per thread (K up to 32,768 at one row), offered by default.
"$work/emulate" shared-long
# int4-v2-h2c (-h2s at one row with K split over a cluster's blocks), offered only with LOWBIT_INT4_CLUSTER=1.
LOWBIT_INT4_CLUSTER=1 "$work/emulate" cluster
