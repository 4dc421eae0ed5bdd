using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Lowbit.LocalCluster.Patching;

namespace Lowbit.LocalCluster.Store;

/// <summary>
/// Typed conveniences over the JsonObject API for KubernetesClient models (<c>V1Pod</c>, <c>V1Job</c>, ...):
/// the resource comes from the model's <c>[KubernetesEntity]</c> attribute, the namespace from its metadata.
/// Custom resources use the JsonObject methods with a <see cref="ResourceType"/> from <see cref="Resources"/>.
/// </summary>
public sealed partial class ClusterApi
{
    public T Get<T>(string? ns, string name) where T : IKubernetesObject<V1ObjectMeta> =>
        FromJson<T>(Get(Resources.For<T>(), ns, name));

    public T? TryGet<T>(string? ns, string name) where T : class, IKubernetesObject<V1ObjectMeta> =>
        TryGet(Resources.For<T>(), ns, name) is { } obj ? FromJson<T>(obj) : null;

    /// <summary>Lists objects of a kind (all namespaces when <paramref name="ns"/> is null).</summary>
    public IReadOnlyList<T> List<T>(string? ns = null, ListOptions? options = null) where T : IKubernetesObject<V1ObjectMeta> =>
        List(Resources.For<T>(), ns, options).Items.Select(o => FromJson<T>(o.ToJsonObject())).ToList();

    public T Create<T>(T obj, WriteOptions? options = null) where T : IKubernetesObject<V1ObjectMeta> =>
        FromJson<T>(Create(Resources.For<T>(), obj.Metadata?.NamespaceProperty, ToJson(obj), options));

    /// <summary>Replaces the object (status is kept as stored); its metadata.resourceVersion, when set, must be current.</summary>
    public T Update<T>(T obj, WriteOptions? options = null) where T : IKubernetesObject<V1ObjectMeta> =>
        FromJson<T>(Update(Resources.For<T>(), obj.Metadata?.NamespaceProperty, obj.Metadata?.Name ?? "", ToJson(obj), options));

    /// <summary>Writes only the status (the <c>/status</c> subresource); generation does not change.</summary>
    public T UpdateStatus<T>(T obj, WriteOptions? options = null) where T : IKubernetesObject<V1ObjectMeta> =>
        FromJson<T>(Update(Resources.For<T>(), obj.Metadata?.NamespaceProperty, obj.Metadata?.Name ?? "", ToJson(obj), options, "status"));

    public T Patch<T>(string? ns, string name, PatchKind kind, string body, WriteOptions? options = null, string? subresource = null)
        where T : IKubernetesObject<V1ObjectMeta> =>
        FromJson<T>(Patch(Resources.For<T>(), ns, name, kind, body, options, subresource));

    /// <summary>Server-side apply of the full desired object with <paramref name="fieldManager"/>.</summary>
    public T Apply<T>(T desired, string fieldManager, string? subresource = null) where T : IKubernetesObject<V1ObjectMeta> =>
        FromJson<T>(Apply(Resources.For<T>(), desired.Metadata?.NamespaceProperty, desired.Metadata?.Name ?? "", ToJson(desired),
            new WriteOptions { FieldManager = fieldManager, Force = true }, subresource));

    public T Delete<T>(string? ns, string name, DeleteOptions? options = null) where T : IKubernetesObject<V1ObjectMeta> =>
        FromJson<T>(Delete(Resources.For<T>(), ns, name, options));

    /// <summary>Watches a kind; bookmarks come through with a null object.</summary>
    public async IAsyncEnumerable<(WatchEventKind Type, T? Object, long ResourceVersion)> WatchAsync<T>(string? ns, WatchOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default) where T : class, IKubernetesObject<V1ObjectMeta>
    {
        await foreach (var e in WatchAsync(Resources.For<T>(), ns, options, cancellationToken).ConfigureAwait(false))
        {
            yield return (e.Type, e.Object is null ? null : FromJson<T>(e.Object.ToJsonObject()), e.ResourceVersion);
        }
    }

    public static JsonObject ToJson<T>(T obj) => JsonNode.Parse(KubernetesJson.Serialize(obj))!.AsObject();

    public static T FromJson<T>(JsonObject obj) => KubernetesJson.Deserialize<T>(obj.ToJsonString());
}
