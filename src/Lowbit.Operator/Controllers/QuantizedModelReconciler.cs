using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Api.Validation;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Controllers;

/// <summary>
/// QuantizedModel → architecture (annotation, preset, config.json, or an inspect Job) → plan (mode quantize) →
/// the quantize Job on the chosen placement → status with artifact and quality from the engine's result.
/// </summary>
public sealed class QuantizedModelReconciler(ReconcileKit kit) : IReconciler<QuantizedModel>
{
    public async Task<ReconcileResult> ReconcileAsync(QuantizedModel model, CancellationToken cancellationToken)
    {
        if (model.Metadata.DeletionTimestamp is not null)
        {
            kit.Cost.Forget(QuantizedModel.KindName, model.Metadata.NamespaceProperty, model.Metadata.Name);
            return ReconcileResult.Done;
        }

        var job = kit.Child<V1Job>(model, QuantizeJobBuilder.Role);
        var pods = kit.PodsOf(job);
        var observed = new WorkloadObservation { Job = job, Pods = pods, Diagnosis = PodDiagnosis.Of(pods) };
        var conflict = ReconcileKit.ChildConflict(model, job, kit.Child<V1Job>(model, InspectJobBuilder.Role));
        PlanResult? plan = null;
        WorkloadPlacement? placement = null;
        var applied = ApplyOutcome.Unchanged;
        try
        {
            var errors = QuantizedModelSpecValidator.Validate(model.Spec);
            if (errors.Count > 0)
            {
                throw new InvalidSpecException(errors[0].Field, string.Join("; ", errors.Select(e => e.ToString())));
            }

            var architecture = await kit.Architectures.ResolveAsync(model, cancellationToken).ConfigureAwait(false);
            switch (architecture)
            {
                case ArchitectureResolution.NeedsInspect:
                    var inspect = InspectJobBuilder.Build(model, kit.Options, kit.Catalog);
                    var inspectObserved = kit.Child<V1Job>(model, InspectJobBuilder.Role);
                    await kit.Children.ApplyAsync(model, inspect, inspectObserved, cancellationToken).ConfigureAwait(false);
                    var inspectDiagnosis = PodDiagnosis.Of(kit.PodsOf(inspectObserved));
                    observed = observed with
                    {
                        Blocker = inspectDiagnosis is PodDiagnosis.Healthy
                            ? new Outcome.InProgress(StatusReasons.Inspecting, "reading the model's config.json with an inspect Job")
                            : new Outcome.Stalled(inspectDiagnosis.Reason, $"inspect: {inspectDiagnosis.Message}"),
                    };
                    break;
                case ArchitectureResolution.Failed failed:
                    observed = observed with { Blocker = failed.Terminal ? new Outcome.Stalled(failed.Reason, failed.Message) : new Outcome.InProgress(failed.Reason, failed.Message) };
                    break;
                case ArchitectureResolution.Resolved resolved:
                    plan = Planning.Quantize(model, resolved.Architecture, kit.Catalog);
                    string? change = null;
                    var current = ReconcileKit.CurrentIndex(job, model.Metadata.Generation, model.Status?.ObservedGeneration, model.Status?.Plan?.PlacementIndex);
                    placement = plan is Planned ? kit.Place(plan, current, observed.Diagnosis, model.Spec.Scheduling.Timeout, out change) : null;
                    observed = observed with { PlacementChange = change };
                    if (placement is not null)
                    {
                        var desired = QuantizeJobBuilder.Build(model, placement, kit.Options);
                        applied = await kit.Children.ApplyAsync(model, desired, job, cancellationToken).ConfigureAwait(false);
                        kit.Cost.RecordPlan(QuantizedModel.KindName, model.Metadata.NamespaceProperty, model.Metadata.Name, placement);
                    }

                    break;
            }
        }
        catch (InvalidSpecException ex)
        {
            observed = observed with { Blocker = new Outcome.Stalled(Conditions.Reasons.InvalidSpec, ex.Message) };
        }

        if (conflict is not null)
        {
            // Whatever the foreign object shows is not ours to report.
            observed = new WorkloadObservation { Blocker = conflict };
        }

        RecordGpuHours(model, job, placement);
        var status = QuantizedModelStatusCalculator.Compute(model, plan, placement, observed, kit.Time.GetUtcNow());
        if (await kit.Status.WriteAsync(model, model.Status, status, (m, s) => m.Status = s, cancellationToken).ConfigureAwait(false))
        {
            await kit.RecordTransitionAsync(model, model.Status?.Conditions, status.Conditions, cancellationToken).ConfigureAwait(false);
        }

        var outcome = JobOutcomes.Of(plan, placement, observed, "");
        return ReconcileKit.ResultFor(outcome, observed.Diagnosis, applied, ReconcileKit.PollRunning, kit.PendingDelay(observed.Diagnosis, model.Spec.Scheduling.Timeout));
    }

    private void RecordGpuHours(QuantizedModel model, V1Job? job, WorkloadPlacement? placement)
    {
        if (job?.Status?.StartTime is { } start && placement is { OnGpu: true })
        {
            var end = job.Status.CompletionTime is { } done ? new DateTimeOffset(done, TimeSpan.Zero) : kit.Time.GetUtcNow();
            kit.Cost.RecordJobGpuHours(QuantizedModel.KindName, model.Metadata.NamespaceProperty, model.Metadata.Name, placement.GpusPerReplica, new DateTimeOffset(start, TimeSpan.Zero), end);
        }
    }
}
