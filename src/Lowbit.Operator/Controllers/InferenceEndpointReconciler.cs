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
/// InferenceEndpoint → model and adapters (Ready QuantizedModel / FineTuneJobs, or a source) → plan (context,
/// concurrency, runtime, SLO, budget) → Deployment (replicas from spec: the scale subresource) and Service →
/// status with readiness, URL, scale status and cost.
/// </summary>
public sealed class InferenceEndpointReconciler(ReconcileKit kit) : IReconciler<InferenceEndpoint>
{
    public async Task<ReconcileResult> ReconcileAsync(InferenceEndpoint endpoint, CancellationToken cancellationToken)
    {
        var ns = endpoint.Metadata.NamespaceProperty;
        if (endpoint.Metadata.DeletionTimestamp is not null)
        {
            kit.Cost.Forget(InferenceEndpoint.KindName, ns, endpoint.Metadata.Name);
            return ReconcileResult.Done;
        }

        var deployment = kit.Child<V1Deployment>(endpoint, InferenceDeploymentBuilder.Role);
        var observed = new WorkloadObservation { Deployment = deployment };
        var conflict = ReconcileKit.ChildConflict(endpoint, deployment, kit.Child<V1Service>(endpoint, InferenceDeploymentBuilder.Role));
        PlanResult? plan = null;
        WorkloadPlacement? placement = null;
        try
        {
            var errors = InferenceEndpointSpecValidator.Validate(endpoint.Spec);
            if (errors.Count > 0)
            {
                throw new InvalidSpecException(errors[0].Field, string.Join("; ", errors.Select(e => e.ToString())));
            }

            var (model, waiting) = DependencyResolver.QuantizedModel(kit.Cache, ns, endpoint.Spec.Model.QuantizedModelRef, "spec.model.quantizedModelRef");
            var (adapters, adapterWaiting) = Adapters(endpoint);
            var architecture = waiting is null && adapterWaiting is null
                ? await DependencyResolver.ArchitectureAsync(kit.Architectures, model, endpoint.Spec.Model.Source, ns, endpoint.Metadata.Annotations, cancellationToken).ConfigureAwait(false)
                : null;
            observed = observed with { Blocker = waiting ?? adapterWaiting ?? (architecture is null ? null : DependencyResolver.Blocker(architecture)) };
            if (architecture is ArchitectureResolution.Resolved resolved && observed.Blocker is null)
            {
                plan = Planning.Inference(endpoint, model, resolved.Architecture, kit.Catalog);
                var current = ReconcileKit.CurrentIndex(deployment, endpoint.Metadata.Generation, endpoint.Status?.ObservedGeneration, endpoint.Status?.Plan?.PlacementIndex);
                var pods = Planning.Choose(plan, current) is { } running ? kit.PodsOf(endpoint, InferenceDeploymentBuilder.Role, running.Annotation) : [];
                observed = observed with { Pods = pods, Diagnosis = PodDiagnosis.Of(pods) };
                string? change = null;
                placement = plan is Planned ? kit.Place(plan, current, observed.Diagnosis, endpoint.Spec.Scheduling.Timeout, out change) : null;
                observed = observed with { PlacementChange = change };
                if (placement is not null)
                {
                    var served = new ServedModel { QuantizedModel = model, Adapters = adapters };
                    await kit.Children.ApplyAsync(endpoint, InferenceDeploymentBuilder.Build(endpoint, served, placement, kit.Options), deployment, cancellationToken).ConfigureAwait(false);
                    await kit.Children.ApplyAsync(endpoint, InferenceServiceBuilder.Build(endpoint), kit.Child<V1Service>(endpoint, InferenceDeploymentBuilder.Role), cancellationToken).ConfigureAwait(false);
                    kit.Cost.RecordEndpoint(ns, endpoint.Metadata.Name, placement, endpoint.Spec.Replicas);
                    kit.Cost.RecordPlan(InferenceEndpoint.KindName, ns, endpoint.Metadata.Name, placement);
                }
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

        var url = InferenceDeploymentBuilder.Url(endpoint, kit.Options);
        var status = InferenceEndpointStatusCalculator.Compute(endpoint, plan, placement, observed, url, kit.Time.GetUtcNow());
        if (await kit.Status.WriteAsync(endpoint, endpoint.Status, status, (e, s) => e.Status = s, cancellationToken).ConfigureAwait(false))
        {
            await kit.RecordTransitionAsync(endpoint, endpoint.Status?.Conditions, status.Conditions, cancellationToken).ConfigureAwait(false);
        }

        var outcome = Conditions.IsTrue(status.Conditions, Conditions.Types.Stalled)
            ? new Outcome.Stalled(Conditions.Find(status.Conditions, Conditions.Types.Stalled)!.Reason, "")
            : Conditions.IsTrue(status.Conditions, Conditions.Types.Ready) ? new Outcome.Succeeded("") : (Outcome)new Outcome.InProgress("", "");
        return ReconcileKit.ResultFor(outcome, observed.Diagnosis, ApplyOutcome.Unchanged, ReconcileKit.PollRunning, kit.PendingDelay(observed.Diagnosis, endpoint.Spec.Scheduling.Timeout));
    }

    /// <summary>The adapters' FineTuneJobs, all Ready, or the first one still in the way.</summary>
    private (IReadOnlyList<(string Name, FineTuneJob Job)> Adapters, Outcome? Waiting) Adapters(InferenceEndpoint endpoint)
    {
        var list = new List<(string, FineTuneJob)>();
        var specs = endpoint.Spec.Adapters ?? [];
        for (var i = 0; i < specs.Count; i++)
        {
            var reference = specs[i].FineTuneJobRef.Name;
            if (!kit.Cache.TryGet<FineTuneJob>(new ObjectKey(endpoint.Metadata.NamespaceProperty, reference), out var job)
                || !Conditions.IsTrue(job.Status?.Conditions, Conditions.Types.Ready))
            {
                return (list, new Outcome.InProgress(Conditions.Reasons.WaitingForDependency, $"spec.adapters[{i}].fineTuneJobRef: waiting for FineTuneJob {reference} to be Ready"));
            }

            list.Add((specs[i].Name, job));
        }

        return (list, null);
    }
}
