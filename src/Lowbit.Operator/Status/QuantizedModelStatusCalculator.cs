using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Planner;

namespace Lowbit.Operator.Status;

/// <summary>QuantizedModel status from the plan and the observed Job and pods (pure; unit-tested without a server).</summary>
public static class QuantizedModelStatusCalculator
{
    public static QuantizedModelStatus Compute(QuantizedModel model, PlanResult? plan, WorkloadPlacement? placement, WorkloadObservation observed, DateTimeOffset now) =>
        Evaluate(model, plan, placement, observed, now).Status;

    /// <summary>The status and the outcome it reports (decided once, here).</summary>
    public static (QuantizedModelStatus Status, Outcome Outcome) Evaluate(QuantizedModel model, PlanResult? plan, WorkloadPlacement? placement, WorkloadObservation observed, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(observed);
        var generation = model.Metadata.Generation;
        var previous = model.Status;
        var result = StatusParts.SucceededResult(observed.Pods);
        var artifact = result?.Artifact is { } a ? StatusParts.Artifact(a, model.Spec.Output) : previous?.Artifact;
        var outcome = JobOutcomes.Of(plan, placement, observed, artifact is null
            ? "quantized"
            : $"quantized to {artifact.BitsPerWeight:0.##} bits per weight ({artifact.Format}, {artifact.Bytes} bytes)");
        var quantized = outcome is Outcome.Succeeded
            ? Conditions.Quantized(outcome.Message, generation, now)
            : Conditions.Create(Conditions.Types.Quantized, Conditions.False, outcome.Reason, outcome.Message, generation, now);
        var status = new QuantizedModelStatus
        {
            ObservedGeneration = generation,
            Conditions = StatusParts.Conditions(previous?.Conditions, outcome, generation, now,
                StatusParts.Planned(plan, placement, observed.PlacementChange, generation, now), quantized),
            Phase = JobOutcomes.Phase(outcome, observed),
            Plan = StatusParts.Plan(plan, placement) ?? previous?.Plan,
            Artifact = artifact,
            Exports = result is { Artifact: not null } ? Exports(model.Spec.Output, result) : previous?.Exports,
            Quality = result?.Quality is { } q
                ? new QualityStatus { PerplexityBefore = q.PerplexityBefore, PerplexityAfter = q.PerplexityAfter, MeanReconstructionError = q.MeanReconstructionError }
                : previous?.Quality,
            Timings = StatusParts.Timings(observed.Job, previous?.Timings),
        };
        return (status, outcome);
    }

    /// <summary>Every export the engine wrote (its <c>bytes.&lt;format&gt;</c> metrics), each at its folder or GGUF file.</summary>
    public static IReadOnlyList<ArtifactStatus> Exports(OutputSpec output, EngineResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var root = StatusParts.OutputUri(output);
        var primary = result.Artifact;
        var exports = new List<ArtifactStatus>();
        foreach (var format in ExportFormats.All)
        {
            var isPrimary = primary?.Format == format;
            double bytes = 0;
            if (!isPrimary && result.Metrics?.TryGetValue($"bytes.{format}", out bytes) != true)
            {
                continue;
            }
            exports.Add(new ArtifactStatus
            {
                Uri = format.StartsWith("gguf-", StringComparison.Ordinal) ? ExportFormats.GgufFile(root, format) : ExportFormats.Folder(root, format),
                Format = format,
                Bytes = isPrimary ? primary!.Bytes : (long)bytes,
                BitsPerWeight = isPrimary ? primary!.BitsPerWeight : null,
                CompressionRatio = isPrimary ? primary!.CompressionRatio : null,
            });
        }
        return exports;
    }
}
