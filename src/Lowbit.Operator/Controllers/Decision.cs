using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Controllers;

/// <summary>
/// Everything one reconcile decided for a resource: the output of a kind's pure <c>Decide</c>, which the reconcile
/// only carries out (apply <see cref="Children"/>, write <see cref="Status"/> if it changed, return <see cref="Result"/>).
/// </summary>
public sealed record Decision<TStatus>
    where TStatus : class
{
    /// <summary>Desired children, applied in order with server-side apply (an unchanged one costs no request).</summary>
    public IReadOnlyList<IKubernetesObject<V1ObjectMeta>> Children { get; init; } = [];

    /// <summary>
    /// Observed children this resource controls that must go (a Deployment replaced by a LeaderWorkerSet when the
    /// placement moved to several nodes, or the reverse), deleted after <see cref="Children"/> are applied.
    /// </summary>
    public IReadOnlyList<IKubernetesObject<V1ObjectMeta>> Deletions { get; init; } = [];

    public required TStatus Status { get; init; }

    public required Outcome Outcome { get; init; }

    public required ReconcileResult Result { get; init; }

    /// <summary>The placement the children were built for (cost metrics); null when none were built.</summary>
    public WorkloadPlacement? Placement { get; init; }

    /// <summary>GPU time the running or finished Job has used, for the GPU-hours counter.</summary>
    public GpuTime? GpuTime { get; init; }

    /// <summary>Events to record on the resource once the children are applied (e.g. why a Deployment rolls).</summary>
    public IReadOnlyList<DecisionEvent> Events { get; init; } = [];
}

/// <summary>An Event a decision asks to record (type Normal or Warning, a PascalCase reason, a message).</summary>
public sealed record DecisionEvent(string Type, string Reason, string Message);

/// <summary>GPUs × wall time of a Job on its placement.</summary>
public sealed record GpuTime(int Gpus, DateTimeOffset Start, DateTimeOffset End);

/// <summary>What every <c>Decide</c> reads besides the resource and its observation (no I/O).</summary>
public sealed record DecideContext
{
    public required GpuCatalog Catalog { get; init; }

    public required WorkloadOptions Options { get; init; }

    public required DateTimeOffset Now { get; init; }
}

/// <summary>The placement to run on and, when the failure policy moved it now, a description of the move.</summary>
public sealed record Placing(WorkloadPlacement? Placement, string? Change);

/// <summary>The pieces the three <c>Decide</c> functions share (pure).</summary>
public static class DecisionParts
{
    public static readonly TimeSpan PollRunning = TimeSpan.FromSeconds(60);

    public static readonly TimeSpan PollBlocked = TimeSpan.FromMinutes(5);

    /// <summary>After a Job was replaced (immutable template changed), look again soon to create the new one.</summary>
    public static readonly TimeSpan AfterReplace = TimeSpan.FromSeconds(1);

    /// <summary>A plan, or the planner's input error as an invalid spec (the planner library throws for inputs it cannot plan).</summary>
    public static (PlanResult? Plan, SpecError? Error) Plan(Func<PlanResult> plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        try
        {
            return (plan(), null);
        }
        catch (PlanInputException ex)
        {
            return (null, new SpecError("spec", ex.Message));
        }
    }

    /// <summary>The placement index a resource runs on now (from the child of this generation, else status).</summary>
    public static int CurrentIndex(IKubernetesObject<V1ObjectMeta>? child, long? generation, long? observedGeneration, int? statusIndex) =>
        ChildMeta.PlacementIndex(child, generation) ?? (observedGeneration == generation ? statusIndex ?? 0 : 0);

    /// <summary>
    /// Places a plan that fits: the placement (moved on by the failure policy) and the first spec error on the way:
    /// the planner's, the scheduling timeout's, or the builder's <paramref name="check"/> of the chosen placement.
    /// </summary>
    public static (Placing Placing, SpecError? Error) Place(PlanResult? plan, SpecError? planError, string? timeoutText, int current, PodDiagnosis diagnosis,
        DateTimeOffset now, Func<WorkloadPlacement, SpecError?> check)
    {
        ArgumentNullException.ThrowIfNull(check);
        if (plan is not Planned)
        {
            return (new Placing(null, null), planError);
        }

        var (timeout, timeoutError) = Planning.SchedulingTimeout(timeoutText);
        if (timeoutError is not null)
        {
            return (new Placing(null, null), timeoutError);
        }

        var placing = Place(plan, current, diagnosis, timeout, now);
        return (placing, placing.Placement is { } placement ? check(placement) : null);
    }

    /// <summary>The placement to run on: the current one, moved on by the failure policy (<see cref="Planning.NextIndex"/>).</summary>
    public static Placing Place(PlanResult plan, int current, PodDiagnosis diagnosis, TimeSpan timeout, DateTimeOffset now)
    {
        var next = Planning.NextIndex(plan, current, diagnosis, now, timeout);
        if (next is null)
        {
            return new Placing(null, null);
        }

        var placement = Planning.Choose(plan, next.Value);
        if (next == current || placement is null)
        {
            return new Placing(placement, null);
        }

        var from = Planning.Choose(plan, current);
        return new Placing(placement, $"moved from {from?.Label ?? "placement " + current} to {placement.Label} ({diagnosis.Reason})");
    }

    /// <summary>
    /// Finished work is never re-run (issue 17, item 1): a resource whose status says it Succeeded for its current
    /// <c>metadata.generation</c> with its artifact keeps that status and gets no children, so an operator upgrade
    /// that changes a default (image, resources) or a deleted finished Job cannot delete and re-run it. Only a spec
    /// change (a new generation) runs it again. Null when the resource has not succeeded at this generation, or when
    /// its status has no artifact yet (the Job completed before its pod's result was seen: the next look reads it).
    /// </summary>
    public static Decision<TStatus>? Finished<TStatus>(IKubernetesObject<V1ObjectMeta> owner, TStatus? status, long? observedGeneration, string? phase,
        IReadOnlyList<V1Condition>? conditions, ArtifactStatus? artifact)
        where TStatus : class
    {
        ArgumentNullException.ThrowIfNull(owner);
        if (status is null || artifact is null || observedGeneration is null || observedGeneration != owner.Metadata.Generation || phase != SucceededPhase
            || !Conditions.IsTrue(conditions, Conditions.Types.Ready))
        {
            return null;
        }

        var ready = conditions!.First(c => c.Type == Conditions.Types.Ready);
        return new Decision<TStatus>
        {
            Status = status,
            Outcome = new Outcome.Succeeded(ready.Message ?? ""),
            Result = ReconcileResult.Done,
        };
    }

    /// <summary><c>status.phase</c> of finished work.</summary>
    public const string SucceededPhase = "Succeeded";

    /// <summary>The referenced QuantizedModel as a dependency: null when it is Ready for its generation, else what to wait for.</summary>
    public static Outcome? Waiting(QuantizedModel? model, string reference, string field) =>
        model is null
            ? new Outcome.InProgress(Conditions.Reasons.WaitingForDependency, $"{field}: QuantizedModel {reference} not found")
            : Conditions.IsTrue(model.Status?.Conditions, Conditions.Types.Ready) && model.Status?.ObservedGeneration == model.Metadata.Generation
                ? null
                : new Outcome.InProgress(Conditions.Reasons.WaitingForDependency, $"{field}: waiting for QuantizedModel {reference} to be Ready");

    /// <summary>
    /// R9: an object with one of the children's names that this owner does not control is never adopted or mutated;
    /// the owner stalls with reason <see cref="StatusReasons.ChildConflict"/>, naming the object and its controller.
    /// </summary>
    public static Outcome.Stalled? ChildConflict(IKubernetesObject<V1ObjectMeta> owner, params IKubernetesObject<V1ObjectMeta>?[] children)
    {
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentNullException.ThrowIfNull(children);
        foreach (var child in children)
        {
            if (child is null || ChildMeta.IsControlledBy(child, owner))
            {
                continue;
            }

            var kind = child.Kind ?? child.GetType().Name[2..];
            var controller = child.Metadata.OwnerReferences?.FirstOrDefault(r => r.Controller == true);
            var by = controller is null ? "it has no controller" : $"it is controlled by {controller.Kind} {controller.Name}";
            return new Outcome.Stalled(StatusReasons.ChildConflict,
                $"{kind} {child.Metadata.NamespaceProperty}/{child.Metadata.Name} already exists and {by}, not by this {owner.Kind ?? "resource"}; it is left untouched: delete or rename it");
        }

        return null;
    }

    /// <summary>
    /// A source whose architecture an inspect Job reads (any kind): the Job to apply, and the outcome that blocks the
    /// rest while it runs: <see cref="StatusReasons.Inspecting"/>, or <c>Stalled</c> with the inspect pod's diagnosis.
    /// </summary>
    public static (V1Job Job, Outcome Blocker) Inspect(IKubernetesObject<V1ObjectMeta> owner, ModelSource source, string? image,
        IReadOnlyList<V1Pod> inspectPods, DecideContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var job = InspectJobBuilder.Build(owner, source, image, context.Options, context.Catalog);
        var inspect = PodDiagnosis.Of(inspectPods);
        Outcome blocker = inspect is PodDiagnosis.Healthy
            ? new Outcome.InProgress(StatusReasons.Inspecting, "reading the model's config.json with an inspect Job")
            : new Outcome.Stalled(inspect.Reason, $"inspect: {inspect.Message}");
        return (job, blocker);
    }

    /// <summary>An outcome for an architecture that could not be resolved; null when it was.</summary>
    public static Outcome? Blocker(ArchitectureResolution resolution) => resolution switch
    {
        ArchitectureResolution.Failed { Terminal: true } f => new Outcome.Stalled(f.Reason, f.Message),
        ArchitectureResolution.Failed f => new Outcome.InProgress(f.Reason, f.Message),
        ArchitectureResolution.NeedsInspect => new Outcome.InProgress(Conditions.Reasons.WaitingForDependency, "waiting for the base model's inspect Job"),
        _ => null,
    };

    /// <summary>GPU time of a started Job on a GPU placement (until its completion, else until now).</summary>
    public static GpuTime? GpuTimeOf(V1Job? job, WorkloadPlacement? placement, DateTimeOffset now) =>
        job?.Status?.StartTime is { } start && placement is { OnGpu: true }
            ? new GpuTime(placement.GpusPerReplica, new DateTimeOffset(start, TimeSpan.Zero),
                job.Status.CompletionTime is { } done ? new DateTimeOffset(done, TimeSpan.Zero) : now)
            : null;

    /// <summary>The result for an outcome: explicit requeues; only what a spec change alone can fix is terminal.</summary>
    public static ReconcileResult Result(Outcome outcome, PodDiagnosis diagnosis, TimeSpan running, TimeSpan timeout, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(outcome);
        return outcome switch
        {
            Outcome.Succeeded => ReconcileResult.Done,
            // Other stalls are looked at again (pod events also bring them back), so a late pod status can still refine the reason.
            Outcome.Stalled s when s.Reason is Conditions.Reasons.InvalidSpec or Conditions.Reasons.InsufficientGpuMemory or Conditions.Reasons.OverBudget
                => ReconcileResult.Terminal(s.Reason, s.Message),
            Outcome.Stalled => ReconcileResult.RequeueAfter(PollBlocked),
            _ when diagnosis is PodDiagnosis.Unschedulable waiting => ReconcileResult.RequeueAfter(PendingDelay(waiting, timeout, now)),
            _ => ReconcileResult.RequeueAfter(running),
        };
    }

    /// <summary>
    /// When to look at an unschedulable pod again: when its scheduling timeout runs out (at least 1 s, at most a
    /// minute), so the fallback fires on time without polling.
    /// </summary>
    private static TimeSpan PendingDelay(PodDiagnosis.Unschedulable waiting, TimeSpan timeout, DateTimeOffset now)
    {
        var left = waiting.Since + timeout - now;
        return TimeSpan.FromTicks(Math.Clamp(left.Ticks, TimeSpan.FromSeconds(1).Ticks, PollRunning.Ticks));
    }
}
