using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Telemetry;
using Lowbit.Planner;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Controllers;

/// <summary>What the reconcile skeleton carries decisions out with (no logic of its own).</summary>
public sealed class ReconcileServices(
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
    public IKubernetes Client => client;

    public IObjectCache Cache => cache;

    public ChildApplier Children => children;

    public StatusWriter Status => status;

    public EventRecorder Events => events;

    public ArchitectureResolver Architectures => architectures;

    public CostMetrics Cost => cost;

    public DecideContext Context() => new() { Catalog = catalog, Options = options.Value, Now = time.GetUtcNow() };
}

/// <summary>
/// The one reconcile of every kind, top to bottom: observe (caches only) → resolve the model's architecture (the
/// one I/O read) → <c>Decide</c> (pure) → apply the children → write the status once, if it changed → return the
/// decision's result. A kind supplies the three steps; nothing here decides.
/// </summary>
public abstract class WorkloadReconciler<T, TStatus, TObserved>(ReconcileServices services) : IReconciler<T>
    where T : class, IKubernetesObject<V1ObjectMeta>
    where TStatus : class
{
    protected ReconcileServices Services => services;

    /// <summary>The kind's name in metrics and Events.</summary>
    protected abstract string Kind { get; }

    /// <summary>What the caches hold about the resource's children and references.</summary>
    protected abstract TObserved Observe(T obj);

    /// <summary>Adds the architecture (and what else needs a read) to the observation, when the spec gets that far.</summary>
    protected abstract Task<TObserved> ResolveAsync(T obj, TObserved observed, CancellationToken cancellationToken);

    /// <summary>The kind's pure <c>Decide</c>.</summary>
    protected abstract Decision<TStatus> ToDecision(T obj, TObserved observed, DecideContext context);

    protected abstract TStatus? StatusOf(T obj);

    protected abstract void SetStatus(T obj, TStatus status);

    public async Task<ReconcileResult> ReconcileAsync(T obj, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(obj);
        var (ns, name) = (obj.Metadata.NamespaceProperty, obj.Metadata.Name);
        if (obj.Metadata.DeletionTimestamp is not null)
        {
            services.Cost.Forget(Kind, ns, name);
            return ReconcileResult.Done;
        }

        var observed = await ResolveAsync(obj, Observe(obj), cancellationToken).ConfigureAwait(false);
        var decision = ToDecision(obj, observed, services.Context());

        var replaced = false;
        foreach (var child in decision.Children)
        {
            replaced |= await services.Children.ApplyAsync(obj, child, cancellationToken).ConfigureAwait(false) == ApplyOutcome.Replaced;
        }

        foreach (var child in decision.Deletions)
        {
            await services.Children.DeleteAsync(obj, child, cancellationToken).ConfigureAwait(false);
        }

        foreach (var ev in decision.Events)
        {
            await services.Events.RecordAsync(obj, ev.Type, ev.Reason, ev.Message, cancellationToken).ConfigureAwait(false);
        }

        RecordCost(obj, decision);
        var before = StatusOf(obj);
        if (await services.Status.WriteAsync(obj, before, decision.Status, SetStatus, cancellationToken).ConfigureAwait(false))
        {
            await services.Events.RecordTransitionAsync(obj, ConditionsOf(before), ConditionsOf(decision.Status), cancellationToken).ConfigureAwait(false);
        }

        return replaced ? ReconcileResult.RequeueAfter(DecisionParts.AfterReplace) : decision.Result;
    }

    /// <summary>The status's conditions (every Lowbit status has them).</summary>
    protected abstract IReadOnlyList<V1Condition>? ConditionsOf(TStatus? status);

    /// <summary>Cost gauges for the placement the children run on, and the GPU-hours counter.</summary>
    protected virtual void RecordCost(T obj, Decision<TStatus> decision)
    {
        ArgumentNullException.ThrowIfNull(obj);
        ArgumentNullException.ThrowIfNull(decision);
        var (ns, name) = (obj.Metadata.NamespaceProperty, obj.Metadata.Name);
        if (decision.Placement is { } placement)
        {
            services.Cost.RecordPlan(Kind, ns, name, placement);
        }

        if (decision.GpuTime is { } gpu)
        {
            services.Cost.RecordJobGpuHours(Kind, ns, name, gpu.Gpus, gpu.Start, gpu.End);
        }
    }

    /// <summary>
    /// The last 50 lines of the running pod of <paramref name="child"/>, with the kubelet's timestamps (engine progress
    /// lines and the progress watchdog's clock); null when no pod runs or the log cannot be read.
    /// </summary>
    protected async Task<string?> LogTailAsync(V1Job? child, IReadOnlyList<V1Pod> pods, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(pods);
        var running = pods.FirstOrDefault(p => p.Status?.Phase == "Running");
        if (child is null || running is null)
        {
            return null;
        }

        try
        {
            await using var stream = await services.Client.CoreV1.ReadNamespacedPodLogAsync(running.Metadata.Name, running.Metadata.NamespaceProperty,
                container: PodTemplates.ContainerName, tailLines: 50, timestamps: true, cancellationToken: cancellationToken).ConfigureAwait(false);
            using var reader = new StreamReader(stream);
            return await reader.ReadToEndAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (k8s.Autorest.HttpOperationException)
        {
            return null;
        }
    }

    /// <summary>The cached child named <c>&lt;owner&gt;-&lt;role&gt;</c>.</summary>
    protected TChild? Child<TChild>(T owner, string role)
        where TChild : class, IKubernetesObject<V1ObjectMeta>
        => services.Cache.TryGet<TChild>(new ObjectKey(owner.Metadata.NamespaceProperty, ChildMeta.Name(owner, role)), out var child) ? child : null;

    /// <summary>Cached pods of the Job <paramref name="job"/> (by its UID: pods of a replaced Job do not count).</summary>
    protected IReadOnlyList<V1Pod> PodsOf(V1Job? job) => job is null
        ? []
        : services.Cache.List<V1Pod>(job.Metadata.NamespaceProperty).Where(p => p.Metadata.OwnerReferences?.Any(r => r.Uid == job.Metadata.Uid) == true).ToList();
}
