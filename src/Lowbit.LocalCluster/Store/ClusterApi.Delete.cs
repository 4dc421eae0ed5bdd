using System.Globalization;
using System.Text.Json.Nodes;

namespace Lowbit.LocalCluster.Store;

public sealed partial class ClusterApi
{
    /// <summary>
    /// Deletes an object. With finalizers (or Foreground propagation, which adds <c>foregroundDeletion</c>)
    /// the object only gets a deletionTimestamp and is removed once its finalizers are empty; otherwise it goes
    /// at once. Orphan removes the owner reference from dependents first; Background (the default) leaves
    /// dependents to the <see cref="GarbageCollector"/>. Returns the object's last state.
    /// </summary>
    public JsonObject Delete(ResourceType type, string? ns, string name, DeleteOptions? options = null)
    {
        options ??= DeleteOptions.Default;
        CheckScope(type, ns);
        if (options.PropagationPolicy == PropagationPolicy.Orphan && !options.DryRun && TryGetStored(type, ns, name) is { } owner)
        {
            // Orphan first, so the garbage collector never sees these dependents without a live owner.
            foreach (var (dependentType, dependent) in GarbageCollector.DependentsOf(owner.Uid))
            {
                GarbageCollector.RemoveOwnerReference(dependentType, dependent, owner.Uid);
            }
        }
        JsonObject result;
        lock (_gate)
        {
            var current = GetStoredLocked(type, ns, name);
            if (options.PreconditionUid is { Length: > 0 } uid && uid != current.Uid)
            {
                throw ApiException.Conflict(type, name, $"Precondition failed: UID in precondition: {uid}, UID in object meta: {current.Uid}");
            }
            if (options.PreconditionResourceVersion is { Length: > 0 } rv && rv != current.ResourceVersion.ToString(CultureInfo.InvariantCulture))
            {
                throw ApiException.Conflict(type, name, $"Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {current.ResourceVersion}");
            }
            var obj = current.ToJsonObject();
            if (options.DryRun)
            {
                return obj;
            }
            var meta = obj["metadata"]!.AsObject();
            var finalizers = meta["finalizers"] as JsonArray ?? [];
            var policy = options.PropagationPolicy ?? PropagationPolicy.Background;
            var gracefulPod = type == BuiltinResources.Pods && Options.GracefulPodDeletion && options.GracePeriodSeconds != 0;
            var isNamespace = type == BuiltinResources.Namespaces;
            if (policy == PropagationPolicy.Foreground && GarbageCollector.DependentsOf(current.Uid).Count > 0
                && !finalizers.Any(f => (string?)f == ForegroundFinalizer))
            {
                finalizers.Add(ForegroundFinalizer);
                meta["finalizers"] = finalizers.DeepClone();
            }
            if (finalizers.Count > 0 || gracefulPod || isNamespace)
            {
                meta["deletionTimestamp"] ??= NowString();
                meta["deletionGracePeriodSeconds"] ??= gracefulPod ? options.GracePeriodSeconds ?? 30 : 0;
                if (isNamespace)
                {
                    obj["status"] = new JsonObject { ["phase"] = "Terminating" };
                }
                if (JsonNode.DeepEquals(current.ToJsonObject(), obj))
                {
                    return obj;
                }
                var stored = CommitLocked(type, obj, WatchEventKind.Modified, current);
                result = stored.ToJsonObject();
            }
            else
            {
                result = RemoveLocked(type, obj, current).ToJsonObject();
            }
        }
        return result;
    }

    /// <summary>Removes an object for good (DELETED event); a CRD also takes its resource and objects with it.</summary>
    private StoredObject RemoveLocked(ResourceType type, JsonObject last, StoredObject current)
    {
        var stored = CommitLocked(type, last, WatchEventKind.Deleted, current);
        if (type == BuiltinResources.CustomResourceDefinitions)
        {
            DeactivateCrdLocked(last);
        }
        return stored;
    }

    /// <summary>Removes a finalizer (no-op when absent); used by the garbage collector and handy for controllers.</summary>
    public JsonObject? RemoveFinalizer(ResourceType type, string? ns, string name, string finalizer)
    {
        lock (_gate)
        {
            var current = TryGetStoredLocked(type, ns, name);
            if (current is null)
            {
                return null;
            }
            var obj = current.ToJsonObject();
            if (obj["metadata"]?["finalizers"] is not JsonArray finalizers || !finalizers.Any(f => (string?)f == finalizer))
            {
                return obj;
            }
            var kept = new JsonArray(finalizers.Where(f => (string?)f != finalizer).Select(f => f!.DeepClone()).ToArray());
            if (kept.Count == 0)
            {
                obj["metadata"]!.AsObject().Remove("finalizers");
            }
            else
            {
                obj["metadata"]!["finalizers"] = kept;
            }
            if (obj["metadata"]?["deletionTimestamp"] is not null && kept.Count == 0)
            {
                return RemoveLocked(type, obj, current).ToJsonObject();
            }
            return CommitLocked(type, obj, WatchEventKind.Modified, current).ToJsonObject();
        }
    }

    /// <summary>Removes an object whose deletion is pending (namespaces once empty, graceful pods by a kubelet).</summary>
    public void FinishDeletion(ResourceType type, string? ns, string name)
    {
        lock (_gate)
        {
            var current = TryGetStoredLocked(type, ns, name);
            if (current is null || !current.IsDeleting)
            {
                return;
            }
            RemoveLocked(type, current.ToJsonObject(), current);
        }
    }

    private void ActivateCrdLocked(JsonObject crd)
    {
        var name = (string?)crd["metadata"]?["name"] ?? "";
        if (crd["metadata"]?["deletionTimestamp"] is not null)
        {
            return;
        }
        var types = CustomResources.TypesOf(crd);
        var before = Resources.All.Where(t => t.IsCustom && $"{t.Plural}.{t.Group}" == name).Select(t => t.BucketKey).Distinct().ToList();
        Resources.ReplaceCustom(name, types);
        foreach (var key in before.Except(types.Select(t => t.BucketKey)))
        {
            DropBucketLocked(key);
        }
    }

    private void DeactivateCrdLocked(JsonObject crd)
    {
        var name = (string?)crd["metadata"]?["name"] ?? "";
        var keys = Resources.All.Where(t => t.IsCustom && $"{t.Plural}.{t.Group}" == name).Select(t => t.BucketKey).Distinct().ToList();
        Resources.ReplaceCustom(name, []);
        foreach (var key in keys)
        {
            DropBucketLocked(key);
        }
    }
}
