using k8s.Models;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Controllers;

/// <summary>
/// Creates and deletes the pods of a controller (Job, ReplicaSet) and remembers what it did until the pod
/// informer shows it ("expectations" in kube-controller-manager), so a reconcile that runs before the watch
/// catches up neither creates a second pod nor counts a deleted one.
/// </summary>
public sealed class PodControl
{
    private readonly ClusterApi _api;
    private readonly Informer _pods;
    private readonly object _gate = new();
    private readonly Dictionary<string, HashSet<string>> _created = new(StringComparer.Ordinal);
    private readonly Dictionary<string, HashSet<string>> _deleted = new(StringComparer.Ordinal);

    public PodControl(ClusterApi api, Informer pods)
    {
        _api = api;
        _pods = pods;
    }

    /// <summary>The pods this owner controls: the informer's view plus created pods it has not seen yet, minus deleted ones.</summary>
    public List<V1Pod> PodsOf(string ownerUid)
    {
        var observed = _pods.OwnedBy(ownerUid);
        var pods = new List<V1Pod>(observed.Count);
        lock (_gate)
        {
            _created.TryGetValue(ownerUid, out var created);
            _deleted.TryGetValue(ownerUid, out var deleted);
            foreach (var stored in observed)
            {
                created?.Remove(stored.Key);
                if (deleted is not null && deleted.Contains(stored.Key) && !stored.IsDeleting)
                {
                    continue;
                }
                deleted?.Remove(stored.Key);
                var pod = stored.As<V1Pod>();
                if (Typed.ControllerOf(pod.Metadata)?.Uid == ownerUid)
                {
                    pods.Add(pod);
                }
            }
            foreach (var key in created ?? [])
            {
                var (ns, name) = Typed.SplitKey(key);
                pods.Add(new V1Pod
                {
                    Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns, CreationTimestamp = DateTime.MaxValue },
                    Status = new V1PodStatus { Phase = "Pending" },
                });
            }
            if (deleted is not null)
            {
                deleted.RemoveWhere(key => !observed.Any(o => o.Key == key));
            }
        }
        return pods;
    }

    public V1Pod Create(string ns, V1PodTemplateSpec template, string generateName, V1OwnerReference owner, IDictionary<string, string>? extraLabels = null)
    {
        var labels = new Dictionary<string, string>(template.Metadata?.Labels ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        foreach (var (k, v) in extraLabels ?? new Dictionary<string, string>())
        {
            labels[k] = v;
        }
        var pod = new V1Pod
        {
            ApiVersion = "v1",
            Kind = "Pod",
            Metadata = new V1ObjectMeta
            {
                GenerateName = generateName,
                NamespaceProperty = ns,
                Labels = labels,
                Annotations = template.Metadata?.Annotations,
                OwnerReferences = [owner],
                Finalizers = template.Metadata?.Finalizers,
            },
            Spec = template.Spec,
        };
        var created = _api.Create(BuiltinResources.Pods, ns, pod);
        lock (_gate)
        {
            Set(_created, owner.Uid).Add(StoredObject.KeyOf(ns, created.Metadata.Name));
        }
        return created;
    }

    public void Delete(string ownerUid, V1Pod pod)
    {
        try
        {
            _api.Delete(BuiltinResources.Pods, pod.Metadata.NamespaceProperty, pod.Metadata.Name,
                new DeleteOptions { PreconditionUid = pod.Metadata.Uid });
        }
        catch (ApiException ex) when (ex.Code is 404 or 409)
        {
            return;
        }
        lock (_gate)
        {
            Set(_deleted, ownerUid).Add(Typed.KeyOf(pod.Metadata));
        }
    }

    /// <summary>Forgets an owner (it was deleted).</summary>
    public void Forget(string ownerUid)
    {
        lock (_gate)
        {
            _created.Remove(ownerUid);
            _deleted.Remove(ownerUid);
        }
    }

    public static bool IsTerminal(V1Pod pod) => pod.Status?.Phase is "Succeeded" or "Failed";

    public static bool IsActive(V1Pod pod) => !IsTerminal(pod) && pod.Metadata.DeletionTimestamp is null;

    public static bool IsReady(V1Pod pod) =>
        pod.Status?.Conditions?.Any(c => c.Type == "Ready" && c.Status == "True") == true;

    private static HashSet<string> Set(Dictionary<string, HashSet<string>> map, string key)
    {
        if (!map.TryGetValue(key, out var set))
        {
            set = new HashSet<string>(StringComparer.Ordinal);
            map[key] = set;
        }
        return set;
    }
}
