using System.Diagnostics.CodeAnalysis;
using k8s;
using k8s.Models;
using Lowbit.Operator.Runtime;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>The operator's cache, as a fixed list of objects.</summary>
internal sealed class MemoryObjectCache(IReadOnlyList<object> objects) : IObjectCache
{
    public bool TryGet<T>(ObjectKey key, [MaybeNullWhen(false)] out T obj)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        obj = List<T>(key.Namespace).FirstOrDefault(o => o.Metadata.Name == key.Name);
        return obj is not null;
    }

    public IReadOnlyList<T> List<T>(string? ns = null)
        where T : class, IKubernetesObject<V1ObjectMeta> =>
        objects.OfType<T>().Where(o => ns is null || o.Metadata.NamespaceProperty == ns).ToList();

    public IReadOnlyList<ObjectKey> KeysByIndex<T>(string index, string value)
        where T : class, IKubernetesObject<V1ObjectMeta> => throw new NotSupportedException("the resolver reads no index");

    public IReadOnlyList<TChild> ListOwnedBy<TChild>(IKubernetesObject<V1ObjectMeta> owner)
        where TChild : class, IKubernetesObject<V1ObjectMeta> => [];
}
