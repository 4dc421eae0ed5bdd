using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Lowbit.Api.Generation;
using Lowbit.Schema;
using Lowbit.Api.V1Alpha1;

namespace Lowbit.Api.Validation;

/// <summary>
/// Everything the real API server would check on a Lowbit resource, in C#: the structural schema of the generated
/// CRD (types, enums, bounds, patterns, required) plus the CEL rules (spec validators and the name length).
/// One call for the operator before it acts on a spec.
/// </summary>
public static class ResourceValidator
{
    private static readonly Lazy<IReadOnlyDictionary<Type, V1JSONSchemaProps>> Schemas = new(() =>
        CrdGenerator.ResourceTypes.ToDictionary(t => t, t => CustomResourceDefinitions.SchemaOf(CrdGenerator.Generate(t))));

    public static IReadOnlyList<SchemaError> Validate(QuantizedModel resource)
    {
        ArgumentNullException.ThrowIfNull(resource);
        return Combine(resource, CelRules(resource));
    }

    public static IReadOnlyList<SchemaError> Validate(FineTuneJob resource)
    {
        ArgumentNullException.ThrowIfNull(resource);
        return Combine(resource, CelRules(resource));
    }

    public static IReadOnlyList<SchemaError> Validate(InferenceEndpoint resource)
    {
        ArgumentNullException.ThrowIfNull(resource);
        return Combine(resource, CelRules(resource));
    }

    /// <summary>
    /// The CRD's CEL rules alone (the name length and the spec validator), for an API server that applies the
    /// structural schema itself and cannot evaluate CEL (the embedded local cluster's admission).
    /// </summary>
    public static IReadOnlyList<SchemaError> CelRules(QuantizedModel resource)
    {
        ArgumentNullException.ThrowIfNull(resource);
        return Cel(resource.Metadata, QuantizedModelSpecValidator.Validate(resource.Spec));
    }

    /// <inheritdoc cref="CelRules(QuantizedModel)"/>
    public static IReadOnlyList<SchemaError> CelRules(FineTuneJob resource)
    {
        ArgumentNullException.ThrowIfNull(resource);
        return Cel(resource.Metadata, FineTuneJobSpecValidator.Validate(resource.Spec));
    }

    /// <inheritdoc cref="CelRules(QuantizedModel)"/>
    public static IReadOnlyList<SchemaError> CelRules(InferenceEndpoint resource)
    {
        ArgumentNullException.ThrowIfNull(resource);
        return Cel(resource.Metadata, InferenceEndpointSpecValidator.Validate(resource.Spec));
    }

    /// <summary>All errors as one message for a condition: <c>spec.bits: ...; spec.calibration: ...</c>.</summary>
    public static string Describe(IReadOnlyList<SchemaError> errors)
    {
        ArgumentNullException.ThrowIfNull(errors);
        return string.Join("; ", errors.Select(e => e.ToString()));
    }

    private static IReadOnlyList<SchemaError> Cel(V1ObjectMeta? metadata, IReadOnlyList<SchemaError> spec)
    {
        var errors = new List<SchemaError>();
        SpecChecks.Name(metadata, errors);
        errors.AddRange(spec);
        return errors;
    }

    private static IReadOnlyList<SchemaError> Combine(object resource, IReadOnlyList<SchemaError> cel)
    {
        var node = JsonNode.Parse(KubernetesJson.Serialize(resource));
        var errors = StructuralSchema.Validate(node, Schemas.Value[resource.GetType()]).ToList();
        errors.AddRange(cel);
        return errors;
    }
}
