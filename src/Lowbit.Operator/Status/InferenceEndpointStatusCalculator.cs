using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Operator.LeaderWorkerSets;
using Lowbit.Planner;

namespace Lowbit.Operator.Status;

/// <summary>InferenceEndpoint status: readiness from the Deployment, URL, scale status, plan and cost (pure).</summary>
public static class InferenceEndpointStatusCalculator
{
    public static InferenceEndpointStatus Compute(InferenceEndpoint endpoint, PlanResult? plan, WorkloadPlacement? placement, WorkloadObservation observed, string url, DateTimeOffset now) =>
        Evaluate(endpoint, plan, placement, observed, url, now).Status;

    /// <summary>The status and the outcome it reports (decided once, here).</summary>
    public static (InferenceEndpointStatus Status, Status.Outcome Outcome) Evaluate(InferenceEndpoint endpoint, PlanResult? plan, WorkloadPlacement? placement, WorkloadObservation observed, string url, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(observed);
        var generation = endpoint.Metadata.Generation;
        var previous = endpoint.Status;
        var deployment = observed.Deployment?.Status;
        var group = Group(endpoint, placement, observed);
        var ready = group?.ReadyReplicas ?? deployment?.ReadyReplicas ?? 0;
        var outcome = Outcome(endpoint, plan, placement, observed, ready);
        var available = ready > 0
            ? Conditions.Available($"{ready} of {endpoint.Spec.Replicas} replicas ready", generation, now)
            : Conditions.Unavailable(outcome is Outcome.Succeeded ? Conditions.Reasons.Succeeded : outcome.Reason, ready == 0 && endpoint.Spec.Replicas == 0 ? "scaled to zero" : outcome.Message, generation, now);
        // The scale subresource's selector (what an HPA averages over): a group's leaders only, as the Service selects them.
        var pods = ChildMeta.Selector(endpoint, InferenceDeploymentBuilder.Role);
        if (placement is { MultiNode: true })
        {
            pods[LeaderWorkerSet.WorkerIndexLabel] = "0";
        }

        var selector = string.Join(",", pods.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}"));
        var status = new InferenceEndpointStatus
        {
            ObservedGeneration = generation,
            Conditions = StatusParts.Conditions(previous?.Conditions, outcome, generation, now,
                StatusParts.Planned(plan, placement, observed.PlacementChange, generation, now), available),
            Phase = outcome switch
            {
                Status.Outcome.Succeeded => "Available",
                Status.Outcome.Stalled => "Failed",
                _ => "Progressing",
            },
            Plan = StatusParts.Plan(plan, placement) ?? previous?.Plan,
            Url = placement is null ? previous?.Url : url,
            Replicas = placement is { MultiNode: true } ? observed.LeaderWorkerSet?.Status?.Replicas ?? 0 : deployment?.Replicas ?? 0,
            ReadyReplicas = ready,
            Group = group ?? previous?.Group,
            Selector = selector,
            Cost = placement is null ? previous?.Cost : Cost(endpoint, placement),
            Timings = previous?.Timings,
        };
        return (status, outcome);
    }

    /// <summary>
    /// The serving workload for the placement: the LeaderWorkerSet of a multi-node placement (ready = its ready groups),
    /// else the Deployment (ready = its ready pods); null before a placement is known.
    /// </summary>
    public static ServingGroupStatus? Group(InferenceEndpoint endpoint, WorkloadPlacement? placement, WorkloadObservation observed)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(observed);
        if (placement is null)
        {
            return null;
        }

        var name = ChildMeta.Name(endpoint, InferenceDeploymentBuilder.Role);
        return placement.MultiNode
            ? new ServingGroupStatus { Kind = LeaderWorkerSet.KindName, Name = name, Size = placement.Nodes, ReadyReplicas = observed.LeaderWorkerSet?.Status?.ReadyReplicas ?? 0 }
            : new ServingGroupStatus { Kind = "Deployment", Name = name, Size = 1, ReadyReplicas = observed.Deployment?.Status?.ReadyReplicas ?? 0 };
    }

    /// <summary>Catalog cost of the desired replicas and the planner's throughput estimate.</summary>
    public static CostStatus Cost(InferenceEndpoint endpoint, WorkloadPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(placement);
        var throughput = placement.Option.Throughput;
        return new CostStatus
        {
            HourlyUsd = Math.Round(placement.HourlyUsd * endpoint.Spec.Replicas, 4),
            UsdPerMillionTokens = double.IsFinite(throughput.UsdPerMillionTokens) ? Math.Round(throughput.UsdPerMillionTokens, 4) : null,
            TokensPerSecond = Math.Round(throughput.TokensPerSecond, 1),
        };
    }

    private static Outcome Outcome(InferenceEndpoint endpoint, PlanResult? plan, WorkloadPlacement? placement, WorkloadObservation observed, int ready)
    {
        if (observed.Blocker is { } blocker)
        {
            return blocker;
        }

        if (plan is NoFit noFit)
        {
            return new Outcome.Stalled(StatusParts.NoFitReason(noFit), StatusParts.NoFitMessage(noFit));
        }

        var diagnosis = observed.Diagnosis;
        if (placement is null)
        {
            return new Outcome.Stalled(diagnosis is PodDiagnosis.OutOfMemory ? diagnosis.Reason : Conditions.Reasons.Unschedulable, $"{diagnosis.Message}; no feasible placement left");
        }

        if (placement.MultiNode)
        {
            return GroupOutcome(endpoint, placement, observed, ready);
        }

        var deployment = observed.Deployment;
        var progressing = deployment?.Status?.Conditions?.FirstOrDefault(c => c.Type == "Progressing");
        var rolledOut = deployment is not null
            && deployment.Status?.ObservedGeneration >= deployment.Metadata.Generation
            && (deployment.Status?.UpdatedReplicas ?? 0) >= endpoint.Spec.Replicas
            && ready >= endpoint.Spec.Replicas;
        if (rolledOut && observed.PlacementChange is null)
        {
            return new Outcome.Succeeded(endpoint.Spec.Replicas == 0 ? "scaled to zero" : $"{ready} replicas serving on {placement.Label}");
        }

        if (PodOutcome(diagnosis, observed, placement) is { } pods)
        {
            return pods;
        }

        if (progressing is { Status: "False", Reason: "ProgressDeadlineExceeded" })
        {
            return new Outcome.Stalled(StatusReasons.RolloutStuck, $"rollout stuck: {progressing.Message}");
        }

        return deployment is null
            ? new Outcome.InProgress(Conditions.Reasons.Pending, $"creating the Deployment on {placement.Label}")
            : new Outcome.InProgress(Conditions.Reasons.Progressing, $"{ready} of {endpoint.Spec.Replicas} replicas ready on {placement.Label}");
    }

    /// <summary>What the pods' diagnosis decides alone (bad input, a missing image or secret, OOM, no GPU), for a Deployment or a LeaderWorkerSet alike.</summary>
    private static Outcome? PodOutcome(PodDiagnosis diagnosis, WorkloadObservation observed, WorkloadPlacement placement) => diagnosis switch
    {
        PodDiagnosis.BadInput or PodDiagnosis.ImagePullFailed or PodDiagnosis.SecretNotFound => new Outcome.Stalled(diagnosis.Reason, diagnosis.Message),
        PodDiagnosis.OutOfMemory or PodDiagnosis.Unschedulable when observed.PlacementChange is { } change =>
            new Outcome.InProgress(diagnosis is PodDiagnosis.OutOfMemory ? diagnosis.Reason : Conditions.Reasons.Unschedulable, $"{diagnosis.Message}; {change}"),
        PodDiagnosis.Unschedulable => new Outcome.InProgress(Conditions.Reasons.WaitingForGpu, $"waiting for {placement.Label}: {diagnosis.Message}"),
        _ => null,
    };

    /// <summary>
    /// A LeaderWorkerSet's outcome: serving once every desired group is updated and ready (LWS status counts groups);
    /// pod failures as for a Deployment (its pods carry the same labels).
    /// </summary>
    private static Outcome GroupOutcome(InferenceEndpoint endpoint, WorkloadPlacement placement, WorkloadObservation observed, int ready)
    {
        var set = observed.LeaderWorkerSet;
        var rolledOut = set is not null
            && (set.Status?.ObservedGeneration is null || set.Status.ObservedGeneration >= set.Metadata.Generation)
            && (set.Status?.UpdatedReplicas ?? 0) >= endpoint.Spec.Replicas
            && ready >= endpoint.Spec.Replicas;
        if (rolledOut && observed.PlacementChange is null)
        {
            return new Outcome.Succeeded(endpoint.Spec.Replicas == 0 ? "scaled to zero" : $"{ready} groups of {placement.Nodes} pods serving on {placement.Label}");
        }

        if (PodOutcome(observed.Diagnosis, observed, placement) is { } pods)
        {
            return pods;
        }

        return set is null
            ? new Outcome.InProgress(Conditions.Reasons.Pending, $"creating the LeaderWorkerSet on {placement.Label}")
            : new Outcome.InProgress(Conditions.Reasons.Progressing, $"{ready} of {endpoint.Spec.Replicas} groups of {placement.Nodes} pods ready on {placement.Label}");
    }
}
