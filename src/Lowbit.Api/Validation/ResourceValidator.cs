using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Lowbit.Api.Generation;
using Lowbit.Api.Schema;
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
        return Combine(resource, resource.Metadata, () => QuantizedModelSpecValidator.Validate(resource.Spec));
    }

    public static IReadOnlyList<SchemaError> Validate(FineTuneJob resource)
    {
        ArgumentNullException.ThrowIfNull(resource);
        return Combine(resource, resource.Metadata, () => FineTuneJobSpecValidator.Validate(resource.Spec));
    }

    public static IReadOnlyList<SchemaError> Validate(InferenceEndpoint resource)
    {
        ArgumentNullException.ThrowIfNull(resource);
        return Combine(resource, resource.Metadata, () => InferenceEndpointSpecValidator.Validate(resource.Spec));
    }

    /// <summary>All errors as one message for a condition: <c>spec.bits: ...; spec.calibration: ...</c>.</summary>
    public static string Describe(IReadOnlyList<SchemaError> errors)
    {
        ArgumentNullException.ThrowIfNull(errors);
        return string.Join("; ", errors.Select(e => e.ToString()));
    }

    private static IReadOnlyList<SchemaError> Combine(object resource, V1ObjectMeta? metadata, Func<IReadOnlyList<SchemaError>> cel)
    {
        var node = JsonNode.Parse(KubernetesJson.Serialize(resource));
        var errors = StructuralSchema.Validate(node, Schemas.Value[resource.GetType()]).ToList();
        SpecChecks.Name(metadata, errors);
        errors.AddRange(cel());
        return errors;
    }
}
