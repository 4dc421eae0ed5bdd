#!/usr/bin/env bash
# Runs the int4 GEMV v2 kernel (../lowbit_kernels_v2.cu) on the CPU, without a CUDA compiler: the headers here emulate
# the CUDA subset it uses (a block is 256 std::threads with barriers for __syncthreads and the warp shuffles), and
# main.cpp compares its output with a float64 reference for a few shapes (tail rows, several blocks, batch 1 and 2,
# K up to 16384). It checks indexing, packing order and the reduction, not speed or the real compiler's behaviour.
# Usage: src/Lowbit.Engine/native/emulate/run.sh   (needs g++ with C++20)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$here/../lowbit_kernels_v2.cu" "$work/v2.cpp" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
# kernel<<<blocks, threads, 0, stream>>>(args); -> emul_launch(blocks, threads, [&]{ kernel(args); });
s = re.sub(r'(\w+<[^<>]*>)<<<([^,]+), ([^,]+), [^>]*>>>\((.*?)\);',
           lambda m: f'emul_launch({m.group(2)}, {m.group(3)}, [&]{{ {m.group(1)}({m.group(4)}); }});', s, flags=re.S)
open(sys.argv[2], 'w').write(s)
PY
g++ -std=c++20 -O1 -pthread -w -I"$here" "$work/v2.cpp" "$here/main.cpp" -o "$work/emulate"
"$work/emulate"
