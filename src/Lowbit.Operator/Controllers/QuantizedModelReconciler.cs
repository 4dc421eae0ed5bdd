using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Api.Validation;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Controllers;

/// <summary>What a QuantizedModel's reconcile observed: its quantize and inspect Jobs with their pods, and the architecture.</summary>
public sealed record QuantizedModelObservation
{
    public V1Job? Job { get; init; }

    public IReadOnlyList<V1Pod> Pods { get; init; } = [];

    public V1Job? InspectJob { get; init; }

    public IReadOnlyList<V1Pod> InspectPods { get; init; } = [];

    /// <summary>Null when the spec is invalid (nothing was read).</summary>
    public ArchitectureResolution? Architecture { get; init; }

    /// <summary>The tail of the running quantize pod's log, with timestamps (the progress watchdog's input).</summary>
    public string? LogTail { get; init; }
}

/// <summary>
/// QuantizedModel → architecture (annotation, preset, config.json, or an inspect Job) → plan (mode quantize) →
/// the quantize Job on the chosen placement → status with artifact and quality from the engine's result.
/// </summary>
public sealed class QuantizedModelReconciler(ReconcileServices services)
    : WorkloadReconciler<QuantizedModel, QuantizedModelStatus, QuantizedModelObservation>(services)
{
    /// <summary>The whole decision for a QuantizedModel (pure).</summary>
    public static Decision<QuantizedModelStatus> Decide(QuantizedModel model, QuantizedModelObservation observed, DecideContext context)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(observed);
        ArgumentNullException.ThrowIfNull(context);
        if (DecisionParts.Finished(model, model.Status, model.Status?.ObservedGeneration, model.Status?.Phase, model.Status?.Conditions, model.Status?.Artifact) is { } finished)
        {
            return finished;
        }

        var work = new WorkloadObservation { Job = observed.Job, Pods = observed.Pods, Diagnosis = PodDiagnosis.Of(observed.Pods) };
        var children = new List<V1Job>();
        PlanResult? plan = null;
        Placing placing = new(null, null);
        var blocker = SpecError.First(QuantizedModelSpecValidator.Validate(model.Spec))?.ToOutcome();
        switch (blocker is null ? observed.Architecture : null)
        {
            case ArchitectureResolution.NeedsInspect:
                var (inspectJob, inspecting) = DecisionParts.Inspect(model, model.Spec.Source, model.Spec.Image, observed.InspectPods, context);
                children.Add(inspectJob);
                blocker = inspecting;
                break;
            case ArchitectureResolution.Failed failed:
                blocker = DecisionParts.Blocker(failed);
                break;
            case ArchitectureResolution.Resolved resolved:
                (plan, var planError) = Planning.CheckQuantizeHead(model.Spec, resolved.Architecture) is { } headError
                    ? (null, headError)
                    : DecisionParts.Plan(() => Planning.Quantize(model, resolved.Architecture, context.Catalog));
                var current = DecisionParts.CurrentIndex(observed.Job, model.Metadata.Generation, model.Status?.ObservedGeneration, model.Status?.Plan?.PlacementIndex);
                (placing, var error) = DecisionParts.Place(plan, planError, model.Spec.Scheduling.Timeout, current, work.Diagnosis, context.Now,
                    p => QuantizeJobBuilder.Check(model, p));
                blocker = error?.ToOutcome();
                if (blocker is null && placing.Placement is { } placement)
                {
                    children.Add(QuantizeJobBuilder.Build(model, placement, context.Options));
                    blocker = StatusParts.JobFinished(observed.Job) is null
                        ? ProgressWatchdog.Check(observed.LogTail, observed.Pods, context.Now, context.Options.ProgressTimeout)
                        : null;
                }

                break;
        }

        work = work with { Blocker = blocker, PlacementChange = placing.Change };
        // Whatever a foreign object of a child's name shows is not ours to report.
        if (DecisionParts.ChildConflict(model, observed.Job, observed.InspectJob) is { } conflict)
        {
            work = new WorkloadObservation { Blocker = conflict };
        }

        var (status, outcome) = QuantizedModelStatusCalculator.Evaluate(model, plan, placing.Placement, work, context.Now);
        var built = children.Count > 0 && blocker is null;
        var (timeout, _) = Planning.SchedulingTimeout(model.Spec.Scheduling.Timeout);
        return new Decision<QuantizedModelStatus>
        {
            Children = children,
            Status = status,
            Outcome = outcome,
            Result = DecisionParts.Result(outcome, work.Diagnosis, DecisionParts.PollRunning, timeout, context.Now),
            Placement = built ? placing.Placement : null,
            GpuTime = built ? DecisionParts.GpuTimeOf(observed.Job, placing.Placement, context.Now) : null,
        };
    }

    protected override string Kind => QuantizedModel.KindName;

    protected override QuantizedModelObservation Observe(QuantizedModel obj)
    {
        var job = Child<V1Job>(obj, QuantizeJobBuilder.Role);
        var inspect = Child<V1Job>(obj, InspectJobBuilder.Role);
        return new QuantizedModelObservation { Job = job, Pods = PodsOf(job), InspectJob = inspect, InspectPods = PodsOf(inspect) };
    }

    protected override async Task<QuantizedModelObservation> ResolveAsync(QuantizedModel obj, QuantizedModelObservation observed, CancellationToken cancellationToken)
    {
        if (QuantizedModelSpecValidator.Validate(obj.Spec).Count > 0
            || DecisionParts.Finished(obj, obj.Status, obj.Status?.ObservedGeneration, obj.Status?.Phase, obj.Status?.Conditions, obj.Status?.Artifact) is not null)
        {
            return observed;
        }

        var architecture = await Services.Architectures.ResolveAsync(obj, cancellationToken).ConfigureAwait(false);
        var logTail = architecture is ArchitectureResolution.Resolved ? await LogTailAsync(observed.Job, observed.Pods, cancellationToken).ConfigureAwait(false) : null;
        return observed with { Architecture = architecture, LogTail = logTail };
    }

    protected override Decision<QuantizedModelStatus> ToDecision(QuantizedModel obj, QuantizedModelObservation observed, DecideContext context) =>
        Decide(obj, observed, context);

    protected override QuantizedModelStatus? StatusOf(QuantizedModel obj) => obj.Status;

    protected override void SetStatus(QuantizedModel obj, QuantizedModelStatus status) => obj.Status = status;

    protected override IReadOnlyList<V1Condition>? ConditionsOf(QuantizedModelStatus? status) => status?.Conditions;
}
