using System.Text.Json;
using System.Text.Json.Nodes;
using k8s;
using Lowbit.Api.Schema;
using Lowbit.Api.V1Alpha1;

namespace Lowbit.Api.Validation;

/// <summary>
/// Admission-time stand-in for the CRDs' CEL rules, for API servers that do not evaluate CEL (the embedded local
/// cluster): run it after <see cref="StructuralSchema.Apply"/> succeeded on a Lowbit resource. Objects of other
/// kinds yield no errors.
/// </summary>
public static class CelMirror
{
    /// <summary>The CEL rules evaluated on create (and, with <see cref="ValidateUpdate"/>, on update).</summary>
    public static IReadOnlyList<SchemaError> Validate(JsonObject obj)
    {
        ArgumentNullException.ThrowIfNull(obj);
        var errors = new List<SchemaError>();
        switch (KindOf(obj))
        {
            case QuantizedModel.KindName when Typed<QuantizedModel>(obj, errors) is { } qm:
                SpecChecks.Name(qm.Metadata, errors);
                errors.AddRange(QuantizedModelSpecValidator.Validate(qm.Spec));
                break;
            case FineTuneJob.KindName when Typed<FineTuneJob>(obj, errors) is { } ftj:
                SpecChecks.Name(ftj.Metadata, errors);
                errors.AddRange(FineTuneJobSpecValidator.Validate(ftj.Spec));
                break;
            case InferenceEndpoint.KindName when Typed<InferenceEndpoint>(obj, errors) is { } ie:
                SpecChecks.Name(ie.Metadata, errors);
                errors.AddRange(InferenceEndpointSpecValidator.Validate(ie.Spec));
                break;
        }

        return errors;
    }

    /// <summary>The transition rules (<c>self == oldSelf</c>) plus <see cref="Validate"/> on the new object.</summary>
    public static IReadOnlyList<SchemaError> ValidateUpdate(JsonObject oldObj, JsonObject newObj)
    {
        ArgumentNullException.ThrowIfNull(oldObj);
        ArgumentNullException.ThrowIfNull(newObj);
        var errors = Validate(newObj).ToList();
        var ignored = new List<SchemaError>();
        switch (KindOf(newObj))
        {
            case QuantizedModel.KindName when Typed<QuantizedModel>(oldObj, ignored) is { } o && Typed<QuantizedModel>(newObj, ignored) is { } n:
                errors.AddRange(QuantizedModelSpecValidator.ValidateUpdate(o.Spec, n.Spec));
                break;
            case FineTuneJob.KindName when Typed<FineTuneJob>(oldObj, ignored) is { } o && Typed<FineTuneJob>(newObj, ignored) is { } n:
                errors.AddRange(FineTuneJobSpecValidator.ValidateUpdate(o.Spec, n.Spec));
                break;
        }

        return errors;
    }

    private static string? KindOf(JsonObject obj) =>
        (string?)obj["apiVersion"] == ApiGroup.ApiVersion && obj["kind"] is JsonValue kind && kind.GetValueKind() == JsonValueKind.String
            ? kind.GetValue<string>()
            : null;

    private static T? Typed<T>(JsonObject obj, List<SchemaError> errors)
        where T : class
    {
        try
        {
            return KubernetesJson.Deserialize<T>(obj.ToJsonString());
        }
        catch (JsonException e)
        {
            errors.Add(new SchemaError(e.Path?.TrimStart('$', '.') ?? "", SchemaErrorReasons.TypeInvalid, $"Invalid value: {e.Message}"));
            return null;
        }
    }
}
