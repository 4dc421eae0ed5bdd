#!/usr/bin/env bash
# Compiles the native decode kernels (src/Lowbit.Engine/native/*.cu) with this machine's nvcc for sm_90, without a GPU,
# and prints one line per kernel: registers per thread, spill stores and loads, the stack frame (bytes; one without
# spills is a copy of the parameters to local memory, as a loop over a parameter array made in session 17), the
# demangled name. The GPU
# bundle builds them on first use on the device; this catches a compile error, a register blow-up or spills here first.
# nvcc: Debian's nvidia-cuda-toolkit (CUDA 11.8, non-free; .ci/tools.sh installs it) or any CUDA >= 11.8.
# Usage: tools/nvcc-check.sh [FILE.cu ...] [-- NVCC_FLAGS]   (default: both .cu files; exit 1 on a compile error)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
files=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do files+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#files[@]} -gt 0 ] || files=("$here/src/Lowbit.Engine/native/lowbit_kernels.cu" "$here/src/Lowbit.Engine/native/lowbit_kernels_v2.cu")
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
[ -x "$nvcc" ] || { echo "nvcc-check: no nvcc (bash .ci/tools.sh installs Debian's nvidia-cuda-toolkit)" >&2; exit 2; }
# CUDA 11.8 takes g++ up to 11; newer toolkits the default compiler.
ccbin=()
command -v g++-11 >/dev/null && "$nvcc" --version | grep -q "release 11\." && ccbin=(-ccbin g++-11)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
for f in "${files[@]}"; do
  if ! "$nvcc" -O3 -std=c++17 "${ccbin[@]}" -Xcompiler -fPIC -gencode=arch=compute_90,code=sm_90 -Xptxas -v "$@" \
      -c "$f" -o "$work/out.o" > "$work/log" 2>&1; then
    echo "nvcc-check: $(basename "$f") does not compile:" >&2
    grep -v "^ptxas info" "$work/log" | head -40 >&2
    status=1
    continue
  fi
  # ptxas -v: "Compiling entry function 'NAME' for 'sm_90'", then "... N bytes spill stores, M bytes spill loads" and
  # "Used R registers, ..." for it.
  awk -v file="$(basename "$f")" '
    /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); name = substr($0, RSTART + 1, RLENGTH - 2); stores = 0; loads = 0; stack = 0 }
    /bytes stack frame/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "bytes" && $(i + 2) == "stack") stack = $i }
    /bytes spill stores/ { for (i = 1; i <= NF; i++) { if ($(i + 1) == "bytes" && $(i + 2) == "spill" && $(i + 3) == "stores,") stores = $i; if ($(i + 1) == "bytes" && $(i + 2) == "spill" && $(i + 3) == "loads") loads = $i } }
    /Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) if ($i == "Used") regs = $(i + 1); print file "\t" regs "\t" stores "\t" loads "\t" stack "\t" name }
  ' "$work/log" > "$work/table"
  cut -f6 "$work/table" | c++filt > "$work/names"
  paste <(cut -f1-5 "$work/table") "$work/names" | sed 's/(anonymous namespace):://g'
done
exit $status
