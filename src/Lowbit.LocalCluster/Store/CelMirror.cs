using System.Text.Json;
using System.Text.Json.Nodes;
using k8s;
using Lowbit.Api;
using Lowbit.Api.Validation;
using Lowbit.Api.V1Alpha1;
using Lowbit.Schema;

namespace Lowbit.LocalCluster.Store;

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
                errors.AddRange(ResourceValidator.CelRules(qm));
                break;
            case FineTuneJob.KindName when Typed<FineTuneJob>(obj, errors) is { } ftj:
                errors.AddRange(ResourceValidator.CelRules(ftj));
                break;
            case InferenceEndpoint.KindName when Typed<InferenceEndpoint>(obj, errors) is { } ie:
                errors.AddRange(ResourceValidator.CelRules(ie));
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
