using k8s;
using k8s.Models;

namespace Lowbit.Schema;

/// <summary>Loads CRD manifests (<c>crds/*.yaml</c>) and finds the schema of a version.</summary>
public static class CustomResourceDefinitions
{
    /// <summary>Parses one YAML or JSON CRD manifest. x-kubernetes-* extensions round-trip.</summary>
    public static V1CustomResourceDefinition Parse(string yaml)
    {
        var node = Yaml.ParseObject(yaml);
        if ((string?)node["kind"] != "CustomResourceDefinition")
        {
            throw new FormatException($"expected kind CustomResourceDefinition, found '{(string?)node["kind"]}'");
        }

        return KubernetesJson.Deserialize<V1CustomResourceDefinition>(node.ToJsonString());
    }

    /// <summary>Loads one CRD file.</summary>
    public static V1CustomResourceDefinition LoadFile(string path) => Parse(File.ReadAllText(path));

    /// <summary>Loads every <c>*.yaml</c> in a directory, ordered by file name.</summary>
    public static IReadOnlyList<V1CustomResourceDefinition> LoadDirectory(string directory) =>
        Directory.GetFiles(directory, "*.yaml").Order(StringComparer.Ordinal).Select(LoadFile).ToList();

    /// <summary>The <c>openAPIV3Schema</c> of a served version (the storage version when <paramref name="version"/> is null).</summary>
    public static V1JSONSchemaProps SchemaOf(V1CustomResourceDefinition crd, string? version = null)
    {
        ArgumentNullException.ThrowIfNull(crd);
        var match = crd.Spec.Versions.FirstOrDefault(v => version is null ? v.Storage : v.Name == version)
            ?? throw new ArgumentException(
                $"CRD {crd.Metadata.Name} has no version '{version}'; versions: {string.Join(", ", crd.Spec.Versions.Select(v => v.Name))}",
                nameof(version));
        return match.Schema?.OpenAPIV3Schema ?? throw new ArgumentException($"CRD {crd.Metadata.Name} version {match.Name} has no schema", nameof(crd));
    }

    /// <summary>Finds the CRD for an <c>apiVersion</c>/<c>kind</c> pair among <paramref name="crds"/>, or null.</summary>
    public static V1CustomResourceDefinition? Find(IEnumerable<V1CustomResourceDefinition> crds, string apiVersion, string kind)
    {
        ArgumentNullException.ThrowIfNull(apiVersion);
        var slash = apiVersion.IndexOf('/', StringComparison.Ordinal);
        var group = slash < 0 ? "" : apiVersion[..slash];
        var version = apiVersion[(slash + 1)..];
        return crds.FirstOrDefault(c => c.Spec.Group == group && c.Spec.Names.Kind == kind && c.Spec.Versions.Any(v => v.Name == version));
    }
}
