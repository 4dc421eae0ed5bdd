using Lowbit.Api.Generation;

namespace Lowbit.Api.V1Alpha1;

/// <summary>The placement the planner chose (written by the operator).</summary>
public sealed record PlanStatus
{
    [Description("Catalog node type chosen, e.g. a100-80gb.")]
    [MaxLength(63)]
    public string? NodeType { get; init; }

    [Description("GPU model of the node type, e.g. A100-80GB; cpu for CPU nodes.")]
    [MaxLength(63)]
    public string? GpuModel { get; init; }

    [Description("GPUs per replica (tensor-parallel degree times pipeline stages).")]
    [Minimum(0)]
    public int GpusPerReplica { get; init; }

    [Description("Number of shards the model is split into.")]
    [Minimum(0)]
    public int Shards { get; init; }

    [Description("Estimated memory in GiB.")]
    public MemoryBreakdown? MemoryGiB { get; init; }

    [Description("Catalog price of one replica in USD per hour.")]
    [Minimum(0)]
    public double HourlyUsd { get; init; }

    [Description("Index of the chosen placement in the ranked list (0 = cheapest that fits); it grows on Unschedulable or OOM fallback.")]
    [Minimum(0)]
    public int PlacementIndex { get; init; }

    [Description("How many feasible placements the planner ranked.")]
    [Minimum(0)]
    public int AlternativesCount { get; init; }

    [Description("Why this placement, in one line (e.g. \"needs 38.9 GiB: 1x A100-40GB at $2.87/h; 1x L4 short by 15 GiB\").")]
    [MaxLength(1024)]
    public string? Reason { get; init; }
}

/// <summary>Memory estimate in GiB.</summary>
public sealed record MemoryBreakdown
{
    public double Weights { get; init; }
    public double KvCache { get; init; }
    public double Activations { get; init; }
    public double Optimizer { get; init; }
    public double Gradients { get; init; }
    public double Overhead { get; init; }

    [Description("Peak memory per GPU.")]
    public double PerGpu { get; init; }

    [Description("Total across the GPUs of one replica.")]
    public double Total { get; init; }
}

/// <summary>A produced artifact.</summary>
public sealed record ArtifactStatus
{
    [Description("Where the artifact is, e.g. pvc://lowbit-models/llama-2-7b-int4.")]
    [MaxLength(2048)]
    public string? Uri { get; init; }

    [Description("Artifact format (lowbit, gptq, gguf-q4_0, peft-lora, ...).")]
    [MaxLength(63)]
    public string? Format { get; init; }

    [Description("Size in bytes.")]
    [Minimum(0)]
    public long Bytes { get; init; }

    [Description("Average stored bits per weight including scales and zero points.")]
    [Minimum(0)]
    public double? BitsPerWeight { get; init; }

    [Description("Size of the 16-bit source divided by the artifact size.")]
    [Minimum(0)]
    public double? CompressionRatio { get; init; }
}

/// <summary>Quality of a quantized model.</summary>
public sealed record QualityStatus
{
    [Description("Perplexity of the source model on the evaluation text.")]
    public double? PerplexityBefore { get; init; }

    [Description("Perplexity of the quantized model on the same text.")]
    public double? PerplexityAfter { get; init; }

    [Description("Mean relative reconstruction error of the quantized weights.")]
    public double? MeanReconstructionError { get; init; }
}

/// <summary>Training progress.</summary>
public sealed record ProgressStatus
{
    [Minimum(0)]
    public long Step { get; init; }

    [Minimum(0)]
    public long TotalSteps { get; init; }

    [Minimum(0)]
    public double Epoch { get; init; }

    public double? Loss { get; init; }

    [Minimum(0)]
    public double? TokensPerSecond { get; init; }
}

/// <summary>How the trained model scores on the held-out split.</summary>
public sealed record TrainingEvaluationStatus
{
    [Minimum(0)]
    public double? Loss { get; init; }

    [Minimum(1)]
    public double? Perplexity { get; init; }
}

/// <summary>A training checkpoint.</summary>
public sealed record CheckpointStatus
{
    [Minimum(0)]
    public long Step { get; init; }

    [MaxLength(2048)]
    public string? Uri { get; init; }
}

/// <summary>What serving costs.</summary>
public sealed record CostStatus
{
    [Description("USD per hour for all current replicas at catalog prices.")]
    [Minimum(0)]
    public double HourlyUsd { get; init; }

    [Description("Estimated USD per million output tokens at maxConcurrency.")]
    [Minimum(0)]
    public double? UsdPerMillionTokens { get; init; }

    [Description("Estimated decode tokens per second per replica.")]
    [Minimum(0)]
    public double? TokensPerSecond { get; init; }
}

/// <summary>When the work ran.</summary>
public sealed record TimingsStatus
{
    [Description("When the workload started running.")]
    public DateTime? StartTime { get; init; }

    [Description("When it completed (or became ready, for endpoints).")]
    public DateTime? CompletionTime { get; init; }

    [Description("Wall-clock seconds between start and completion.")]
    [Minimum(0)]
    public double? DurationSeconds { get; init; }
}
