# Lowbit — the two commands a user needs:
#   make run    set up and run the main job (the embedded local cluster with the operator)
#   make test   set up and run every test
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
DOTNET ?= dotnet
CONFIGURATION ?= Release
OUT := $(CURDIR)/out
RESULTS := $(CURDIR)/TestResults
export DOTNET_CLI_TELEMETRY_OPTOUT := 1
export DOTNET_NOLOGO := 1
export DOTNET_SKIP_FIRST_TIME_EXPERIENCE := 1
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: all restore tools build test crds run bench engine-gpu-bundle test-k3s image-operator image-engine clean

all: build

## restore: NuGet restore of the whole solution (the engine's TorchSharp fix-up runs in its build).
restore:
	$(DOTNET) restore Operator.sln

## tools: kubectl, helm, prometheus, patchelf (idempotent; see .ci/tools.sh)
tools:
	bash .ci/tools.sh

## build: publish the user-facing programs as executables into ./out
build: restore
	rm -f $(OUT)/lowbit-operator
	$(DOTNET) publish src/Lowbit.Cli/Lowbit.Cli.csproj -c $(CONFIGURATION) -o $(OUT) --no-restore -p:UseAppHost=true
	$(DOTNET) publish src/Lowbit.Engine/Lowbit.Engine.csproj -c $(CONFIGURATION) -o $(OUT) --no-restore -p:UseAppHost=true
	# The operator ships self-contained and trimmed (its publish profile; docs/operator-memory.md), in its own folder so
	# its trimmed framework assemblies never replace files the framework-dependent lowbit and lowbit-engine load.
	$(DOTNET) publish src/Lowbit.Operator/Lowbit.Operator.csproj -c $(CONFIGURATION) -o $(OUT)/operator -p:PublishProfile=trimmed -p:UseAppHost=true
	ln -sfn operator/lowbit-operator $(OUT)/lowbit-operator
	@ls -1 $(OUT)/lowbit $(OUT)/lowbit-operator $(OUT)/lowbit-engine

## test: everything CI runs; ends with one summary line "tests: N passed, N failed, N skipped"
test: tools restore
	$(DOTNET) build Operator.sln -c $(CONFIGURATION) --no-restore
	# The operator as it ships (self-contained, trimmed): the Helm lifecycle tests install the chart with it, so a
	# reflection path the trimmer cut fails here rather than in a cluster.
	$(DOTNET) publish src/Lowbit.Operator/Lowbit.Operator.csproj -c $(CONFIGURATION) -o $(OUT)/operator -p:PublishProfile=trimmed -p:UseAppHost=true
	rm -rf $(RESULTS)
	# -m:1: one test assembly at a time. The end-to-end and process tests start real servers and engines; run side by
	# side on a 2-core CI box they starve each other's bounded waits.
	status=0; LOWBIT_TEST_OPERATOR=$(OUT)/operator/lowbit-operator $(DOTNET) test Operator.sln -c $(CONFIGURATION) --no-build -m:1 --results-directory $(RESULTS) \
	  --logger "trx" --logger "console;verbosity=minimal" || status=$$?; \
	  bash .ci/summarize.sh $(RESULTS); exit $$status

## crds: regenerate crds/*.yaml from the C# types (the only way they change) and copy them into the chart
crds:
	$(DOTNET) run --project src/Lowbit.Cli/Lowbit.Cli.csproj -c $(CONFIGURATION) -- crds --out crds
	rm -f charts/lowbit/crds/*.yaml && cp crds/*.yaml charts/lowbit/crds/

## run: the main job — the embedded local cluster, the operator and examples/local
run: tools build
	$(OUT)/lowbit local up --demo

## bench: benchmarks; reports land in bench-results/
bench: restore
	$(DOTNET) run --project tests/Lowbit.Benchmarks/Lowbit.Benchmarks.csproj -c Release -- all

## engine-gpu-bundle: self-contained linux-x64 engine without libtorch, xz-compressed, for a PyTorch CUDA host
engine-gpu-bundle:
	bash src/Lowbit.Engine/gpu/bundle.sh

## image-operator, image-engine: build the Dockerfile's targets with docker or podman (PUSH=1 pushes); they say so
## and exit 3 where no container engine runs (as in CI, which checks the Dockerfile statically instead)
image-operator:
	bash .ci/image.sh operator

image-engine:
	bash .ci/image.sh engine

## test-k3s: the operator end-to-end suite on a real K3s cluster (needs a Docker engine)
test-k3s: restore
	LOWBIT_K3S=1 $(DOTNET) test tests/Lowbit.Operator.Tests -c $(CONFIGURATION) --filter "Category=K3s"

clean:
	rm -rf $(OUT) $(RESULTS) bench-results
	$(DOTNET) clean Operator.sln
