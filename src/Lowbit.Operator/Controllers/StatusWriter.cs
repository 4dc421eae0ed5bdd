using k8s;
using k8s.Models;
using Lowbit.Operator.Runtime;

namespace Lowbit.Operator.Controllers;

/// <summary>
/// Writes a custom resource's status through the <c>/status</c> subresource, once, only when it changed. The write
/// carries the cached resourceVersion, so a concurrent change answers 409 and the key is requeued (never a blind overwrite).
/// </summary>
public sealed class StatusWriter(IKubernetes client)
{
    /// <summary>True when a write was made.</summary>
    public async Task<bool> WriteAsync<T, TStatus>(T obj, TStatus? current, TStatus desired, Action<T, TStatus> set, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
        where TStatus : class
    {
        ArgumentNullException.ThrowIfNull(obj);
        ArgumentNullException.ThrowIfNull(set);
        if (current is not null && KubernetesJson.Serialize(current) == KubernetesJson.Serialize(desired))
        {
            return false;
        }

        var type = ResourceType.For<T>();
        var copy = KubernetesJson.Deserialize<T>(KubernetesJson.Serialize(obj));
        set(copy, desired);
        await client.CustomObjects.ReplaceNamespacedCustomObjectStatusAsync(copy, type.Group, type.Version, obj.Metadata.NamespaceProperty,
            type.Plural, obj.Metadata.Name, fieldManager: Api.Labels.FieldManager, cancellationToken: cancellationToken).ConfigureAwait(false);
        return true;
    }
}
