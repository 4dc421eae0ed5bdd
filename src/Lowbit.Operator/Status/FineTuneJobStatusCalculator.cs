using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Planner;

namespace Lowbit.Operator.Status;

/// <summary>FineTuneJob status: plan, progress from the engine's JSON train lines, adapter artifact, checkpoints (pure).</summary>
public static class FineTuneJobStatusCalculator
{
    public static FineTuneJobStatus Compute(FineTuneJob job, PlanResult? plan, WorkloadPlacement? placement, WorkloadObservation observed, DateTimeOffset now) =>
        Evaluate(job, plan, placement, observed, now).Status;

    /// <summary>The status and the outcome it reports (decided once, here).</summary>
    public static (FineTuneJobStatus Status, Outcome Outcome) Evaluate(FineTuneJob job, PlanResult? plan, WorkloadPlacement? placement, WorkloadObservation observed, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(observed);
        var generation = job.Metadata.Generation;
        var previous = job.Status;
        var result = StatusParts.SucceededResult(observed.Pods);
        var artifact = result?.Artifact is { } a ? StatusParts.Artifact(a, job.Spec.Output) : previous?.Artifact;
        // The result's totals once the pod succeeded (the last log line seen may be a few steps short), else the log.
        var progress = FinalProgress(job, result, previous?.Progress) ?? Progress(observed.LogTail) ?? previous?.Progress;
        var outcome = JobOutcomes.Of(plan, placement, observed, progress is null
            ? "adapter trained"
            : $"adapter trained: {progress.Step} steps, loss {progress.Loss:0.####}");
        var trained = outcome is Outcome.Succeeded
            ? Conditions.Trained(outcome.Message, generation, now)
            : Conditions.Create(Conditions.Types.Trained, Conditions.False, outcome.Reason, outcome.Message, generation, now);
        var status = new FineTuneJobStatus
        {
            ObservedGeneration = generation,
            Conditions = StatusParts.Conditions(previous?.Conditions, outcome, generation, now,
                StatusParts.Planned(plan, placement, observed.PlacementChange, generation, now), trained),
            Phase = JobOutcomes.Phase(outcome, observed),
            Plan = StatusParts.Plan(plan, placement) ?? previous?.Plan,
            Progress = progress,
            Artifact = artifact,
            Evaluation = Evaluation(result) ?? previous?.Evaluation,
            Checkpoints = Checkpoints(job, observed.LogTail, previous?.Checkpoints),
            Timings = StatusParts.Timings(observed.Job, previous?.Timings),
        };
        return (status, outcome);
    }

    /// <summary>Progress at the end of a successful run, from the engine's result (steps, final loss, tokens/s).</summary>
    public static ProgressStatus? FinalProgress(FineTuneJob job, EngineResult? result, ProgressStatus? previous)
    {
        ArgumentNullException.ThrowIfNull(job);
        if (result?.Metrics is not { } metrics || !metrics.TryGetValue("steps", out var steps))
        {
            return null;
        }
        var training = job.Spec.Training;
        var epoch = metrics.TryGetValue("trainBlocks", out var blocks) && blocks > 0
            ? Math.Round(steps * training.MicroBatchSize * training.GradientAccumulation / blocks, 3)
            : previous?.Epoch ?? 0;
        return new ProgressStatus
        {
            Step = (long)steps,
            TotalSteps = (long)steps,
            Epoch = epoch,
            Loss = metrics.TryGetValue("finalLoss", out var loss) ? Math.Round(loss, 5) : previous?.Loss,
            TokensPerSecond = metrics.TryGetValue("tokensPerSecond", out var rate) ? Math.Round(rate, 1) : previous?.TokensPerSecond,
        };
    }

    /// <summary>The held-out loss and perplexity the engine reports when the run had an evaluation split.</summary>
    public static TrainingEvaluationStatus? Evaluation(EngineResult? result) =>
        result?.Metrics is { } metrics && metrics.TryGetValue("evalPerplexity", out var perplexity)
            ? new TrainingEvaluationStatus
            {
                Perplexity = Math.Round(perplexity, 4),
                Loss = metrics.TryGetValue("evalLoss", out var loss) ? Math.Round(loss, 5) : null,
            }
            : null;

    /// <summary>The last <c>train</c> event in a log tail (the engine prints one JSON line per optimizer step).</summary>
    public static ProgressStatus? Progress(string? logTail)
    {
        if (string.IsNullOrEmpty(logTail))
        {
            return null;
        }

        TrainEvent? last = null;
        foreach (var (_, line) in ProgressWatchdog.Lines(logTail))
        {
            if (EngineEvent.TryParse(line) is TrainEvent train)
            {
                last = train;
            }
        }

        return last is null
            ? null
            : new ProgressStatus
            {
                Step = last.Step,
                TotalSteps = last.TotalSteps,
                Epoch = Math.Round(last.Epoch, 3),
                Loss = Math.Round(last.Loss, 5),
                TokensPerSecond = Math.Round(last.TokensPerSecond, 1),
            };
    }

    /// <summary>
    /// Checkpoints the engine reported writing (its <c>checkpoint</c> events, one per <c>spec.training.saveSteps</c>
    /// steps under <c>&lt;output&gt;/checkpoints/step-N</c>, the folder a retried pod resumes from), added to the ones
    /// already in the status: the log tail holds only the latest lines. The most recent 64 are kept.
    /// </summary>
    public static IReadOnlyList<CheckpointStatus>? Checkpoints(FineTuneJob job, string? logTail, IReadOnlyList<CheckpointStatus>? previous)
    {
        ArgumentNullException.ThrowIfNull(job);
        var root = StatusParts.OutputUri(job.Spec.Output);
        var reported = ProgressWatchdog.Lines(logTail)
            .Select(l => EngineEvent.TryParse(l.Text))
            .OfType<CheckpointEvent>()
            .Select(e => new CheckpointStatus
            {
                Step = e.Step,
                // The engine names its own path (inside the pod); the status names the claim.
                Uri = $"{root}/{FineTuneJobBuilder.CheckpointsDirectory}/{System.IO.Path.GetFileName(e.Path.TrimEnd('/'))}",
            })
            .ToList();
        if (reported.Count == 0)
        {
            return previous;
        }
        return (previous ?? []).Concat(reported)
            .GroupBy(c => c.Step)
            .Select(g => g.Last())
            .OrderBy(c => c.Step)
            .TakeLast(64)
            .ToList();
    }
}
