using System.Globalization;
using Lowbit.Planner;

namespace Lowbit.Operator.Builders;

/// <summary>
/// The placement a workload runs on: one feasible option of the plan and its index in the list of feasible
/// options (0 = cheapest that fits; it grows on Unschedulable or OOM fallback).
/// </summary>
public sealed record WorkloadPlacement
{
    public required PlacementOption Option { get; init; }

    /// <summary>Index among the plan's feasible options, cheapest first.</summary>
    public required int Index { get; init; }

    /// <summary>Feasible options the plan has in all.</summary>
    public required int FeasibleCount { get; init; }

    /// <summary>
    /// Bytes of the model's 16-bit checkpoint: what a pod downloads into its cache volume (sizes the volume's
    /// ephemeral storage) and reads before it computes (part of the Job's time estimate). Zero when unknown.
    /// </summary>
    public ByteSize SourceBytes { get; init; } = ByteSize.Zero;

    public NodeType NodeType => Option.NodeType;

    public bool OnGpu => NodeType.Kind == DeviceKind.Gpu;

    /// <summary>GPUs one replica (one pod) requests; 0 on CPU nodes.</summary>
    public int GpusPerReplica => Option.GpusPerNode;

    /// <summary>Shards the model is split into: every device of one replica (1 on CPU).</summary>
    public int Shards => Option.Devices;

    /// <summary>Nodes (pods) one replica spans: more than one renders a LeaderWorkerSet group instead of a Deployment.</summary>
    public int Nodes => Option.Nodes;

    /// <summary>True when one replica spans several nodes (a LeaderWorkerSet group of <see cref="Nodes"/> pods).</summary>
    public bool MultiNode => Option.Nodes > 1;

    /// <summary>GPUs of one whole replica, over all its pods (0 on CPU nodes).</summary>
    public int GpusPerGroup => Option.Gpus;

    /// <summary>Tensor-parallel shards of each pipeline stage (vLLM's <c>--tensor-parallel-size</c>).</summary>
    public int TensorParallel => Option.TensorParallel;

    /// <summary>Pipeline stages (vLLM's <c>--pipeline-parallel-size</c>: one per node).</summary>
    public int PipelineStages => Option.PipelineStages;

    /// <summary>e.g. <c>1× L4-24GB</c>.</summary>
    public string Label => Option.Label;

    /// <summary>Catalog USD per hour of one replica.</summary>
    public double HourlyUsd => Option.HourlyUsd;

    /// <summary>The value of the <c>lowbit.dev/placement</c> annotation: index and node type.</summary>
    public string Annotation => string.Create(CultureInfo.InvariantCulture, $"{Index}:{NodeType.Name}:{GpusPerReplica}");
}
