#!/usr/bin/env bash
# Runs the bundled lowbit-engine against a PyTorch install's libtorch (no .NET needed on the host).
# PYTHON (default python3) must import torch; LOWBIT_TORCH_LIB overrides the torch/lib directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -z "${LOWBIT_TORCH_LIB:-}" ]; then
  LOWBIT_TORCH_LIB="$("${PYTHON:-python3}" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
fi
export LOWBIT_TORCH_LIB
export LD_LIBRARY_PATH="$LOWBIT_TORCH_LIB:$here${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DOTNET_gcServer=0
exec "$here/lowbit-engine" "$@"
