using System.Globalization;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Planner;

namespace Lowbit.Operator.Builders;

/// <summary>What an endpoint serves, resolved from its references (pure input to the builder).</summary>
public sealed record ServedModel
{
    /// <summary>The referenced QuantizedModel, when the endpoint names one.</summary>
    public QuantizedModel? QuantizedModel { get; init; }

    /// <summary>Adapters (served name, FineTuneJob), in spec order.</summary>
    public IReadOnlyList<(string Name, FineTuneJob Job)> Adapters { get; init; } = [];
}

/// <summary>
/// The Deployment serving an InferenceEndpoint: <c>lowbit-engine serve</c>, vLLM's OpenAI server (tensor-parallel
/// size = shards, quantization flag, context, memory fraction) or llama.cpp's server (GGUF, context, parallel slots).
/// </summary>
public static class InferenceDeploymentBuilder
{
    public const string Role = Labels.Components.Inference;
    public const int Port = ServeRequest.DefaultPort;
    public const string PortName = "http";
    public const string HealthPath = "/health";

    /// <summary><c>lowbit-engine serve</c> answers 200 here only once the weights are loaded (it listens before).</summary>
    public const string ReadyPath = "/ready";

    /// <summary>Why the chosen runtime cannot serve what the endpoint references (naming the field), or null.</summary>
    public static SpecError? Check(InferenceEndpoint endpoint, ServedModel served)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(served);
        var fromSource = endpoint.Spec.Model.Source is not null;
        var quantized = served.QuantizedModel;
        switch (endpoint.Spec.Runtime)
        {
            case ServingRuntime.LlamaCpp when quantized is null || fromSource:
                return new SpecError("spec.model", "llamacpp serves a GGUF export: reference a QuantizedModel whose spec.formats include a gguf format");
            case ServingRuntime.LlamaCpp when Gguf(quantized) is null:
                return new SpecError("spec.model.quantizedModelRef", $"QuantizedModel {quantized.Metadata.Name} exports no gguf format; llamacpp needs one");
            case ServingRuntime.LlamaCpp:
                return null;
            case var _ when !fromSource && quantized is null:
                return new SpecError("spec.model.quantizedModelRef", "the referenced QuantizedModel is not available");
            case ServingRuntime.Lowbit when !fromSource && !quantized!.Spec.Formats.Contains(ExportFormat.Lowbit):
                return new SpecError("spec.model.quantizedModelRef", $"QuantizedModel {quantized.Metadata.Name} exports no lowbit format, which runtime lowbit serves (add lowbit to its spec.formats)");
            // vLLM loads the GPTQ-compatible export (4 or 8 bits); the lowbit layout is not a vLLM format.
            case ServingRuntime.Vllm when !fromSource && !quantized!.Spec.Formats.Contains(ExportFormat.Gptq):
                return new SpecError("spec.runtime", $"vllm serves GPTQ-format weights; QuantizedModel {quantized.Metadata.Name} does not export gptq (add gptq to its spec.formats or use runtime lowbit)");
            default:
                return null;
        }
    }

    /// <summary>The Deployment for an endpoint <see cref="Check"/> accepted.</summary>
    public static V1Deployment Build(InferenceEndpoint endpoint, ServedModel served, WorkloadPlacement placement, WorkloadOptions options)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(served);
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(options);
        if (Check(endpoint, served) is { } error)
        {
            throw new ArgumentException($"check the spec before building: {error}", nameof(endpoint));
        }

        var volumes = new VolumeSet();
        var (image, args) = endpoint.Spec.Runtime switch
        {
            ServingRuntime.Vllm => (options.VllmImage, VllmArgs(endpoint, served, placement, volumes)),
            ServingRuntime.LlamaCpp => (options.LlamaCppImage, LlamaCppArgs(endpoint, served, placement, volumes)),
            _ => (options.EngineImage, LowbitArgs(endpoint, served, placement, volumes)),
        };
        var pod = PodTemplates.PodSpec(placement, volumes, options, "Always");
        var container = PodTemplates.Container(endpoint.Spec.Image ?? image, args, placement, volumes, endpoint.Spec.Resources, options);
        container.Ports = [new V1ContainerPort { Name = PortName, ContainerPort = Port, Protocol = "TCP" }];
        container.StartupProbe = Probe(options.StartupFailureThreshold);
        container.ReadinessProbe = Probe(3, endpoint.Spec.Runtime is ServingRuntime.Vllm or ServingRuntime.LlamaCpp ? HealthPath : ReadyPath);
        container.LivenessProbe = Probe(6);
        pod.Containers.Add(container);

        var meta = ChildMeta.For(endpoint, Role, Role, placement);
        var deployment = new V1Deployment
        {
            ApiVersion = "apps/v1",
            Kind = "Deployment",
            Metadata = meta,
            Spec = new V1DeploymentSpec
            {
                Replicas = endpoint.Spec.Replicas,
                Selector = new V1LabelSelector { MatchLabels = ChildMeta.Selector(endpoint, Role) },
                ProgressDeadlineSeconds = 600,
                // Keep the old replicas serving until the new ones are ready (GPU capacity permitting).
                Strategy = new V1DeploymentStrategy
                {
                    Type = "RollingUpdate",
                    RollingUpdate = new V1RollingUpdateDeployment { MaxSurge = "25%", MaxUnavailable = 0 },
                },
                Template = new V1PodTemplateSpec
                {
                    Metadata = new V1ObjectMeta
                    {
                        Labels = new Dictionary<string, string>(meta.Labels, StringComparer.Ordinal),
                        Annotations = ChildMeta.PodAnnotations(meta),
                    },
                    Spec = pod,
                },
            },
        };
        return ChildMeta.WithSpecHash(DeploymentRollout.Stamp(deployment));
    }

    /// <summary>The in-cluster DNS name clients use (the Service's).</summary>
    public static string Url(InferenceEndpoint endpoint, WorkloadOptions options)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(options);
        return $"http://{ChildMeta.Name(endpoint, Role)}.{endpoint.Metadata.NamespaceProperty}.svc.{options.ClusterDomain}/v1";
    }

    /// <summary>The first GGUF format a QuantizedModel exports, or null.</summary>
    private static ExportFormat? Gguf(QuantizedModel model) =>
        model.Spec.Formats.Any(IsGguf) ? model.Spec.Formats.First(IsGguf) : null;

    private static bool IsGguf(ExportFormat format) => format is ExportFormat.GgufQ80 or ExportFormat.GgufQ40 or ExportFormat.GgufQ4K;

    internal static V1Probe Probe(int failureThreshold, string path = HealthPath) => new()
    {
        HttpGet = new V1HTTPGetAction { Path = path, Port = PortName },
        PeriodSeconds = 10,
        TimeoutSeconds = 5,
        FailureThreshold = failureThreshold,
    };

    /// <summary>The model a runtime loads: the source, or the QuantizedModel's export in the format that runtime reads.</summary>
    private static (string Model, string? Revision) Model(InferenceEndpoint endpoint, ServedModel served, VolumeSet volumes, ExportFormat format) =>
        endpoint.Spec.Model.Source is { } source
            ? volumes.Model(source)
            : served.QuantizedModel is { } model
                ? (volumes.Artifact(model, format), null)
                : throw new ArgumentException("spec.model.quantizedModelRef: the referenced QuantizedModel is not available (Check first)", nameof(served));

    private static List<string> LowbitArgs(InferenceEndpoint endpoint, ServedModel served, WorkloadPlacement placement, VolumeSet volumes)
    {
        var (model, revision) = Model(endpoint, served, volumes, ExportFormat.Lowbit);
        var request = new ServeRequest
        {
            Model = model,
            Revision = revision,
            // name=path: a request selects the adapter by its name (the model id), as with vLLM's --lora-modules.
            Adapters = served.Adapters.Select(a => $"{a.Name}={volumes.Adapter(a.Job)}").ToList(),
            Port = Port,
            MaxContext = endpoint.Spec.MaxContextLength,
            MaxConcurrency = endpoint.Spec.MaxConcurrency,
            // The engine's own default for the device, written out so the pod spec shows the prefill budget it runs.
            MaxNumBatchedTokens = placement.OnGpu ? ServeRequest.CudaMaxNumBatchedTokens : ServeRequest.CpuMaxNumBatchedTokens,
            ServedName = endpoint.Metadata.Name,
            Device = placement.OnGpu ? ComputeDevice.Cuda : ComputeDevice.Cpu,
            // The pod's GPUs as a pipeline split of the layers (the planner sized its heaviest stage).
            Shards = placement.OnGpu ? Math.Max(placement.Shards, 1) : 1,
        };
        return [.. request.ToArgs()];
    }

    internal static List<string> VllmArgs(InferenceEndpoint endpoint, ServedModel served, WorkloadPlacement placement, VolumeSet volumes)
    {
        var (model, revision) = Model(endpoint, served, volumes, ExportFormat.Gptq);
        var args = new List<string>
        {
            "--model", model,
            "--served-model-name", endpoint.Metadata.Name,
            "--host", "0.0.0.0",
            "--port", Port.ToString(CultureInfo.InvariantCulture),
            "--tensor-parallel-size", placement.TensorParallel.ToString(CultureInfo.InvariantCulture),
            "--max-model-len", endpoint.Spec.MaxContextLength.ToString(CultureInfo.InvariantCulture),
            "--max-num-seqs", endpoint.Spec.MaxConcurrency.ToString(CultureInfo.InvariantCulture),
            "--gpu-memory-utilization", MemoryEstimator.VllmGpuMemoryUtilization.ToString("0.00", CultureInfo.InvariantCulture),
        };
        if (revision is not null)
        {
            args.AddRange(["--revision", revision]);
        }

        if (served.QuantizedModel is not null && endpoint.Spec.Model.Source is null)
        {
            args.AddRange(["--quantization", "gptq"]);
        }

        if (served.Adapters.Count > 0)
        {
            args.AddRange(["--enable-lora", "--lora-modules"]);
            args.AddRange(served.Adapters.Select(a => $"{a.Name}={volumes.Adapter(a.Job)}"));
        }

        return args;
    }

    private static List<string> LlamaCppArgs(InferenceEndpoint endpoint, ServedModel served, WorkloadPlacement placement, VolumeSet volumes)
    {
        var quantized = served.QuantizedModel!;
        var file = ExportFormats.GgufFile(volumes.Artifacts(quantized), EngineJobs.Format(Gguf(quantized)!.Value));
        var args = new List<string>
        {
            "-m", file,
            // llama-server divides -c among its --parallel slots: each request gets maxContextLength, as the planner sizes it.
            "-c", ((long)endpoint.Spec.MaxContextLength * endpoint.Spec.MaxConcurrency).ToString(CultureInfo.InvariantCulture),
            "--parallel", endpoint.Spec.MaxConcurrency.ToString(CultureInfo.InvariantCulture),
            "--host", "0.0.0.0",
            "--port", Port.ToString(CultureInfo.InvariantCulture),
            "--alias", endpoint.Metadata.Name,
            "--metrics",
        };
        if (placement.OnGpu)
        {
            args.AddRange(["-ngl", "999"]);
            if (placement.Shards > 1)
            {
                args.AddRange(["--split-mode", "layer"]);
            }
        }

        return args;
    }
}
