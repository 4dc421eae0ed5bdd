using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Status;

namespace Lowbit.Operator.Controllers;

/// <summary>Resolves the Lowbit resources a FineTuneJob or InferenceEndpoint references (from the caches) and their architecture.</summary>
public static class DependencyResolver
{
    /// <summary>The referenced QuantizedModel if it is Ready; otherwise the blocker to report.</summary>
    public static (QuantizedModel? Model, Outcome? Blocker) QuantizedModel(IObjectCache cache, string ns, ObjectRef? reference, string field)
    {
        ArgumentNullException.ThrowIfNull(cache);
        if (reference is null)
        {
            return (null, null);
        }

        if (!cache.TryGet<QuantizedModel>(new ObjectKey(ns, reference.Name), out var model))
        {
            return (null, new Outcome.InProgress(Conditions.Reasons.WaitingForDependency, $"{field}: QuantizedModel {reference.Name} not found"));
        }

        return Conditions.IsTrue(model.Status?.Conditions, Conditions.Types.Ready) && model.Status?.ObservedGeneration == model.Metadata.Generation
            ? (model, null)
            : (model, new Outcome.InProgress(Conditions.Reasons.WaitingForDependency, $"{field}: waiting for QuantizedModel {reference.Name} to be Ready"));
    }

    /// <summary>The architecture of a model given by reference or source.</summary>
    public static async Task<ArchitectureResolution> ArchitectureAsync(ArchitectureResolver resolver, QuantizedModel? model, ModelSource? source, string ns,
        IDictionary<string, string>? annotations, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(resolver);
        if (annotations?.TryGetValue(ArchitectureResolver.Annotation, out var preset) == true)
        {
            return Planner.ModelPresets.TryGet(preset, out var named)
                ? new ArchitectureResolution.Resolved(named, "annotation")
                : new ArchitectureResolution.Failed(Conditions.Reasons.InvalidSpec, $"metadata.annotations[{ArchitectureResolver.Annotation}]: unknown preset '{preset}'", Terminal: true);
        }

        if (model is not null)
        {
            return await resolver.ResolveAsync(model, cancellationToken).ConfigureAwait(false);
        }

        var resolution = await resolver.ResolveSourceAsync(null, source!, ns, cancellationToken).ConfigureAwait(false);
        return resolution is ArchitectureResolution.NeedsInspect
            ? new ArchitectureResolution.Failed(Conditions.Reasons.InvalidSpec,
                $"the architecture of a PVC source cannot be read here: reference a QuantizedModel or set the {ArchitectureResolver.Annotation} annotation to a preset", Terminal: true)
            : resolution;
    }

    /// <summary>An outcome for an architecture that could not be resolved.</summary>
    public static Outcome? Blocker(ArchitectureResolution resolution) => resolution switch
    {
        ArchitectureResolution.Failed { Terminal: true } f => new Outcome.Stalled(f.Reason, f.Message),
        ArchitectureResolution.Failed f => new Outcome.InProgress(f.Reason, f.Message),
        ArchitectureResolution.NeedsInspect => new Outcome.InProgress(Conditions.Reasons.WaitingForDependency, "waiting for the base model's inspect Job"),
        _ => null,
    };
}
