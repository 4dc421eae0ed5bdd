using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Api.Validation;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Operator.LeaderWorkerSets;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Controllers;

/// <summary>What an InferenceEndpoint's reconcile observed: its Deployment and pods, its inspect Job, the model and adapters it references, the architecture.</summary>
public sealed record InferenceEndpointObservation
{
    public V1Deployment? Deployment { get; init; }

    /// <summary>The LeaderWorkerSet of a multi-node placement (same name as the Deployment).</summary>
    public LeaderWorkerSet? LeaderWorkerSet { get; init; }

    /// <summary>Whether the cluster serves the LeaderWorkerSet API (its CRD is installed).</summary>
    public bool LeaderWorkerSetServed { get; init; } = true;

    public V1Service? Service { get; init; }

    /// <summary>The serving pods of every placement (a <c>Decide</c> looks at the current placement's).</summary>
    public IReadOnlyList<V1Pod> Pods { get; init; } = [];

    /// <summary>The inspect Job (a PVC source without the architecture annotation, or a gated repo).</summary>
    public V1Job? InspectJob { get; init; }

    public IReadOnlyList<V1Pod> InspectPods { get; init; } = [];

    /// <summary>The referenced QuantizedModel, if the spec names one and it is cached.</summary>
    public QuantizedModel? Model { get; init; }

    /// <summary>The adapters' FineTuneJobs in spec order (null where one is not cached).</summary>
    public IReadOnlyList<FineTuneJob?> Adapters { get; init; } = [];

    /// <summary>Null when nothing was read (invalid spec, a dependency not Ready).</summary>
    public ArchitectureResolution? Architecture { get; init; }
}

/// <summary>
/// InferenceEndpoint → model and adapters (Ready QuantizedModel / FineTuneJobs, or a source; a PVC source's architecture
/// from an inspect Job) → plan (context,
/// concurrency, runtime, SLO, budget) → Deployment (replicas from spec: the scale subresource) and Service →
/// status with readiness, URL, scale status and cost.
/// </summary>
public sealed class InferenceEndpointReconciler(ReconcileServices services)
    : WorkloadReconciler<InferenceEndpoint, InferenceEndpointStatus, InferenceEndpointObservation>(services)
{
    /// <summary>The whole decision for an InferenceEndpoint (pure).</summary>
    public static Decision<InferenceEndpointStatus> Decide(InferenceEndpoint endpoint, InferenceEndpointObservation observed, DecideContext context)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(observed);
        ArgumentNullException.ThrowIfNull(context);
        var work = new WorkloadObservation { Deployment = observed.Deployment, LeaderWorkerSet = observed.LeaderWorkerSet };
        PlanResult? plan = null;
        Placing placing = new(null, null);
        var children = new List<IKubernetesObject<V1ObjectMeta>>();
        var deletions = new List<IKubernetesObject<V1ObjectMeta>>();
        var events = new List<DecisionEvent>();
        var (adapters, adaptersWaiting) = Adapters(endpoint, observed.Adapters);
        var blocker = SpecError.First(InferenceEndpointSpecValidator.Validate(endpoint.Spec))?.ToOutcome()
            ?? ModelWaiting(endpoint, observed.Model)
            ?? adaptersWaiting;
        switch (blocker is null ? observed.Architecture : null)
        {
            case ArchitectureResolution.NeedsInspect when endpoint.Spec.Model.Source is { } source:
                // The serving image override may not hold lowbit-engine (vLLM, llama.cpp): only the Lowbit runtime's is used.
                var image = endpoint.Spec.Runtime == ServingRuntime.Lowbit ? endpoint.Spec.Image : null;
                (var inspectJob, blocker) = DecisionParts.Inspect(endpoint, source, image, observed.InspectPods, context);
                children.Add(inspectJob);
                break;
            case { } architecture:
                blocker = DecisionParts.Blocker(architecture);
                break;
        }

        if (blocker is null && observed.Architecture is ArchitectureResolution.Resolved resolved)
        {
            (plan, var planError) = DecisionParts.Plan(() => Planning.Inference(endpoint, observed.Model, resolved.Architecture, context.Catalog));
            var current = ChildMeta.PlacementIndex(observed.LeaderWorkerSet, endpoint.Metadata.Generation)
                ?? DecisionParts.CurrentIndex(observed.Deployment, endpoint.Metadata.Generation, endpoint.Status?.ObservedGeneration, endpoint.Status?.Plan?.PlacementIndex);
            var running = plan is null ? null : Planning.Choose(plan, current);
            var pods = running is null ? [] : observed.Pods.Where(p => ChildMeta.Annotation(p, Labels.PlacementAnnotation) == running.Annotation).ToList();
            work = work with { Pods = pods, Diagnosis = PodDiagnosis.Of(pods) };
            var served = new ServedModel { QuantizedModel = observed.Model, Adapters = adapters };
            (placing, var error) = DecisionParts.Place(plan, planError, endpoint.Spec.Scheduling.Timeout, current, work.Diagnosis, context.Now,
                _ => InferenceDeploymentBuilder.Check(endpoint, served));
            blocker = error?.ToOutcome();
            if (blocker is null && placing.Placement is { MultiNode: true } group)
            {
                blocker = Group(endpoint, served, group, observed, plan!, context, children, deletions, events);
            }
            else if (blocker is null && placing.Placement is { } placement)
            {
                if (Owned(observed.LeaderWorkerSet, endpoint) is { } previous)
                {
                    deletions.Add(previous);
                    events.Add(new DecisionEvent("Normal", StatusReasons.ServingKindChanged,
                        $"serving with Deployment {ChildMeta.Name(endpoint, InferenceDeploymentBuilder.Role)} on {placement.Label}; deleting LeaderWorkerSet {previous.Metadata.Name}"));
                }

                var rollout = DeploymentRollout.Decide(endpoint, InferenceDeploymentBuilder.Build(endpoint, served, placement, context.Options),
                    observed.Deployment is { } serving && ChildMeta.IsControlledBy(serving, endpoint) ? serving : null);
                if (rollout.Child is { } deployment)
                {
                    children.Add(deployment);
                }

                if (rollout.Changed.Count > 0)
                {
                    events.Add(new DecisionEvent("Normal", StatusReasons.Rolling,
                        $"rolling Deployment {rollout.Child!.Metadata.Name}: its pod template changed in {string.Join(", ", rollout.Changed)} (generation {endpoint.Metadata.Generation}, placement {placement.Label})"));
                }
                children.Add(InferenceServiceBuilder.Build(endpoint));
            }
        }

        work = work with { Blocker = blocker, PlacementChange = placing.Change };
        // Whatever a foreign object of a child's name shows is not ours to report.
        if (DecisionParts.ChildConflict(endpoint, observed.Deployment, observed.LeaderWorkerSet, observed.Service, observed.InspectJob) is { } conflict)
        {
            work = new WorkloadObservation { Blocker = conflict };
        }

        var url = InferenceDeploymentBuilder.Url(endpoint, context.Options);
        var (status, outcome) = InferenceEndpointStatusCalculator.Evaluate(endpoint, plan, placing.Placement, work, url, context.Now);
        var (timeout, _) = Planning.SchedulingTimeout(endpoint.Spec.Scheduling.Timeout);
        return new Decision<InferenceEndpointStatus>
        {
            Children = children,
            Deletions = deletions,
            Status = status,
            Outcome = outcome,
            Result = DecisionParts.Result(outcome, work.Diagnosis, DecisionParts.PollRunning, timeout, context.Now),
            Placement = children.Count > 0 ? placing.Placement : null,
            Events = events,
        };
    }

    /// <summary>
    /// A multi-node placement (vLLM): the LeaderWorkerSet and a Service selecting its leaders, replacing a Deployment
    /// of an earlier placement; or, when the cluster does not serve the LeaderWorkerSet API, the outcome that says so.
    /// </summary>
    private static Outcome? Group(InferenceEndpoint endpoint, ServedModel served, WorkloadPlacement group, InferenceEndpointObservation observed, PlanResult plan,
        DecideContext context, List<IKubernetesObject<V1ObjectMeta>> children, List<IKubernetesObject<V1ObjectMeta>> deletions, List<DecisionEvent> events)
    {
        if (!observed.LeaderWorkerSetServed)
        {
            return new Outcome.Stalled(StatusReasons.LeaderWorkerSetNotInstalled, LeaderWorkerSetMissing(group, plan));
        }

        var rollout = DeploymentRollout.Decide(endpoint, InferenceLeaderWorkerSetBuilder.Build(endpoint, served, group, context.Options), Owned(observed.LeaderWorkerSet, endpoint));
        if (rollout.Child is { } set)
        {
            children.Add(set);
        }

        if (rollout.Changed.Count > 0 && rollout.Child is not null)
        {
            events.Add(new DecisionEvent("Normal", StatusReasons.Rolling,
                $"rolling LeaderWorkerSet {rollout.Child.Metadata.Name}: its pod templates changed in {string.Join(", ", rollout.Changed)} (generation {endpoint.Metadata.Generation}, placement {group.Label})"));
        }

        children.Add(InferenceServiceBuilder.Build(endpoint, leadersOnly: true));
        if (Owned(observed.Deployment, endpoint) is { } previous)
        {
            deletions.Add(previous);
            events.Add(new DecisionEvent("Normal", StatusReasons.ServingKindChanged,
                $"serving with LeaderWorkerSet {ChildMeta.Name(endpoint, InferenceDeploymentBuilder.Role)} on {group.Label}; deleting Deployment {previous.Metadata.Name}"));
        }

        return null;
    }

    /// <summary>What to do when a placement needs the LeaderWorkerSet API and the cluster lacks it: install it, or make one node enough.</summary>
    public static string LeaderWorkerSetMissing(WorkloadPlacement group, PlanResult plan)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(plan);
        var oneNode = plan.Options
            .OfType<DoesNotFit>()
            .Where(o => o.Nodes == 1 && o.Reason is RejectionReason.GpuTypeNotAllowed or RejectionReason.OverBudget && o.PerDevice.Total <= o.UsablePerDevice
                && o.NodeType.Kind == DeviceKind.Gpu && PlacementPlanner.DividesHeads(plan.Request.Model, o.TensorParallel))
            .Select(o => $"{o.Label} (${o.HourlyUsd.ToString("0.00", System.Globalization.CultureInfo.InvariantCulture)}/h, {o.Reason})")
            .Distinct()
            .Take(3)
            .ToList();
        var alternative = oneNode.Count > 0
            ? $"or let one node serve it: spec.budget.allowedGpuTypes (and spec.budget.maxHourlyCostUsd) admitting one of {string.Join(", ", oneNode)}"
            : "or make the model fit one node: no catalog node type holds it on one node now (serve a quantized model through spec.model.quantizedModelRef, or lower spec.maxContextLength / spec.maxConcurrency)";
        return $"placement {group.Label} spans {group.Nodes} nodes and is served by a LeaderWorkerSet, but this cluster does not serve leaderworkerset.x-k8s.io/v1: "
            + $"install LeaderWorkerSet (https://lws.sigs.k8s.io; the operator looks again every few minutes), {alternative}";
    }

    /// <summary>The observed child when this endpoint controls it (a foreign namesake is never deleted).</summary>
    private static T? Owned<T>(T? child, InferenceEndpoint endpoint)
        where T : class, IKubernetesObject<V1ObjectMeta>
        => child is not null && ChildMeta.IsControlledBy(child, endpoint) ? child : null;

    protected override string Kind => InferenceEndpoint.KindName;

    protected override InferenceEndpointObservation Observe(InferenceEndpoint obj)
    {
        var ns = obj.Metadata.NamespaceProperty;
        var reference = obj.Spec.Model.QuantizedModelRef;
        var inspect = Child<V1Job>(obj, InspectJobBuilder.Role);
        return new InferenceEndpointObservation
        {
            Deployment = Child<V1Deployment>(obj, InferenceDeploymentBuilder.Role),
            LeaderWorkerSet = Child<LeaderWorkerSet>(obj, InferenceDeploymentBuilder.Role),
            LeaderWorkerSetServed = Services.Cache.IsServed<LeaderWorkerSet>(),
            Service = Child<V1Service>(obj, InferenceDeploymentBuilder.Role),
            InspectJob = inspect,
            InspectPods = PodsOf(inspect),
            Pods = Services.Cache.List<V1Pod>(ns).Where(p => ChildMeta.IsComponentOf(p, obj, InferenceDeploymentBuilder.Role)).ToList(),
            Model = reference is not null && Services.Cache.TryGet<QuantizedModel>(new ObjectKey(ns, reference.Name), out var model) ? model : null,
            Adapters = (obj.Spec.Adapters ?? [])
                .Select(a => Services.Cache.TryGet<FineTuneJob>(new ObjectKey(ns, a.FineTuneJobRef.Name), out var job) ? job : null)
                .ToList(),
        };
    }

    /// <summary>The architecture, once the spec is valid and the model and adapters are Ready.</summary>
    protected override async Task<InferenceEndpointObservation> ResolveAsync(InferenceEndpoint obj, InferenceEndpointObservation observed, CancellationToken cancellationToken) =>
        InferenceEndpointSpecValidator.Validate(obj.Spec).Count > 0 || ModelWaiting(obj, observed.Model) is not null || Adapters(obj, observed.Adapters).Waiting is not null
            ? observed
            : observed with
            {
                Architecture = await Services.Architectures.ResolveReferenceAsync(obj, observed.Model, obj.Spec.Model.Source, cancellationToken).ConfigureAwait(false),
            };

    protected override Decision<InferenceEndpointStatus> ToDecision(InferenceEndpoint obj, InferenceEndpointObservation observed, DecideContext context) =>
        Decide(obj, observed, context);

    protected override InferenceEndpointStatus? StatusOf(InferenceEndpoint obj) => obj.Status;

    protected override void SetStatus(InferenceEndpoint obj, InferenceEndpointStatus status) => obj.Status = status;

    protected override IReadOnlyList<V1Condition>? ConditionsOf(InferenceEndpointStatus? status) => status?.Conditions;

    /// <summary>Endpoints also price their desired replicas.</summary>
    protected override void RecordCost(InferenceEndpoint obj, Decision<InferenceEndpointStatus> decision)
    {
        ArgumentNullException.ThrowIfNull(obj);
        ArgumentNullException.ThrowIfNull(decision);
        if (decision.Placement is { } placement)
        {
            Services.Cost.RecordEndpoint(obj.Metadata.NamespaceProperty, obj.Metadata.Name, placement, obj.Spec.Replicas);
        }

        base.RecordCost(obj, decision);
    }

    private static Outcome? ModelWaiting(InferenceEndpoint endpoint, QuantizedModel? model) =>
        endpoint.Spec.Model.QuantizedModelRef is { } reference
            ? DecisionParts.Waiting(model, reference.Name, "spec.model.quantizedModelRef")
            : null;

    /// <summary>The adapters' FineTuneJobs, all Ready, or the first one still in the way.</summary>
    private static (IReadOnlyList<(string Name, FineTuneJob Job)> Adapters, Outcome? Waiting) Adapters(InferenceEndpoint endpoint, IReadOnlyList<FineTuneJob?> observed)
    {
        var list = new List<(string, FineTuneJob)>();
        var specs = endpoint.Spec.Adapters ?? [];
        for (var i = 0; i < specs.Count; i++)
        {
            var job = i < observed.Count ? observed[i] : null;
            if (job is null || !Conditions.IsTrue(job.Status?.Conditions, Conditions.Types.Ready))
            {
                return (list, new Outcome.InProgress(Conditions.Reasons.WaitingForDependency,
                    $"spec.adapters[{i}].fineTuneJobRef: waiting for FineTuneJob {specs[i].FineTuneJobRef.Name} to be Ready"));
            }

            list.Add((specs[i].Name, job));
        }

        return (list, null);
    }
}
