using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Status;
using Lowbit.Operator.Telemetry;
using Lowbit.Planner;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Controllers;

/// <summary>What the three reconcilers share: the caches, the writers, the clock, the catalog and the metrics.</summary>
public sealed class ReconcileKit(
    IKubernetes client,
    IObjectCache cache,
    ChildApplier children,
    StatusWriter status,
    EventRecorder events,
    ArchitectureResolver architectures,
    TimeProvider time,
    IOptions<WorkloadOptions> options,
    GpuCatalog catalog,
    CostMetrics cost)
{
    /// <summary>Default <c>spec.scheduling.timeout</c>.</summary>
    public static readonly TimeSpan DefaultSchedulingTimeout = TimeSpan.FromMinutes(10);

    public static readonly TimeSpan PollRunning = TimeSpan.FromSeconds(60);

    public static readonly TimeSpan PollBlocked = TimeSpan.FromMinutes(5);

    /// <summary>
    /// When to look at an unschedulable pod again: when its scheduling timeout runs out (at least 1 s, at most
    /// a minute), so the fallback fires on time without polling.
    /// </summary>
    public TimeSpan PendingDelay(PodDiagnosis diagnosis, string? timeout)
    {
        if (diagnosis is not PodDiagnosis.Unschedulable waiting)
        {
            return PollRunning;
        }

        var left = waiting.Since + Planning.Duration(timeout, DefaultSchedulingTimeout) - time.GetUtcNow();
        return TimeSpan.FromTicks(Math.Clamp(left.Ticks, TimeSpan.FromSeconds(1).Ticks, PollRunning.Ticks));
    }

    public IKubernetes Client => client;

    public IObjectCache Cache => cache;

    public ChildApplier Children => children;

    public StatusWriter Status => status;

    public EventRecorder Events => events;

    public ArchitectureResolver Architectures => architectures;

    public TimeProvider Time => time;

    public WorkloadOptions Options => options.Value;

    public GpuCatalog Catalog => catalog;

    public CostMetrics Cost => cost;

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

    /// <summary>The cached child of a kind named <c>&lt;owner&gt;-&lt;role&gt;</c>.</summary>
    public T? Child<T>(IKubernetesObject<V1ObjectMeta> owner, string role)
        where T : class, IKubernetesObject<V1ObjectMeta>
        => cache.TryGet<T>(new ObjectKey(owner.Metadata.NamespaceProperty, ChildMeta.Name(owner, role)), out var child) ? child : null;

    /// <summary>Cached pods of the Job <paramref name="job"/> (by its UID: pods of a replaced Job do not count).</summary>
    public IReadOnlyList<V1Pod> PodsOf(V1Job? job) => job is null
        ? []
        : cache.List<V1Pod>(job.Metadata.NamespaceProperty).Where(p => p.Metadata.OwnerReferences?.Any(r => r.Uid == job.Metadata.Uid) == true).ToList();

    /// <summary>Cached pods of an owner's component on one placement (pods of an older placement do not count).</summary>
    public IReadOnlyList<V1Pod> PodsOf(IKubernetesObject<V1ObjectMeta> owner, string component, string placementAnnotation) =>
        cache.List<V1Pod>(owner.Metadata.NamespaceProperty)
            .Where(p => ChildMeta.IsComponentOf(p, owner, component) && ChildMeta.Annotation(p, Labels.PlacementAnnotation) == placementAnnotation)
            .ToList();

    /// <summary>
    /// The placement to run on: the current one (from the child of this generation, else status), moved on by the
    /// failure policy. <paramref name="change"/> describes a move made now (for status and an Event).
    /// </summary>
    public WorkloadPlacement? Place(PlanResult plan, int current, PodDiagnosis diagnosis, string? timeout, out string? change)
    {
        change = null;
        var next = Planning.NextIndex(plan, current, diagnosis, time.GetUtcNow(), Planning.Duration(timeout, DefaultSchedulingTimeout));
        if (next is null)
        {
            return null;
        }

        var placement = Planning.Choose(plan, next.Value);
        if (next != current && placement is not null)
        {
            var from = Planning.Choose(plan, current);
            change = $"moved from {from?.Label ?? "placement " + current} to {placement.Label} ({diagnosis.Reason})";
        }

        return placement;
    }

    /// <summary>The placement index a resource runs on now.</summary>
    public static int CurrentIndex(IKubernetesObject<V1ObjectMeta>? child, long? generation, long? observedGeneration, int? statusIndex) =>
        ChildMeta.PlacementIndex(child, generation) ?? (observedGeneration == generation ? statusIndex ?? 0 : 0);

    /// <summary>Records an Event when the Ready condition changed reason or status (Warning for failures).</summary>
    public Task RecordTransitionAsync(IKubernetesObject<V1ObjectMeta> obj, IReadOnlyList<V1Condition>? before, IReadOnlyList<V1Condition>? after, CancellationToken cancellationToken)
    {
        var old = Conditions.Find(before, Conditions.Types.Ready);
        var now = Conditions.Find(after, Conditions.Types.Ready);
        if (now is null || (old?.Status == now.Status && old?.Reason == now.Reason))
        {
            return Task.CompletedTask;
        }

        var stalled = Conditions.IsTrue(after, Conditions.Types.Stalled);
        var warning = stalled || now.Reason is Conditions.Reasons.Unschedulable or Conditions.Reasons.OOMKilled or StatusReasons.GpuOutOfMemory;
        return events.RecordAsync(obj, warning ? "Warning" : "Normal", now.Reason, string.IsNullOrEmpty(now.Message) ? now.Reason : now.Message, cancellationToken);
    }

    /// <summary>The result a reconcile returns for an outcome (explicit requeues; terminal outcomes wait for a spec change).</summary>
    public static ReconcileResult ResultFor(Outcome outcome, PodDiagnosis diagnosis, ApplyOutcome applied, TimeSpan running, TimeSpan pending)
    {
        ArgumentNullException.ThrowIfNull(outcome);
        if (applied == ApplyOutcome.Replaced)
        {
            return ReconcileResult.RequeueAfter(TimeSpan.FromSeconds(1));
        }

        return outcome switch
        {
            Outcome.Succeeded => ReconcileResult.Done,
            // Only what a spec change alone can fix is terminal; other stalls are looked at again (pod events
            // also bring them back), so a late pod status can still refine the reason.
            Outcome.Stalled s when s.Reason is Conditions.Reasons.InvalidSpec or Conditions.Reasons.InsufficientGpuMemory or Conditions.Reasons.OverBudget
                => ReconcileResult.Terminal(s.Reason, s.Message),
            Outcome.Stalled => ReconcileResult.RequeueAfter(PollBlocked),
            _ when diagnosis is PodDiagnosis.Unschedulable => ReconcileResult.RequeueAfter(pending),
            _ => ReconcileResult.RequeueAfter(running),
        };
    }
}
