using System.Text;
using System.Text.Json;

namespace Lowbit.Engine.Protocol;

/// <summary>
/// The engine's final result: written to <c>--result-file</c> or <c>/dev/termination-log</c>, which Kubernetes caps at
/// 4096 bytes; <see cref="ToJson"/> guarantees that bound by dropping per-layer details first.
/// </summary>
public sealed record EngineResult
{
    /// <summary>Kubernetes' termination-message limit.</summary>
    public const int MaxBytes = 4096;

    public required bool Ok { get; init; }

    public required string Verb { get; init; }

    public ArtifactReport? Artifact { get; init; }

    public QualityReport? Quality { get; init; }

    /// <summary>Verb-specific numbers (parameters, tokensPerSecond, ...).</summary>
    public IReadOnlyDictionary<string, double>? Metrics { get; init; }

    /// <summary>Verb-specific text facts (architecture, dtype, ...).</summary>
    public IReadOnlyDictionary<string, string>? Info { get; init; }

    /// <summary>Per-layer details; trimmed (worst layers kept) when the result would exceed <see cref="MaxBytes"/>.</summary>
    public IReadOnlyList<LayerReport>? Layers { get; init; }

    /// <summary>How many per-layer entries were left out to fit the size limit.</summary>
    public int? LayersOmitted { get; init; }

    public required double DurationSeconds { get; init; }

    public ErrorReport? Error { get; init; }

    /// <summary>Serializes within <see cref="MaxBytes"/> UTF-8 bytes.</summary>
    public string ToJson()
    {
        var json = Serialize(this);
        if (Encoding.UTF8.GetByteCount(json) <= MaxBytes)
        {
            return json;
        }
        // Keep the layers with the largest error (the interesting ones), halving until it fits.
        var layers = (Layers ?? []).OrderByDescending(l => l.Error ?? 0).ToList();
        var total = Layers?.Count ?? 0;
        for (var keep = layers.Count / 2; keep >= 0; keep = keep == 0 ? -1 : keep / 2)
        {
            var trimmed = this with { Layers = keep == 0 ? null : layers.Take(keep).ToList(), LayersOmitted = total - keep };
            json = Serialize(trimmed);
            if (Encoding.UTF8.GetByteCount(json) <= MaxBytes)
            {
                return json;
            }
        }
        var bare = this with
        {
            Layers = null,
            LayersOmitted = total == 0 ? null : total,
            Metrics = Metrics?.Take(16).ToDictionary(),
            Info = Info?.Take(8).ToDictionary(kv => kv.Key, kv => Truncate(kv.Value, 128)),
            Artifact = Artifact is null ? null : Artifact with { Uri = Truncate(Artifact.Uri, 512) },
            Error = Error is null ? null : Error with { Message = Truncate(Error.Message, 1024) },
        };
        json = Serialize(bare);
        return Encoding.UTF8.GetByteCount(json) <= MaxBytes
            ? json
            : Serialize(new EngineResult { Ok = Ok, Verb = Verb, DurationSeconds = DurationSeconds, Error = bare.Error });
    }

    public static EngineResult? Parse(string json) => JsonSerializer.Deserialize(json, ProtocolJson.Default.EngineResult);

    public static EngineResult Failed(string verb, string reason, string message, double durationSeconds) => new()
    {
        Ok = false,
        Verb = verb,
        DurationSeconds = durationSeconds,
        Error = new ErrorReport { Reason = reason, Message = message },
    };

    private static string Serialize(EngineResult result) => JsonSerializer.Serialize(result, ProtocolJson.Default.EngineResult);

    private static string Truncate(string text, int max) => text.Length <= max ? text : string.Concat(text.AsSpan(0, max - 1), "…");
}

/// <summary>The produced artifact.</summary>
public sealed record ArtifactReport
{
    public required string Uri { get; init; }

    /// <summary>E.g. <c>lowbit</c>, <c>gptq</c>, <c>gguf-q4_k</c>.</summary>
    public required string Format { get; init; }

    public required long Bytes { get; init; }

    public double? BitsPerWeight { get; init; }

    /// <summary>16-bit size divided by the artifact's size.</summary>
    public double? CompressionRatio { get; init; }
}

/// <summary>Quality numbers of a quantization or evaluation.</summary>
public sealed record QualityReport
{
    public double? PerplexityBefore { get; init; }

    public double? PerplexityAfter { get; init; }

    public double? MeanReconstructionError { get; init; }
}

/// <summary>One layer's (or tensor's) quantization outcome.</summary>
public sealed record LayerReport
{
    public required string Name { get; init; }

    public int? Bits { get; init; }

    public double? Error { get; init; }
}

/// <summary>Why the verb failed. Reasons are PascalCase: <c>BadInput</c>, <c>OutOfMemory</c>, <c>RuntimeError</c>.</summary>
public sealed record ErrorReport
{
    public required string Reason { get; init; }

    public required string Message { get; init; }
}

/// <summary>Error reasons matching <see cref="EngineExitCodes"/>.</summary>
public static class ErrorReasons
{
    public const string BadInput = "BadInput";
    public const string OutOfMemory = "OutOfMemory";
    public const string RuntimeError = "RuntimeError";
    public const string Interrupted = "Interrupted";
}
