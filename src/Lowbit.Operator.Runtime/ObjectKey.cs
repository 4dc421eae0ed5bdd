using k8s;
using k8s.Models;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// A reconcile request: the namespace and name of one object (namespace is null for cluster-scoped kinds).
/// </summary>
public sealed record ObjectKey(string? Namespace, string Name)
{
    public static ObjectKey Of(IKubernetesObject<V1ObjectMeta> obj)
    {
        ArgumentNullException.ThrowIfNull(obj);
        var meta = obj.Metadata ?? throw new ArgumentException("object has no metadata", nameof(obj));
        return new ObjectKey(string.IsNullOrEmpty(meta.NamespaceProperty) ? null : meta.NamespaceProperty, meta.Name);
    }

    public override string ToString() => Namespace is null ? Name : $"{Namespace}/{Name}";
}
