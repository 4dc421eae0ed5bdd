# syntax=docker/dockerfile:1
# Stub: the operator and engine images are a later issue. Planned stages:
#   operator: mcr.microsoft.com/dotnet/aspnet, non-root, no libtorch (architecture test enforces it)
#   engine:   CUDA runtime base + TorchSharp-cuda-linux (build property LowbitTorchBackend=cuda)
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY . .
RUN dotnet publish src/Lowbit.Operator/Lowbit.Operator.csproj -c Release -o /out/operator

FROM mcr.microsoft.com/dotnet/aspnet:10.0 AS operator
WORKDIR /app
COPY --from=build /out/operator .
USER 65532:65532
ENTRYPOINT ["/app/lowbit-operator"]
