using k8s;
using k8s.Models;

namespace Lowbit.Operator.Runtime;

/// <summary>Maps an object of a watched kind to the reconcile requests it should cause.</summary>
public delegate IEnumerable<ObjectKey> MapToRequests<in TObject>(TObject obj);

/// <summary>Enqueues the requests an informer event maps to (controller-runtime's <c>handler.EventHandler</c>).</summary>
public sealed class EnqueueRequests<TObject>(RateLimitingQueue<ObjectKey> queue, MapToRequests<TObject> map) : IInformerEventHandler<TObject>
{
    public void OnAdd(TObject obj) => Enqueue(obj);

    public void OnUpdate(TObject oldObj, TObject newObj)
    {
        // Both sides: an owner reference (or a referenced name) that changed must reach the old owner as well.
        Enqueue(oldObj);
        Enqueue(newObj);
    }

    public void OnDelete(TObject obj) => Enqueue(obj);

    private void Enqueue(TObject obj)
    {
        foreach (var key in map(obj))
        {
            queue.Add(key);
        }
    }
}

/// <summary>The standard mappings.</summary>
public static class RequestMappers
{
    /// <summary>The object itself (for the controller's primary kind).</summary>
    public static IEnumerable<ObjectKey> Self(IKubernetesObject<V1ObjectMeta> obj)
    {
        yield return ObjectKey.Of(obj);
    }

    /// <summary>
    /// The owner named by the object's controller owner reference, if that owner is of kind <paramref name="owner"/>
    /// (kind and apiVersion both match). Owner references are namespace-local, so the owner shares the namespace.
    /// </summary>
    public static MapToRequests<IKubernetesObject<V1ObjectMeta>> ControllerOwner(ResourceType owner)
    {
        ArgumentNullException.ThrowIfNull(owner);
        return obj => ControllerOwnerOf(obj, owner);
    }

    public static IEnumerable<ObjectKey> ControllerOwnerOf(IKubernetesObject<V1ObjectMeta> obj, ResourceType owner)
    {
        ArgumentNullException.ThrowIfNull(obj);
        var reference = obj.Metadata?.OwnerReferences?.FirstOrDefault(r => r.Controller == true);
        if (reference is not null && owner.Matches(reference))
        {
            var ns = obj.Metadata!.NamespaceProperty;
            yield return new ObjectKey(string.IsNullOrEmpty(ns) ? null : ns, reference.Name);
        }
    }
}
