using k8s.Models;

namespace Lowbit.LocalCluster.Store;

/// <summary>One served resource: a group/version/plural with its kind, scope and subresources.</summary>
public sealed record ResourceType
{
    /// <summary>API group; empty for the core group.</summary>
    public required string Group { get; init; }

    public required string Version { get; init; }

    public required string Plural { get; init; }

    public required string Kind { get; init; }

    public required string Singular { get; init; }

    public required bool Namespaced { get; init; }

    public IReadOnlyList<string> ShortNames { get; init; } = [];

    public IReadOnlyList<string> Categories { get; init; } = [];

    /// <summary>True when the resource has a <c>/status</c> subresource (status ignored on the main resource).</summary>
    public bool HasStatus { get; init; }

    /// <summary>The <c>/scale</c> subresource, when the resource has one.</summary>
    public ScaleSubresource? Scale { get; init; }

    /// <summary>The structural schema of a custom resource version (null for built-ins).</summary>
    public V1JSONSchemaProps? Schema { get; init; }

    /// <summary>CRD additional printer columns (built-ins use <see cref="Http.TableBuilder"/>'s own columns).</summary>
    public IReadOnlyList<V1CustomResourceColumnDefinition> PrinterColumns { get; init; } = [];

    /// <summary>True for resources that exist because a CustomResourceDefinition was created.</summary>
    public bool IsCustom { get; init; }

    /// <summary>The version objects are stored in (CRDs: the storage version; no conversion between versions).</summary>
    public string StorageVersion { get; init; } = "";

    public string ApiVersion => Group.Length == 0 ? Version : $"{Group}/{Version}";

    /// <summary>Objects of every version of one group/resource share one bucket.</summary>
    public string BucketKey => $"{Group}/{Plural}";

    public string GroupResource => Group.Length == 0 ? Plural : $"{Plural}.{Group}";

    public override string ToString() => $"{ApiVersion}/{Plural}";
}

/// <summary>JSON paths (<c>.spec.replicas</c>) of a scale subresource.</summary>
public sealed record ScaleSubresource(string SpecReplicasPath, string StatusReplicasPath, string? LabelSelectorPath);
