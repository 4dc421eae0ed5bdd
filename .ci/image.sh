#!/usr/bin/env bash
# `make image-operator` / `make image-engine`: builds one Dockerfile target with docker or podman, and pushes it
# when PUSH=1. Says plainly, and exits 3, when no container engine runs here (CI checks the Dockerfile statically
# instead: tests/Lowbit.Chart.Tests, DockerfileTests).
#   IMAGE_REGISTRY (default ghcr.io/lowbit-dev), IMAGE_TAG (default: the chart's appVersion), PUSH=1 to push.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: .ci/image.sh operator|engine}"
case "$target" in operator|engine) ;; *) echo "image: target must be operator or engine (got '$target')" >&2; exit 2 ;; esac
registry="${IMAGE_REGISTRY:-ghcr.io/lowbit-dev}"
tag="${IMAGE_TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/lowbit/Chart.yaml)}"
if [ "$tag" = latest ] || [ -z "$tag" ]; then
  echo "image: IMAGE_TAG must be a version, not '${tag:-<empty>}'" >&2; exit 2
fi
image="$registry/lowbit-$target:$tag"
engine=""
for candidate in docker podman; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then engine="$candidate"; break; fi
done
if [ -z "$engine" ]; then
  echo "image: no container engine is reachable here (neither 'docker info' nor 'podman info' answers)." >&2
  echo "image: $image was NOT built. Run this target on a machine with Docker or Podman; the Dockerfile is checked statically by 'dotnet test tests/Lowbit.Chart.Tests'." >&2
  exit 3
fi
echo "image: $engine build --target $target -t $image ."
"$engine" build --target "$target" -t "$image" .
if [ "${PUSH:-0}" = 1 ]; then
  if ! "$engine" push "$image"; then
    echo "image: pushing $image failed: the registry $registry is not reachable or refuses the credentials" >&2
    exit 4
  fi
  digest="$("$engine" image inspect --format '{{index .RepoDigests 0}}' "$image" 2>/dev/null || true)"
  echo "image: pushed $image${digest:+ ($digest)}; deploy it by digest (chart value ${target/operator/image}.digest)"
fi
