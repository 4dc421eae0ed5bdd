# syntax=docker/dockerfile:1.7
# Two images (docs/install.md, "Images"):
#   docker build --target operator -t ghcr.io/lowbit-dev/lowbit-operator:0.1.0 .   (make image-operator)
#   docker build --target engine   -t ghcr.io/lowbit-dev/lowbit-engine:0.1.0 .     (make image-engine)
# Base images are pinned to version tags here; pin them by digest in your registry mirror (ARGs below) and deploy
# the built images by digest (chart values image.digest and engine.digest). tests/Lowbit.Chart.Tests checks this
# file statically: every COPY source exists, every stage's final USER is non-root, no `latest` and no untagged base.
ARG DOTNET_SDK_IMAGE=mcr.microsoft.com/dotnet/sdk:10.0-noble
ARG DOTNET_RUNTIME_DEPS_IMAGE=mcr.microsoft.com/dotnet/runtime-deps:10.0-noble-chiseled
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---- build: restore once per project file set, then publish the operator and the engine -------------------
FROM ${DOTNET_SDK_IMAGE} AS build
WORKDIR /src
COPY global.json Directory.Build.props Directory.Packages.props ./
COPY src/ src/
# The operator: self-contained and trimmed (src/Lowbit.Operator/Properties/PublishProfiles/trimmed.pubxml, as make build).
RUN dotnet publish src/Lowbit.Operator/Lowbit.Operator.csproj -c Release -p:PublishProfile=trimmed \
      -p:UseAppHost=true -p:DebugType=none -o /out/operator
# The engine without bundled libtorch (LowbitTorchBackend=none): the engine image takes libtorch from the PyTorch
# CUDA wheel, exactly as src/Lowbit.Engine/gpu/run.sh does on a GPU host.
RUN dotnet publish src/Lowbit.Engine/Lowbit.Engine.csproj -c Release -r linux-x64 --self-contained \
      -p:LowbitTorchBackend=none -p:UseAppHost=true -p:DebugType=none -o /out/engine \
 && find /out/engine -name 'libSkiaSharp*' -delete && rm -rf /out/engine/runtimes

# ---- operator: self-contained, on the runtime's native dependencies only (no libtorch; tests/Lowbit.Architecture.Tests
# keeps TorchSharp out of it) ----
FROM ${DOTNET_RUNTIME_DEPS_IMAGE} AS operator
WORKDIR /app
COPY --from=build /out/operator/ /app/
# The chart sets the same (see charts/lowbit/templates/deployment.yaml): no W^X double mapping of JIT code.
ENV DOTNET_EnableWriteXorExecute=0
USER 65532:65532
EXPOSE 8081 8443
ENTRYPOINT ["/app/lowbit-operator"]

# ---- engine-native: the native CUDA-graph library (liblowbit_native.so), compiled at image build ----------------
# src/Lowbit.Engine/native/build.sh compiles the kernels with nvcc and links them against the PyTorch wheel's libtorch
# (the same wheel the engine stage installs). A CMakeLists.txt or Makefile there would be built instead.
FROM ${CUDA_DEVEL_IMAGE} AS engine-native
ARG TORCH_VERSION=2.10.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN apt-get update && apt-get install -y --no-install-recommends cmake make g++ python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY src/Lowbit.Engine/ /src/engine/
RUN mkdir -p /out/native \
 && if [ -f /src/engine/native/build.sh ]; then \
      PYTHON=/opt/torch/bin/python bash /src/engine/native/build.sh /src/engine/native /out/native; \
    elif [ -f /src/engine/native/CMakeLists.txt ]; then \
      cmake -S /src/engine/native -B /tmp/native-build -DCMAKE_BUILD_TYPE=Release \
      && cmake --build /tmp/native-build -j"$(nproc)" \
      && find /tmp/native-build -name '*.so' -exec cp {} /out/native/ \; ; \
    else \
      echo "engine-native: no src/Lowbit.Engine/native build files; no CUDA-graph library in this image"; \
    fi \
 && rm -f /out/native/*.o

# ---- engine: CUDA runtime, libtorch from the PyTorch wheel, TorchSharp's native library, the engine ----------
FROM ${CUDA_RUNTIME_IMAGE} AS engine
ARG TORCH_VERSION=2.10.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
 && /opt/torch/bin/python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
ENV LOWBIT_TORCH_LIB=/opt/torch/lib/python3.12/site-packages/torch/lib
ENV LD_LIBRARY_PATH=/opt/torch/lib/python3.12/site-packages/torch/lib:/opt/lowbit-engine:/opt/lowbit-engine/native
ENV LOWBIT_NATIVE_LIB=/opt/lowbit-engine/native/liblowbit_native.so
WORKDIR /opt/lowbit-engine
COPY --from=build /out/engine/ /opt/lowbit-engine/
COPY --from=engine-native /out/native/ /opt/lowbit-engine/native/
USER 65532:65532
ENTRYPOINT ["/opt/lowbit-engine/lowbit-engine"]
