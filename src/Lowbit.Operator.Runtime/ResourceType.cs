using System.Globalization;
using System.Reflection;
using k8s;
using k8s.Models;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// Where a kind lives in the REST API: group, version, plural and kind, read from the type's
/// <see cref="KubernetesEntityAttribute"/> (built-in models and our CRD classes both carry it).
/// </summary>
public sealed record ResourceType(string Group, string Version, string Plural, string Kind)
{
    /// <summary>"v1" for the core group, "group/version" otherwise, as in <c>apiVersion</c> and owner references.</summary>
    public string ApiVersion => Group.Length == 0 ? Version : $"{Group}/{Version}";

    /// <summary>A lowercase name usable as a bounded metric label and a controller name, e.g. <c>job</c>.</summary>
    public string LabelName => Kind.ToLowerInvariant();

    public static ResourceType For<T>() => For(typeof(T));

    public static ResourceType For(Type type)
    {
        ArgumentNullException.ThrowIfNull(type);
        var attribute = type.GetCustomAttribute<KubernetesEntityAttribute>()
            ?? throw new ArgumentException($"{type.Name} has no [KubernetesEntity] attribute: the runtime needs its group, version, kind and plural", nameof(type));
        var plural = string.IsNullOrEmpty(attribute.PluralName)
            ? attribute.Kind.ToLowerInvariant() + "s"
            : attribute.PluralName;
        return new ResourceType(attribute.Group ?? string.Empty, attribute.ApiVersion, plural, attribute.Kind);
    }

    /// <summary>The collection path, e.g. <c>api/v1/namespaces/ns/pods</c> or <c>apis/batch/v1/jobs</c> (all namespaces).</summary>
    public string CollectionPath(string? ns)
    {
        var root = Group.Length == 0 ? $"api/{Version}" : $"apis/{Group}/{Version}";
        return ns is null ? $"{root}/{Plural}" : $"{root}/namespaces/{Uri.EscapeDataString(ns)}/{Plural}";
    }

    /// <summary>One object's path, e.g. <c>apis/lowbit.dev/v1alpha1/namespaces/ml/quantizedmodels/llama</c>, optionally a subresource.</summary>
    public string ItemPath(string? ns, string name, string? subresource = null)
    {
        var path = $"{CollectionPath(ns)}/{Uri.EscapeDataString(name)}";
        return subresource is null ? path : $"{path}/{subresource}";
    }

    /// <summary>True when <paramref name="reference"/> points at an object of this kind.</summary>
    public bool Matches(V1OwnerReference reference)
    {
        ArgumentNullException.ThrowIfNull(reference);
        return string.Equals(reference.Kind, Kind, StringComparison.Ordinal)
            && string.Equals(reference.ApiVersion, ApiVersion, StringComparison.Ordinal);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Kind}.{ApiVersion}");
}
