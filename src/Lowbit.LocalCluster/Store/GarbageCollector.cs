using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Lowbit.LocalCluster.Store;

/// <summary>
/// Owner-reference garbage collection, as the kube-controller-manager's garbage collector does it:
/// dependents whose owners are all gone are deleted (background), owners deleted in the foreground keep their
/// <c>foregroundDeletion</c> finalizer until their dependents are gone, and a terminating namespace is emptied
/// and then removed. Works from the store's change feed on one background task; <see cref="IdleAsync"/> lets
/// tests wait until it has caught up.
/// </summary>
public sealed class GarbageCollector : IDisposable
{
    private readonly ClusterApi _api;
    private readonly object _indexGate = new();
    private readonly Dictionary<string, Dictionary<string, Ref>> _dependents = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Ref> _byUid = new(StringComparer.Ordinal);
    private readonly Channel<Work> _work = Channel.CreateUnbounded<Work>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _loop;
    private int _pending;

    internal GarbageCollector(ClusterApi api)
    {
        _api = api;
        _api.Committed += OnCommitted;
        _loop = Task.Run(RunAsync);
    }

    private sealed record Ref(ResourceType Type, string Namespace, string Name, string Uid);

    private abstract record Work;

    private sealed record OwnerGone(string Uid) : Work;

    private sealed record ForegroundOwner(string Uid) : Work;

    private sealed record NamespaceTerminating(string Name) : Work;

    /// <summary>Completes once every change seen so far has been processed.</summary>
    public async Task IdleAsync(CancellationToken cancellationToken = default)
    {
        while (Volatile.Read(ref _pending) > 0)
        {
            await Task.Delay(5, cancellationToken).ConfigureAwait(false);
        }
    }

    internal List<(ResourceType Type, StoredObject Object)> DependentsOf(string ownerUid)
    {
        List<Ref> refs;
        lock (_indexGate)
        {
            refs = _dependents.TryGetValue(ownerUid, out var deps) ? [.. deps.Values] : [];
        }
        var result = new List<(ResourceType, StoredObject)>();
        foreach (var r in refs)
        {
            if (_api.TryGetStored(r.Type, r.Namespace, r.Name) is { } obj && obj.Uid == r.Uid)
            {
                result.Add((r.Type, obj));
            }
        }
        return result;
    }

    internal void RemoveOwnerReference(ResourceType type, StoredObject dependent, string ownerUid)
    {
        try
        {
            var obj = dependent.ToJsonObject();
            if (obj["metadata"]?["ownerReferences"] is not JsonArray refs)
            {
                return;
            }
            var kept = refs.Where(r => (string?)r?["uid"] != ownerUid).Select(r => r!.DeepClone()).ToArray();
            var patch = new JsonObject
            {
                ["metadata"] = new JsonObject
                {
                    ["ownerReferences"] = kept.Length == 0 ? null : new JsonArray(kept),
                    ["uid"] = dependent.Uid,
                },
            };
            _api.Patch(type, dependent.Namespace, dependent.Name, PatchKind.Merge, patch.ToJsonString(),
                new WriteOptions { FieldManager = "garbage-collector" });
        }
        catch (ApiException ex) when (ex.Code is 404 or 409)
        {
            // Gone or replaced meanwhile: nothing to orphan.
        }
    }

    /// <summary>Indexes restored objects (no events are raised for them) and queues pending deletions.</summary>
    internal void Rebuild(IEnumerable<(ResourceType Type, StoredObject Object)> objects)
    {
        foreach (var (type, obj) in objects)
        {
            Index(type, new WatchEvent(WatchEventKind.Added, obj, null, obj.ResourceVersion), restoring: true);
        }
    }

    /// <summary>Runs under the store lock: keeps the indexes current and queues work.</summary>
    private void OnCommitted(ResourceType type, WatchEvent e) => Index(type, e, restoring: false);

    private void Index(ResourceType type, WatchEvent e, bool restoring)
    {
        var obj = e.Object!;
        List<string>? absentOwners = null;
        lock (_indexGate)
        {
            foreach (var owner in e.Previous?.OwnerUids ?? [])
            {
                if (_dependents.TryGetValue(owner, out var deps))
                {
                    deps.Remove(obj.Uid);
                    if (deps.Count == 0)
                    {
                        _dependents.Remove(owner);
                    }
                }
            }
            if (e.Type == WatchEventKind.Deleted)
            {
                _byUid.Remove(obj.Uid);
            }
            else
            {
                var self = new Ref(type, obj.Namespace, obj.Name, obj.Uid);
                _byUid[obj.Uid] = self;
                foreach (var owner in obj.OwnerUids)
                {
                    if (!_dependents.TryGetValue(owner, out var deps))
                    {
                        deps = new Dictionary<string, Ref>(StringComparer.Ordinal);
                        _dependents[owner] = deps;
                    }
                    deps[obj.Uid] = self;
                }
                // Like kube's garbage collector: a new object whose owners are all gone already (e.g. a controller's
                // create racing its owner's deletion) is a dependent of nothing and gets collected.
                if (!restoring && e.Type == WatchEventKind.Added && obj.OwnerUids.Count > 0 && obj.OwnerUids.All(u => !_byUid.ContainsKey(u)))
                {
                    absentOwners = [.. obj.OwnerUids];
                }
            }
        }
        foreach (var owner in absentOwners ?? [])
        {
            Enqueue(new OwnerGone(owner));
        }
        if (e.Type == WatchEventKind.Deleted)
        {
            Enqueue(new OwnerGone(obj.Uid));
            foreach (var owner in obj.OwnerUids)
            {
                Enqueue(new ForegroundOwner(owner));
            }
            if (obj.Namespace.Length > 0)
            {
                Enqueue(new NamespaceTerminating(obj.Namespace));
            }
        }
        else if (obj.IsDeleting)
        {
            Enqueue(type == BuiltinResources.Namespaces ? new NamespaceTerminating(obj.Name) : new ForegroundOwner(obj.Uid));
        }
    }

    private void Enqueue(Work work)
    {
        Interlocked.Increment(ref _pending);
        if (!_work.Writer.TryWrite(work))
        {
            Interlocked.Decrement(ref _pending);
        }
    }

    private async Task RunAsync()
    {
        await foreach (var work in _work.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            try
            {
                Process(work);
            }
            catch (ApiException)
            {
                // Objects change under us (deleted, conflicting writes); the next change event retries.
            }
            finally
            {
                Interlocked.Decrement(ref _pending);
            }
        }
    }

    private void Process(Work work)
    {
        switch (work)
        {
            case OwnerGone gone:
                foreach (var (type, dependent) in DependentsOf(gone.Uid))
                {
                    bool ownerAlive;
                    lock (_indexGate)
                    {
                        ownerAlive = dependent.OwnerUids.Any(u => u != gone.Uid && _byUid.ContainsKey(u));
                    }
                    if (ownerAlive)
                    {
                        RemoveOwnerReference(type, dependent, gone.Uid);
                    }
                    else
                    {
                        TryDelete(type, dependent, PropagationPolicy.Background);
                    }
                }
                break;
            case ForegroundOwner owner:
                Ref? ownerRef;
                lock (_indexGate)
                {
                    ownerRef = _byUid.GetValueOrDefault(owner.Uid);
                }
                if (ownerRef is null || _api.TryGetStored(ownerRef.Type, ownerRef.Namespace, ownerRef.Name) is not { IsDeleting: true } ownerObj
                    || !HasFinalizer(ownerObj, "foregroundDeletion"))
                {
                    return;
                }
                var dependents = DependentsOf(owner.Uid);
                foreach (var (type, dependent) in dependents.Where(d => !d.Object.IsDeleting))
                {
                    TryDelete(type, dependent, PropagationPolicy.Foreground);
                }
                if (dependents.Count == 0)
                {
                    _api.RemoveFinalizer(ownerRef.Type, ownerRef.Namespace, ownerRef.Name, "foregroundDeletion");
                }
                break;
            case NamespaceTerminating ns:
                if (_api.TryGetStored(BuiltinResources.Namespaces, null, ns.Name) is not { IsDeleting: true })
                {
                    return;
                }
                var remaining = 0;
                foreach (var type in _api.Resources.All.Where(t => t.Namespaced).DistinctBy(t => t.BucketKey))
                {
                    foreach (var obj in _api.Scan(type, ns.Name))
                    {
                        remaining++;
                        if (!obj.IsDeleting)
                        {
                            TryDelete(type, obj, PropagationPolicy.Background);
                        }
                    }
                }
                if (remaining == 0)
                {
                    _api.FinishDeletion(BuiltinResources.Namespaces, null, ns.Name);
                }
                break;
        }
    }

    private static bool HasFinalizer(StoredObject obj, string finalizer) =>
        obj.ToJsonObject()["metadata"]?["finalizers"] is JsonArray list && list.Any(f => (string?)f == finalizer);

    private void TryDelete(ResourceType type, StoredObject obj, PropagationPolicy policy)
    {
        try
        {
            _api.Delete(type, obj.Namespace.Length == 0 ? null : obj.Namespace, obj.Name,
                new DeleteOptions { PropagationPolicy = policy, PreconditionUid = obj.Uid, GracePeriodSeconds = 0 });
        }
        catch (ApiException ex) when (ex.Code is 404 or 409)
        {
            // Already gone or replaced by a new object of the same name.
        }
    }

    public void Dispose()
    {
        _work.Writer.TryComplete();
        _api.Committed -= OnCommitted;
        _loop.Wait(TimeSpan.FromSeconds(5));
    }
}
