using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Store;
using k8s.Models;
using Lowbit.Schema;
using Lowbit.Api.Validation;

namespace Lowbit.Api.Tests;

/// <summary>Validates manifests the way the API server plus the operator would: structural schema, then the CEL mirrors.</summary>
internal static class ManifestChecks
{
    public static IReadOnlyList<V1CustomResourceDefinition> CommittedCrds { get; } = CustomResourceDefinitions.LoadDirectory(RepoPaths.Crds);

    public static IReadOnlyList<SchemaError> Admit(JsonObject obj)
    {
        var crd = CustomResourceDefinitions.Find(CommittedCrds, (string)obj["apiVersion"]!, (string)obj["kind"]!)
            ?? throw new InvalidOperationException($"no CRD for {obj["apiVersion"]} {obj["kind"]}");
        var errors = StructuralSchema.Apply(obj, CustomResourceDefinitions.SchemaOf(crd));
        return errors.Count > 0 ? errors : CelMirror.Validate(obj);
    }

    public static IEnumerable<string> YamlFiles(string directory) =>
        Directory.GetFiles(directory, "*.yaml", SearchOption.AllDirectories).Order(StringComparer.Ordinal);
}
