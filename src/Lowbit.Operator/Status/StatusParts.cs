using System.Globalization;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Planner;

namespace Lowbit.Operator.Status;

/// <summary>Where a resource stands, in kstatus terms: in progress, done, or stalled (needs a change to move).</summary>
public abstract record Outcome(string Reason, string Message)
{
    public sealed record InProgress(string Reason, string Message) : Outcome(Reason, Message);

    public sealed record Succeeded(string Message) : Outcome(Conditions.Reasons.Succeeded, Message);

    public sealed record Stalled(string Reason, string Message) : Outcome(Reason, Message);
}

/// <summary>What the reconciler observed of a workload's children (from the informer caches) plus what blocked it.</summary>
public sealed record WorkloadObservation
{
    public static readonly WorkloadObservation Empty = new();

    public V1Job? Job { get; init; }

    public IReadOnlyList<V1Pod> Pods { get; init; } = [];

    public V1Deployment? Deployment { get; init; }

    /// <summary>The serving LeaderWorkerSet of a multi-node placement (InferenceEndpoint).</summary>
    public LeaderWorkerSets.LeaderWorkerSet? LeaderWorkerSet { get; init; }

    /// <summary>An outcome decided before children exist (invalid spec, no fit, waiting for a dependency, inspecting).</summary>
    public Outcome? Blocker { get; init; }

    /// <summary>The pods' classified state.</summary>
    public PodDiagnosis Diagnosis { get; init; } = new PodDiagnosis.Healthy();

    /// <summary>A placement move (fallback) made in this reconcile, for the Planned message and the Event.</summary>
    public string? PlacementChange { get; init; }

    /// <summary>The tail of the running pod's log (FineTuneJob progress lines).</summary>
    public string? LogTail { get; init; }
}

/// <summary>Helpers shared by the three status calculators (pure).</summary>
public static class StatusParts
{
    /// <summary>
    /// Ready, Reconciling and Stalled for an outcome (kstatus: Reconciling=True → InProgress, Stalled=True → Failed;
    /// Ready == !Stalled &amp;&amp; !Reconciling), plus <paramref name="extra"/>, merged into the existing list so that
    /// <c>lastTransitionTime</c> moves only when a status flips.
    /// </summary>
    public static IReadOnlyList<V1Condition> Conditions(IReadOnlyList<V1Condition>? existing, Outcome outcome, long? generation, DateTimeOffset now, params V1Condition[] extra)
    {
        ArgumentNullException.ThrowIfNull(outcome);
        var set = outcome switch
        {
            Outcome.Succeeded done => new[]
            {
                Api.Conditions.Ready(done.Message, generation, now),
                Api.Conditions.NotReconciling(Api.Conditions.Reasons.Succeeded, "", generation, now),
                Api.Conditions.NotStalled(generation, now),
            },
            Outcome.Stalled stalled => new[]
            {
                Api.Conditions.NotReady(stalled.Reason, stalled.Message, generation, now),
                Api.Conditions.NotReconciling(stalled.Reason, stalled.Message, generation, now),
                Api.Conditions.Stalled(stalled.Reason, stalled.Message, generation, now),
            },
            _ => new[]
            {
                Api.Conditions.NotReady(outcome.Reason, outcome.Message, generation, now),
                Api.Conditions.Reconciling(outcome.Reason, outcome.Message, generation, now),
                Api.Conditions.NotStalled(generation, now),
            },
        };
        IReadOnlyList<V1Condition> merged = existing ?? [];
        foreach (var condition in set.Concat(extra))
        {
            merged = Api.Conditions.Set(merged, condition);
        }

        return merged;
    }

    /// <summary>The Planned condition for a plan (True with its summary, or False with InsufficientGpuMemory and by how much).</summary>
    public static V1Condition Planned(PlanResult? plan, WorkloadPlacement? placement, string? change, long? generation, DateTimeOffset now) => (plan, placement) switch
    {
        (null, _) => Api.Conditions.Create(Api.Conditions.Types.Planned, Api.Conditions.UnknownStatus, Api.Conditions.Reasons.Pending, "not planned yet", generation, now),
        (NoFit noFit, _) => Api.Conditions.NotPlanned(NoFitReason(noFit), NoFitMessage(noFit), generation, now),
        (_, null) => Api.Conditions.NotPlanned(Api.Conditions.Reasons.InsufficientGpuMemory, "every feasible placement was tried", generation, now),
        (_, { } chosen) => Api.Conditions.Planned(Truncate(change is null ? $"{chosen.Label} at {Usd(chosen.HourlyUsd)}/h: {plan.Summary}" : $"{change}; {plan.Summary}", 1024), generation, now),
    };

    /// <summary>InsufficientGpuMemory: the requirement, the closest option and by how much it is short, and what would fit without constraints.</summary>
    public static string NoFitMessage(NoFit noFit)
    {
        ArgumentNullException.ThrowIfNull(noFit);
        var closest = noFit.Closest;
        var message = $"needs {noFit.Total.Total.ToGiBString()}; nothing fits: closest {closest.Label} {closest.Explanation}";
        if (noFit.FitsWithoutConstraints.Count > 0)
        {
            var unconstrained = noFit.FitsWithoutConstraints[0];
            message += $"; would fit {unconstrained.Label} at {Usd(unconstrained.HourlyUsd)}/h without the constraints ({unconstrained.Explanation})";
        }
        if (noFit.Request.Workload.IsTraining)
        {
            // The planner offers no multi-node training: say so, rather than let a user wonder why more nodes were not tried.
            message += "; training runs in one pod (a pipeline split over its GPUs): there is no multi-node training yet";
        }

        return Truncate(message, 1024);
    }

    public static string NoFitReason(NoFit noFit)
    {
        ArgumentNullException.ThrowIfNull(noFit);
        return noFit.FitsWithoutConstraints.Count > 0 && noFit.FitsWithoutConstraints[0].Reason == RejectionReason.OverBudget
            ? Api.Conditions.Reasons.OverBudget
            : Api.Conditions.Reasons.InsufficientGpuMemory;
    }

    /// <summary><c>status.plan</c> for a placement.</summary>
    public static PlanStatus? Plan(PlanResult? plan, WorkloadPlacement? placement)
    {
        if (plan is null || placement is null)
        {
            return null;
        }

        var perDevice = placement.Option.PerDevice;
        return new PlanStatus
        {
            NodeType = placement.NodeType.Name,
            GpuModel = placement.OnGpu ? placement.NodeType.GpuModel : "cpu",
            GpusPerReplica = placement.GpusPerGroup,
            Shards = placement.Shards,
            MemoryGiB = new Api.V1Alpha1.MemoryBreakdown
            {
                Weights = GiB(perDevice.Weights),
                KvCache = GiB(perDevice.KvCache),
                Activations = GiB(perDevice.Activations),
                Optimizer = GiB(perDevice.Optimizer),
                Gradients = GiB(perDevice.Gradients),
                Overhead = GiB(perDevice.Overhead),
                PerGpu = GiB(perDevice.Total),
                Total = Math.Round(perDevice.Total.GiB * placement.Shards, 2),
            },
            HourlyUsd = Math.Round(placement.HourlyUsd, 4),
            PlacementIndex = placement.Index,
            AlternativesCount = placement.FeasibleCount,
            Reason = Truncate(plan.Summary, 1024),
        };
    }

    /// <summary>Start, completion and duration of a Job.</summary>
    public static TimingsStatus? Timings(V1Job? job, TimingsStatus? previous)
    {
        if (job?.Status?.StartTime is not { } start)
        {
            return previous;
        }

        var end = job.Status.CompletionTime;
        return new TimingsStatus
        {
            StartTime = start,
            CompletionTime = end,
            DurationSeconds = end is { } e ? Math.Round((e - start).TotalSeconds, 1) : null,
        };
    }

    /// <summary>The Job's terminal state: true = Complete, false = Failed, null = still running.</summary>
    public static bool? JobFinished(V1Job? job)
    {
        foreach (var condition in job?.Status?.Conditions ?? [])
        {
            if (condition.Status != "True")
            {
                continue;
            }

            if (condition.Type == "Complete")
            {
                return true;
            }

            if (condition.Type == "Failed")
            {
                return false;
            }
        }

        return null;
    }

    /// <summary>The engine result of the Job's succeeded container, if a pod with one is cached.</summary>
    public static Engine.Protocol.EngineResult? SucceededResult(IEnumerable<V1Pod> pods)
    {
        ArgumentNullException.ThrowIfNull(pods);
        foreach (var pod in pods)
        {
            foreach (var status in pod.Status?.ContainerStatuses ?? [])
            {
                if (status.State?.Terminated is { ExitCode: 0 } terminated && PodDiagnosis.Result(terminated) is { } result)
                {
                    return result;
                }
            }
        }

        return null;
    }

    /// <summary>
    /// Where a resource's artifacts are, as <c>pvc://claim/path</c>: the engine reports paths inside its pod (or, on
    /// the local executor, on the host), which mean nothing to a reader of the status.
    /// </summary>
    public static string OutputUri(OutputSpec output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var path = (output.Pvc.Path ?? "").Trim('/');
        return path.Length == 0 ? $"pvc://{output.Pvc.ClaimName}" : $"pvc://{output.Pvc.ClaimName}/{path}";
    }

    /// <summary>The engine's artifact report as status, located at the resource's output (<see cref="OutputUri"/>).</summary>
    public static ArtifactStatus Artifact(Engine.Protocol.ArtifactReport report, OutputSpec output)
    {
        ArgumentNullException.ThrowIfNull(report);
        return new ArtifactStatus
        {
            Uri = OutputUri(output),
            Format = report.Format,
            Bytes = report.Bytes,
            BitsPerWeight = report.BitsPerWeight,
            CompressionRatio = report.CompressionRatio,
        };
    }

    public static string Usd(double usd) => string.Create(CultureInfo.InvariantCulture, $"${usd:0.00}");

    public static string Truncate(string text, int max)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Length <= max ? text : string.Concat(text.AsSpan(0, max - 1), "…");
    }

    private static double GiB(ByteSize size) => Math.Round(size.GiB, 2);
}
