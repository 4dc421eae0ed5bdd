using System.Text.Json;
using System.Text.Json.Serialization;

namespace Lowbit.Engine.Protocol;

/// <summary>
/// One JSON line on the engine's stdout. The <c>event</c> property comes first and names the kind:
/// <c>progress</c>, <c>train</c>, <c>checkpoint</c>, <c>download</c>, <c>log</c>. Other stdout lines are not events.
/// </summary>
[JsonPolymorphic(TypeDiscriminatorPropertyName = "event")]
[JsonDerivedType(typeof(ProgressEvent), "progress")]
[JsonDerivedType(typeof(TrainEvent), "train")]
[JsonDerivedType(typeof(DownloadEvent), "download")]
[JsonDerivedType(typeof(LogEvent), "log")]
[JsonDerivedType(typeof(CheckpointEvent), "checkpoint")]
public abstract record EngineEvent
{
    /// <summary>The event as one JSON line (no trailing newline).</summary>
    public string ToJsonLine() => JsonSerializer.Serialize(this, ProtocolJson.Default.EngineEvent);

    /// <summary>Parses a stdout line; null when the line is not an engine event.</summary>
    public static EngineEvent? TryParse(string line)
    {
        if (string.IsNullOrWhiteSpace(line) || !line.TrimStart().StartsWith('{'))
        {
            return null;
        }
        try
        {
            return JsonSerializer.Deserialize(line, ProtocolJson.Default.EngineEvent);
        }
        catch (JsonException)
        {
            return null;
        }
        catch (NotSupportedException)
        {
            return null;
        }
    }
}

/// <summary>Layer-by-layer progress of a stage (<c>load</c>, <c>quantize</c>, <c>eval</c>, <c>export</c>).</summary>
public sealed record ProgressEvent : EngineEvent
{
    public required string Stage { get; init; }

    /// <summary>Layers (or steps) done, 0-based count of completed units.</summary>
    public required int Layer { get; init; }

    public required int Layers { get; init; }

    public required double ElapsedSeconds { get; init; }
}

/// <summary>One optimizer step of fine-tuning.</summary>
public sealed record TrainEvent : EngineEvent
{
    public required int Step { get; init; }

    public required int TotalSteps { get; init; }

    public required double Epoch { get; init; }

    public required double Loss { get; init; }

    public required double TokensPerSecond { get; init; }

    public double? LearningRate { get; init; }

    /// <summary>Estimated seconds to the last step at the rate of this process so far.</summary>
    public double? EtaSeconds { get; init; }

    /// <summary>Peak memory so far: device bytes in use on CUDA, the process's peak resident set on the CPU.</summary>
    public long? PeakMemoryBytes { get; init; }

    /// <summary>
    /// With <c>--shards</c>: the peak per distinct shard device, in the order of the shards' first appearance
    /// (<see cref="PeakMemoryBytes"/> is their largest); null when the run is not split.
    /// </summary>
    public IReadOnlyList<long>? PeakMemoryBytesPerDevice { get; init; }
}

/// <summary>A fine-tuning checkpoint was written (atomically: the folder is complete when this line appears).</summary>
public sealed record CheckpointEvent : EngineEvent
{
    public required int Step { get; init; }

    /// <summary>The checkpoint folder (pass it, or its parent, to <c>--resume-from</c>).</summary>
    public required string Path { get; init; }
}

/// <summary>Bytes of one file fetched from a remote source.</summary>
public sealed record DownloadEvent : EngineEvent
{
    public required string File { get; init; }

    public required long Bytes { get; init; }

    public required long TotalBytes { get; init; }

    public required double ElapsedSeconds { get; init; }
}

/// <summary>A human-readable message.</summary>
public sealed record LogEvent : EngineEvent
{
    /// <summary><c>info</c>, <c>warning</c> or <c>error</c>.</summary>
    public required string Level { get; init; }

    public required string Message { get; init; }
}
