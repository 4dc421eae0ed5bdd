using k8s;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Planner;

namespace Lowbit.Operator.Builders;

/// <summary>
/// The Job that runs <c>lowbit-engine inspect</c> on a PVC source (or a gated Hub repo), whose result (layers, hidden
/// size, heads...) gives the architecture the planner needs when the operator cannot fetch config.json itself. Any of
/// the three kinds owns one when its model is such a source and no <c>lowbit.dev/architecture</c> annotation names a preset.
/// </summary>
public static class InspectJobBuilder
{
    public const string Role = "inspect";

    /// <summary>A small CPU placement: inspect reads config.json and the tensor index only.</summary>
    public static WorkloadPlacement Placement(GpuCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        var cpu = catalog.NodeTypes.FirstOrDefault(n => n.Kind == DeviceKind.Cpu) ?? catalog.NodeTypes[0];
        var memory = MemoryEstimatorZero();
        return new WorkloadPlacement
        {
            Option = new Fits
            {
                NodeType = cpu,
                GpusPerNode = 0,
                Nodes = 1,
                PerDevice = memory,
                UsablePerDevice = cpu.MemoryPerDevice,
                HourlyUsd = 0,
                Throughput = new ThroughputEstimate { Kind = ThroughputKind.Decode, TokensPerSecond = 0, PrefillTokensPerSecond = 0, UsdPerMillionTokens = 0 },
            },
            Index = 0,
            FeasibleCount = 1,
        };
    }

    /// <summary>
    /// The inspect Job of <paramref name="owner"/> (a QuantizedModel, or a FineTuneJob or InferenceEndpoint with a direct
    /// source) on <paramref name="source"/>, in the owner's engine image override when it has one.
    /// </summary>
    public static V1Job Build(IKubernetesObject<V1ObjectMeta> owner, ModelSource source, string? image, WorkloadOptions options, GpuCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        var volumes = new VolumeSet();
        var (model, revision) = volumes.Model(source);
        var args = new InspectRequest { Model = model, Revision = revision }.ToArgs();
        var placement = Placement(catalog);
        var hints = new ResourceHints { Memory = new ResourceQuantity("512Mi") };
        var pod = PodTemplates.PodSpec(placement, volumes, options, "Never");
        pod.Containers.Add(PodTemplates.Container(image ?? options.EngineImage, args, placement, volumes, hints, options));
        return ChildMeta.WithSpecHash(EngineJobs.Job(ChildMeta.For(owner, Role, Role), pod, options));
    }

    /// <summary>The architecture in an inspect result, or null when the result lacks the numbers.</summary>
    public static ModelArchitecture? Architecture(EngineResult result, string name)
    {
        ArgumentNullException.ThrowIfNull(result);
        var m = result.Metrics;
        if (m is null || !m.TryGetValue("layers", out var layers) || !m.TryGetValue("hiddenSize", out var hidden)
            || !m.TryGetValue("attentionHeads", out var heads) || !m.TryGetValue("vocabSize", out var vocab))
        {
            return null;
        }

        var kvHeads = m.TryGetValue("keyValueHeads", out var kv) ? kv : heads;
        return new ModelArchitecture
        {
            Name = name,
            ModelType = result.Info?.GetValueOrDefault("modelType") ?? "llama",
            Layers = (int)layers,
            HiddenSize = (int)hidden,
            IntermediateSize = m.TryGetValue("intermediateSize", out var inter) ? (int)inter : (int)hidden * 4,
            AttentionHeads = (int)heads,
            KvHeads = (int)kvHeads,
            HeadDim = (int)hidden / (int)heads,
            VocabSize = (int)vocab,
            MaxPositionEmbeddings = m.TryGetValue("maxPositionEmbeddings", out var max) ? (int)max : 4096,
        };
    }

    private static Planner.MemoryBreakdown MemoryEstimatorZero() => new()
    {
        Weights = ByteSize.Zero,
        KvCache = ByteSize.Zero,
        Activations = ByteSize.Zero,
        Optimizer = ByteSize.Zero,
        Gradients = ByteSize.Zero,
        Overhead = ByteSize.Zero,
    };
}
