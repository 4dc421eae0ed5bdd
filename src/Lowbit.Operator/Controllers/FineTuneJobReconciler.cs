using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Api.Validation;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Controllers;

/// <summary>
/// FineTuneJob → base model (a Ready QuantizedModel or a source) → plan (lora/qlora/full) → the finetune Job →
/// progress from the engine's JSON log lines while it runs → adapter artifact; a recreated Job resumes from the last checkpoint.
/// </summary>
public sealed class FineTuneJobReconciler(ReconcileKit kit) : IReconciler<FineTuneJob>
{
    public static readonly TimeSpan PollProgress = TimeSpan.FromSeconds(15);

    public async Task<ReconcileResult> ReconcileAsync(FineTuneJob job, CancellationToken cancellationToken)
    {
        if (job.Metadata.DeletionTimestamp is not null)
        {
            kit.Cost.Forget(FineTuneJob.KindName, job.Metadata.NamespaceProperty, job.Metadata.Name);
            return ReconcileResult.Done;
        }

        var ns = job.Metadata.NamespaceProperty;
        var child = kit.Child<V1Job>(job, FineTuneJobBuilder.Role);
        var pods = kit.PodsOf(child);
        var observed = new WorkloadObservation { Job = child, Pods = pods, Diagnosis = PodDiagnosis.Of(pods) };
        var conflict = ReconcileKit.ChildConflict(job, child);
        PlanResult? plan = null;
        WorkloadPlacement? placement = null;
        var applied = ApplyOutcome.Unchanged;
        try
        {
            var errors = FineTuneJobSpecValidator.Validate(job.Spec);
            if (errors.Count > 0)
            {
                throw new InvalidSpecException(errors[0].Field, string.Join("; ", errors.Select(e => e.ToString())));
            }

            var (baseModel, waiting) = DependencyResolver.QuantizedModel(kit.Cache, ns, job.Spec.BaseModel.QuantizedModelRef, "spec.baseModel.quantizedModelRef");
            var architecture = waiting is null
                ? await DependencyResolver.ArchitectureAsync(kit.Architectures, baseModel, job.Spec.BaseModel.Source, ns, job.Metadata.Annotations, cancellationToken).ConfigureAwait(false)
                : null;
            observed = observed with { Blocker = waiting ?? (architecture is null ? null : DependencyResolver.Blocker(architecture)) };
            if (architecture is ArchitectureResolution.Resolved resolved && observed.Blocker is null)
            {
                plan = Planning.FineTune(job, resolved.Architecture, kit.Catalog);
                string? change = null;
                var current = ReconcileKit.CurrentIndex(child, job.Metadata.Generation, job.Status?.ObservedGeneration, job.Status?.Plan?.PlacementIndex);
                placement = plan is Planned ? kit.Place(plan, current, observed.Diagnosis, job.Spec.Scheduling.Timeout, out change) : null;
                observed = observed with { PlacementChange = change, LogTail = await LogTailAsync(child, pods, cancellationToken).ConfigureAwait(false) };
                if (placement is not null)
                {
                    var desired = FineTuneJobBuilder.Build(job, baseModel, placement, kit.Options, ResumeFrom(job, child));
                    applied = await kit.Children.ApplyAsync(job, desired, child, cancellationToken).ConfigureAwait(false);
                    kit.Cost.RecordPlan(FineTuneJob.KindName, ns, job.Metadata.Name, placement);
                    RecordGpuHours(job, child, placement);
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

        var status = FineTuneJobStatusCalculator.Compute(job, plan, placement, observed, kit.Time.GetUtcNow());
        if (await kit.Status.WriteAsync(job, job.Status, status, (j, s) => j.Status = s, cancellationToken).ConfigureAwait(false))
        {
            await kit.RecordTransitionAsync(job, job.Status?.Conditions, status.Conditions, cancellationToken).ConfigureAwait(false);
        }

        var outcome = JobOutcomes.Of(plan, placement, observed, "");
        return ReconcileKit.ResultFor(outcome, observed.Diagnosis, applied, PollProgress, kit.PendingDelay(observed.Diagnosis, job.Spec.Scheduling.Timeout));
    }

    /// <summary>
    /// The checkpoint a new Job resumes from: an existing Job keeps its own (its arguments, parsed with the
    /// protocol); a Job created again for the same generation resumes from the last recorded checkpoint.
    /// </summary>
    public static string? ResumeFrom(FineTuneJob job, V1Job? existing)
    {
        ArgumentNullException.ThrowIfNull(job);
        if (existing?.Spec?.Template?.Spec?.Containers?.FirstOrDefault()?.Args is { Count: > 0 } args
            && ChildMeta.Annotation(existing, ChildMeta.GenerationAnnotation) == job.Metadata.Generation?.ToString(System.Globalization.CultureInfo.InvariantCulture))
        {
            return FinetuneRequest.Parse(args.ToList()).ResumeFrom;
        }

        if (job.Status?.ObservedGeneration != job.Metadata.Generation || job.Status?.Checkpoints is not { Count: > 0 } checkpoints)
        {
            return null;
        }

        var uri = checkpoints[^1].Uri ?? "";
        return uri.StartsWith("pvc://", StringComparison.Ordinal) ? $"{VolumeSet.MountRoot}/{uri["pvc://".Length..]}" : uri;
    }

    private async Task<string?> LogTailAsync(V1Job? child, IReadOnlyList<V1Pod> pods, CancellationToken cancellationToken)
    {
        var running = pods.FirstOrDefault(p => p.Status?.Phase == "Running");
        if (child is null || running is null)
        {
            return null;
        }

        try
        {
            await using var stream = await kit.Client.CoreV1.ReadNamespacedPodLogAsync(running.Metadata.Name, running.Metadata.NamespaceProperty,
                container: PodTemplates.ContainerName, tailLines: 50, cancellationToken: cancellationToken).ConfigureAwait(false);
            using var reader = new StreamReader(stream);
            return await reader.ReadToEndAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (k8s.Autorest.HttpOperationException)
        {
            return null;
        }
    }

    private void RecordGpuHours(FineTuneJob job, V1Job? child, WorkloadPlacement placement)
    {
        if (child?.Status?.StartTime is { } start && placement.OnGpu)
        {
            var end = child.Status.CompletionTime is { } done ? new DateTimeOffset(done, TimeSpan.Zero) : kit.Time.GetUtcNow();
            kit.Cost.RecordJobGpuHours(FineTuneJob.KindName, job.Metadata.NamespaceProperty, job.Metadata.Name, placement.Option.Gpus, new DateTimeOffset(start, TimeSpan.Zero), end);
        }
    }
}
