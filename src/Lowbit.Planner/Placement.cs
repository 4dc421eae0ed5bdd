namespace Lowbit.Planner;

/// <summary>Why an option was rejected.</summary>
public enum RejectionReason
{
    /// <summary>The per-device requirement exceeds the usable memory.</summary>
    InsufficientMemory,

    /// <summary>Tensor parallelism needs the shard count to divide the attention heads and the KV heads (or be a multiple of them).</summary>
    ShardsDoNotDivideHeads,

    /// <summary>Excluded by the allowed GPU types (CPU node types: not named there).</summary>
    GpuTypeNotAllowed,

    /// <summary>Costs more than the budget.</summary>
    OverBudget,

    /// <summary>Slower than the minimum tokens per second.</summary>
    TooSlow,
}

/// <summary>
/// One (node type, GPUs per replica) candidate. A closed hierarchy: <see cref="Fits"/> or
/// <see cref="DoesNotFit"/>. GPU counts are per replica; multi-node options use whole nodes.
/// </summary>
public abstract record PlacementOption
{
    /// <summary>Closed: only <see cref="Fits"/> and <see cref="DoesNotFit"/> derive from it.</summary>
    private protected PlacementOption()
    {
    }

    public required NodeType NodeType { get; init; }

    /// <summary>GPUs per node this replica uses (0 on a CPU node).</summary>
    public required int GpusPerNode { get; init; }

    public required int Nodes { get; init; }

    /// <summary>Memory one device needs.</summary>
    public required MemoryBreakdown PerDevice { get; init; }

    /// <summary>What one device offers after headroom (or vLLM's reservation fraction).</summary>
    public required ByteSize UsablePerDevice { get; init; }

    public required double HourlyUsd { get; init; }

    public required ThroughputEstimate Throughput { get; init; }

    public int Gpus => GpusPerNode * Nodes;

    /// <summary>
    /// Pipeline stages the model's layers are split into, in order (1: none). vLLM across nodes: one stage per node
    /// (<c>--pipeline-parallel-size</c>); the lowbit runtime on several GPUs of one pod: one stage per GPU
    /// (<c>lowbit-engine serve --shards</c>).
    /// </summary>
    public int PipelineStages { get; init; } = 1;

    /// <summary>Tensor-parallel shards of each stage: the devices over <see cref="PipelineStages"/>.</summary>
    public int TensorParallel => Devices / PipelineStages;

    /// <summary>Devices the model is spread over (GPUs, or 1 for a CPU node).</summary>
    public int Devices => Math.Max(Gpus, 1);

    /// <summary>
    /// How the model is spread over the replica's devices, for people: <c>pipeline split over 4 GPUs</c>, <c>tensor
    /// parallel over 4 GPUs</c>, <c>2 pipeline stages (one per node) × tensor parallel over 8 GPUs</c>; empty on one device.
    /// </summary>
    public string Split => Devices == 1 ? ""
        : PipelineStages == Devices ? $"pipeline split over {Devices} GPUs"
        : PipelineStages == 1 ? $"tensor parallel over {Devices} GPUs"
        : $"{PipelineStages} pipeline stages (one per node) × tensor parallel over {TensorParallel} GPUs";

    /// <summary>e.g. <c>2× A100-80GB</c>, <c>2 nodes × 8× A100-80GB</c>, <c>CPU n2-highmem-16</c>.</summary>
    public string Label => NodeType.Kind == DeviceKind.Cpu
        ? NodeType.GpuModel
        : Nodes > 1 ? $"{Nodes} nodes × {GpusPerNode}× {NodeType.GpuModel}" : $"{GpusPerNode}× {NodeType.GpuModel}";
}

public sealed record Fits : PlacementOption;

public sealed record DoesNotFit : PlacementOption
{
    public required RejectionReason Reason { get; init; }

    /// <summary>Memory missing per device (zero when rejected for another reason).</summary>
    public required ByteSize Shortfall { get; init; }

    /// <summary>A sentence a user reads, e.g. <c>short by 15.0 GiB per GPU</c>.</summary>
    public required string Explanation { get; init; }
}
