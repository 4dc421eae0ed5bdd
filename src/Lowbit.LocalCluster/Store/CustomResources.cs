using System.Text.Json.Nodes;
using k8s;
using k8s.Models;

namespace Lowbit.LocalCluster.Store;

/// <summary>Turns CustomResourceDefinition objects into served resource types and marks them established.</summary>
internal static class CustomResources
{
    public static V1CustomResourceDefinition Parse(JsonObject crd) =>
        KubernetesJson.Deserialize<V1CustomResourceDefinition>(crd.ToJsonString());

    /// <summary>One resource type per served version.</summary>
    public static IReadOnlyList<ResourceType> TypesOf(JsonObject crdJson)
    {
        var crd = Parse(crdJson);
        var names = crd.Spec.Names;
        var storage = crd.Spec.Versions.FirstOrDefault(v => v.Storage)?.Name ?? crd.Spec.Versions[0].Name;
        return crd.Spec.Versions.Where(v => v.Served).Select(v => new ResourceType
        {
            Group = crd.Spec.Group,
            Version = v.Name,
            Plural = names.Plural,
            Kind = names.Kind,
            Singular = string.IsNullOrEmpty(names.Singular) ? names.Kind.ToLowerInvariant() : names.Singular,
            Namespaced = crd.Spec.Scope != "Cluster",
            ShortNames = names.ShortNames?.ToList() ?? [],
            Categories = names.Categories?.ToList() ?? [],
            HasStatus = v.Subresources?.Status is not null,
            Scale = v.Subresources?.Scale is { } scale
                ? new ScaleSubresource(scale.SpecReplicasPath, scale.StatusReplicasPath, scale.LabelSelectorPath)
                : null,
            Schema = v.Schema?.OpenAPIV3Schema,
            PrinterColumns = v.AdditionalPrinterColumns?.ToList() ?? [],
            IsCustom = true,
            StorageVersion = storage,
        }).ToList();
    }

    /// <summary>Sets the status a real API server reports once the names are accepted and the CRD is served.</summary>
    public static void Establish(JsonObject crdJson, string now)
    {
        var spec = crdJson["spec"] as JsonObject;
        var storage = (spec?["versions"] as JsonArray)?.FirstOrDefault(v => (bool?)v?["storage"] == true)?["name"]?.GetValue<string>();
        crdJson["status"] = new JsonObject
        {
            ["conditions"] = new JsonArray(
                Condition("NamesAccepted", "NoConflicts", "no conflicts found", now),
                Condition("Established", "InitialNamesAccepted", "the initial names have been accepted", now)),
            ["acceptedNames"] = spec?["names"]?.DeepClone(),
            ["storedVersions"] = storage is null ? new JsonArray() : new JsonArray(storage),
        };
    }

    private static JsonObject Condition(string type, string reason, string message, string now) => new()
    {
        ["type"] = type,
        ["status"] = "True",
        ["reason"] = reason,
        ["message"] = message,
        ["lastTransitionTime"] = now,
    };
}

/// <summary>
/// The seam to the structural-schema validator of Lowbit.Api (<see cref="Lowbit.Schema.StructuralSchema.Apply"/>):
/// prunes unknown fields, applies defaults, then validates; errors become Status causes.
/// CEL rules (<c>x-kubernetes-validations</c>) are not evaluated; for Lowbit's own kinds,
/// <see cref="ValidateRules"/> runs <c>CelMirror</c>, the C# mirror of those rules.
/// </summary>
internal static class CustomResourceSchema
{
    public static IEnumerable<StatusCause> Apply(JsonObject obj, V1JSONSchemaProps schema) =>
        Lowbit.Schema.StructuralSchema.Apply(obj, schema).Select(Cause);

    /// <summary>The CEL-rule mirror for lowbit.dev kinds (create, or update with transition rules); nothing for other kinds.</summary>
    public static IEnumerable<StatusCause> ValidateRules(JsonObject obj, JsonObject? old) =>
        (old is null ? CelMirror.Validate(obj) : CelMirror.ValidateUpdate(old, obj)).Select(Cause);

    private static StatusCause Cause(Lowbit.Schema.SchemaError e) => new(e.Reason, e.Message, e.Field);
}
