using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using k8s;
using k8s.Models;
using Lowbit.Api;

namespace Lowbit.Operator.Builders;

/// <summary>Names, labels and owner references shared by every child the operator creates.</summary>
public static class ChildMeta
{
    /// <summary>Annotation on children: the owner's <c>metadata.generation</c> they were built from.</summary>
    public const string GenerationAnnotation = Api.ApiGroup.Group + "/owner-generation";

    /// <summary>
    /// Owner annotations with this prefix reach the pods: the local cluster's simulate-mode scripting (exit code,
    /// termination message, log lines). Inert on a real cluster; nothing else is copied (no Argo CD metadata).
    /// </summary>
    public const string ForwardedAnnotationPrefix = "sim.lowbit.dev/";

    /// <summary><c>&lt;owner&gt;-&lt;role&gt;</c>.</summary>
    public static string Name(IKubernetesObject<V1ObjectMeta> owner, string role)
    {
        ArgumentNullException.ThrowIfNull(owner);
        return $"{owner.Metadata.Name}-{role}";
    }

    /// <summary>
    /// The standard labels (<see cref="Labels.ForChild"/>): the owner's own labels are never copied, so Argo CD
    /// tracking metadata cannot leak onto children (GitOps rule G3).
    /// </summary>
    public static Dictionary<string, string> Labels(IKubernetesObject<V1ObjectMeta> owner, string component)
    {
        ArgumentNullException.ThrowIfNull(owner);
        return new Dictionary<string, string>(Api.Labels.ForChild(owner.Kind, owner.Metadata.Name, component), StringComparer.Ordinal);
    }

    /// <summary>The pod selector of a child: instance, component and the owner key (stable across spec changes).</summary>
    public static Dictionary<string, string> Selector(IKubernetesObject<V1ObjectMeta> owner, string component)
    {
        ArgumentNullException.ThrowIfNull(owner);
        return new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [Api.Labels.Instance] = owner.Metadata.Name,
            [Api.Labels.Component] = component,
            [Api.Labels.OwnerKey(owner.Kind)] = owner.Metadata.Name,
        };
    }

    /// <summary>A controller owner reference with <c>blockOwnerDeletion</c>: the child goes when the owner goes.</summary>
    public static V1OwnerReference OwnerReference(IKubernetesObject<V1ObjectMeta> owner)
    {
        ArgumentNullException.ThrowIfNull(owner);
        return new V1OwnerReference
        {
            ApiVersion = owner.ApiVersion,
            Kind = owner.Kind,
            Name = owner.Metadata.Name,
            Uid = owner.Metadata.Uid,
            Controller = true,
            BlockOwnerDeletion = true,
        };
    }

    /// <summary>Metadata of a child: name, namespace, labels, owner reference and the placement annotation.</summary>
    public static V1ObjectMeta For(IKubernetesObject<V1ObjectMeta> owner, string role, string component, WorkloadPlacement? placement = null)
    {
        var meta = new V1ObjectMeta
        {
            Name = Name(owner, role),
            NamespaceProperty = owner.Metadata.NamespaceProperty,
            Labels = Labels(owner, component),
            OwnerReferences = [OwnerReference(owner)],
            Annotations = new Dictionary<string, string>(StringComparer.Ordinal),
        };
        if (placement is not null)
        {
            meta.Annotations[Api.Labels.PlacementAnnotation] = placement.Annotation;
        }

        foreach (var (key, value) in owner.Metadata.Annotations ?? new Dictionary<string, string>())
        {
            if (key.StartsWith(ForwardedAnnotationPrefix, StringComparison.Ordinal))
            {
                meta.Annotations[key] = value;
            }
        }

        if (owner.Metadata.Generation is { } generation)
        {
            meta.Annotations[GenerationAnnotation] = generation.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        return meta;
    }

    /// <summary>
    /// Stamps <c>lowbit.dev/spec-hash</c>: a SHA-256 over the desired object as serialized. A child whose hash
    /// matches is already what we would apply, so the reconcile skips the write (idempotence, zero writes).
    /// </summary>
    public static T WithSpecHash<T>(T desired)
        where T : IKubernetesObject<V1ObjectMeta>
    {
        ArgumentNullException.ThrowIfNull(desired);
        desired.Metadata.Annotations ??= new Dictionary<string, string>(StringComparer.Ordinal);
        desired.Metadata.Annotations.Remove(Api.Labels.SpecHashAnnotation);
        var json = KubernetesJson.Serialize(desired);
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(json)))[..16];
        desired.Metadata.Annotations[Api.Labels.SpecHashAnnotation] = hash;
        return desired;
    }

    /// <summary>The spec hash a child carries, or null.</summary>
    public static string? SpecHash(IKubernetesObject<V1ObjectMeta>? child) =>
        child?.Metadata?.Annotations is { } annotations && annotations.TryGetValue(Api.Labels.SpecHashAnnotation, out var hash) ? hash : null;

    /// <summary>True when <paramref name="child"/> is controlled by <paramref name="owner"/> (same UID).</summary>
    public static bool IsControlledBy(IKubernetesObject<V1ObjectMeta> child, IKubernetesObject<V1ObjectMeta> owner)
    {
        ArgumentNullException.ThrowIfNull(child);
        ArgumentNullException.ThrowIfNull(owner);
        return child.Metadata.OwnerReferences?.Any(r => r.Controller == true && r.Uid == owner.Metadata.Uid) == true;
    }

    /// <summary>An annotation's value, or null.</summary>
    public static string? Annotation(IKubernetesObject<V1ObjectMeta>? obj, string key) =>
        obj?.Metadata?.Annotations is { } annotations && annotations.TryGetValue(key, out var value) ? value : null;

    /// <summary>The placement index a child was built for, when it was built from <paramref name="generation"/>.</summary>
    public static int? PlacementIndex(IKubernetesObject<V1ObjectMeta>? child, long? generation)
    {
        if (Annotation(child, GenerationAnnotation) != generation?.ToString(System.Globalization.CultureInfo.InvariantCulture)
            || Annotation(child, Api.Labels.PlacementAnnotation) is not { } placement)
        {
            return null;
        }

        var colon = placement.IndexOf(':', StringComparison.Ordinal);
        return int.TryParse(colon < 0 ? placement : placement[..colon], System.Globalization.CultureInfo.InvariantCulture, out var index) ? index : null;
    }

    /// <summary>The placement annotation copied onto the pod template (to tell pods of the current placement from old ones).</summary>
    public static Dictionary<string, string>? PodAnnotations(V1ObjectMeta meta)
    {
        ArgumentNullException.ThrowIfNull(meta);
        var annotations = (meta.Annotations ?? new Dictionary<string, string>())
            .Where(kv => kv.Key == Api.Labels.PlacementAnnotation || kv.Key.StartsWith(ForwardedAnnotationPrefix, StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        return annotations.Count > 0 ? annotations : null;
    }

    /// <summary>A label's value, or null.</summary>
    public static string? Label(IKubernetesObject<V1ObjectMeta> obj, string key)
    {
        ArgumentNullException.ThrowIfNull(obj);
        return obj.Metadata?.Labels is { } labels && labels.TryGetValue(key, out var value) ? value : null;
    }

    /// <summary>True when <paramref name="obj"/> carries the labels of <paramref name="owner"/>'s <paramref name="component"/> child.</summary>
    public static bool IsComponentOf(IKubernetesObject<V1ObjectMeta> obj, IKubernetesObject<V1ObjectMeta> owner, string component)
    {
        ArgumentNullException.ThrowIfNull(owner);
        return Label(obj, Api.Labels.OwnerKey(owner.Kind)) == owner.Metadata.Name && Label(obj, Api.Labels.Component) == component;
    }

    internal static string Json(object value) => JsonSerializer.Serialize(value);
}
