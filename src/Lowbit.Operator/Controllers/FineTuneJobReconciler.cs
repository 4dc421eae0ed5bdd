using k8s;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Api.Validation;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Controllers;

/// <summary>What a FineTuneJob's reconcile observed: its finetune and inspect Jobs with their pods, the base model, the architecture and the log tail.</summary>
public sealed record FineTuneJobObservation
{
    public V1Job? Job { get; init; }

    public IReadOnlyList<V1Pod> Pods { get; init; } = [];

    /// <summary>The inspect Job (a PVC source without the architecture annotation, or a gated repo).</summary>
    public V1Job? InspectJob { get; init; }

    public IReadOnlyList<V1Pod> InspectPods { get; init; } = [];

    /// <summary>The referenced QuantizedModel, if the spec names one and it is cached.</summary>
    public QuantizedModel? BaseModel { get; init; }

    /// <summary>Null when nothing was read (invalid spec, base model not Ready).</summary>
    public ArchitectureResolution? Architecture { get; init; }

    /// <summary>The tail of the running pod's log (the engine's JSON train lines).</summary>
    public string? LogTail { get; init; }
}

/// <summary>
/// FineTuneJob → base model (a Ready QuantizedModel or a source; a PVC source's architecture from an inspect Job) → plan (lora/qlora/full) → the finetune Job →
/// progress from the engine's JSON log lines while it runs → adapter artifact; every pod resumes from the run's latest checkpoint.
/// </summary>
public sealed class FineTuneJobReconciler(ReconcileServices services)
    : WorkloadReconciler<FineTuneJob, FineTuneJobStatus, FineTuneJobObservation>(services)
{
    public static readonly TimeSpan PollProgress = TimeSpan.FromSeconds(15);

    /// <summary>The whole decision for a FineTuneJob (pure).</summary>
    public static Decision<FineTuneJobStatus> Decide(FineTuneJob job, FineTuneJobObservation observed, DecideContext context)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(observed);
        ArgumentNullException.ThrowIfNull(context);
        if (DecisionParts.Finished(job, job.Status, job.Status?.ObservedGeneration, job.Status?.Phase, job.Status?.Conditions, job.Status?.Artifact) is { } finished)
        {
            return finished;
        }

        var work = new WorkloadObservation { Job = observed.Job, Pods = observed.Pods, Diagnosis = PodDiagnosis.Of(observed.Pods) };
        PlanResult? plan = null;
        Placing placing = new(null, null);
        V1Job? desired = null;
        V1Job? inspectJob = null;
        var blocker = SpecError.First(FineTuneJobSpecValidator.Validate(job.Spec))?.ToOutcome()
            ?? BaseModelWaiting(job, observed.BaseModel);
        switch (blocker is null ? observed.Architecture : null)
        {
            case ArchitectureResolution.NeedsInspect when job.Spec.BaseModel.Source is { } source:
                (inspectJob, blocker) = DecisionParts.Inspect(job, source, job.Spec.Image, observed.InspectPods, context);
                break;
            case { } architecture:
                blocker = DecisionParts.Blocker(architecture);
                break;
        }

        if (blocker is null && observed.Architecture is ArchitectureResolution.Resolved resolved)
        {
            (plan, var planError) = DecisionParts.Plan(() => Planning.FineTune(job, resolved.Architecture, context.Catalog));
            var current = DecisionParts.CurrentIndex(observed.Job, job.Metadata.Generation, job.Status?.ObservedGeneration, job.Status?.Plan?.PlacementIndex);
            (placing, var error) = DecisionParts.Place(plan, planError, job.Spec.Scheduling.Timeout, current, work.Diagnosis, context.Now,
                p => FineTuneJobBuilder.Check(job, observed.BaseModel, p));
            blocker = error?.ToOutcome();
            // Progress is read once placed (a builder's objection included), not when planning itself failed.
            work = error is null || placing.Placement is not null ? work with { LogTail = observed.LogTail } : work;
            blocker ??= StatusParts.JobFinished(observed.Job) is null
                ? ProgressWatchdog.Check(observed.LogTail, observed.Pods, context.Now, context.Options.ProgressTimeout)
                : null;
            if (blocker is null && placing.Placement is { } placement)
            {
                desired = FineTuneJobBuilder.Build(job, observed.BaseModel, placement, context.Options);
            }
        }

        work = work with { Blocker = blocker, PlacementChange = placing.Change };
        // Whatever a foreign object of a child's name shows is not ours to report.
        if (DecisionParts.ChildConflict(job, observed.Job, observed.InspectJob) is { } conflict)
        {
            work = new WorkloadObservation { Blocker = conflict };
        }

        var (status, outcome) = FineTuneJobStatusCalculator.Evaluate(job, plan, placing.Placement, work, context.Now);
        var (timeout, _) = Planning.SchedulingTimeout(job.Spec.Scheduling.Timeout);
        return new Decision<FineTuneJobStatus>
        {
            Children = inspectJob is not null ? [inspectJob] : desired is null ? [] : [desired],
            Status = status,
            Outcome = outcome,
            Result = DecisionParts.Result(outcome, work.Diagnosis, PollProgress, timeout, context.Now),
            Placement = desired is null ? null : placing.Placement,
            GpuTime = desired is null ? null : DecisionParts.GpuTimeOf(observed.Job, placing.Placement, context.Now),
        };
    }

    protected override string Kind => FineTuneJob.KindName;

    protected override FineTuneJobObservation Observe(FineTuneJob obj)
    {
        var job = Child<V1Job>(obj, FineTuneJobBuilder.Role);
        var inspect = Child<V1Job>(obj, InspectJobBuilder.Role);
        var reference = obj.Spec.BaseModel.QuantizedModelRef;
        var baseModel = reference is not null && Services.Cache.TryGet<QuantizedModel>(new ObjectKey(obj.Metadata.NamespaceProperty, reference.Name), out var model) ? model : null;
        return new FineTuneJobObservation { Job = job, Pods = PodsOf(job), InspectJob = inspect, InspectPods = PodsOf(inspect), BaseModel = baseModel };
    }

    /// <summary>The architecture, once the spec is valid and the base model Ready; then the running pod's log tail.</summary>
    protected override async Task<FineTuneJobObservation> ResolveAsync(FineTuneJob obj, FineTuneJobObservation observed, CancellationToken cancellationToken)
    {
        if (FineTuneJobSpecValidator.Validate(obj.Spec).Count > 0 || BaseModelWaiting(obj, observed.BaseModel) is not null
            || DecisionParts.Finished(obj, obj.Status, obj.Status?.ObservedGeneration, obj.Status?.Phase, obj.Status?.Conditions, obj.Status?.Artifact) is not null)
        {
            return observed;
        }

        var architecture = await Services.Architectures.ResolveReferenceAsync(obj, observed.BaseModel, obj.Spec.BaseModel.Source, cancellationToken).ConfigureAwait(false);
        var logTail = architecture is ArchitectureResolution.Resolved ? await LogTailAsync(observed.Job, observed.Pods, cancellationToken).ConfigureAwait(false) : null;
        return observed with { Architecture = architecture, LogTail = logTail };
    }

    protected override Decision<FineTuneJobStatus> ToDecision(FineTuneJob obj, FineTuneJobObservation observed, DecideContext context) =>
        Decide(obj, observed, context);

    protected override FineTuneJobStatus? StatusOf(FineTuneJob obj) => obj.Status;

    protected override void SetStatus(FineTuneJob obj, FineTuneJobStatus status) => obj.Status = status;

    protected override IReadOnlyList<V1Condition>? ConditionsOf(FineTuneJobStatus? status) => status?.Conditions;

    private static Outcome? BaseModelWaiting(FineTuneJob job, QuantizedModel? baseModel) =>
        job.Spec.BaseModel.QuantizedModelRef is { } reference
            ? DecisionParts.Waiting(baseModel, reference.Name, "spec.baseModel.quantizedModelRef")
            : null;
}
