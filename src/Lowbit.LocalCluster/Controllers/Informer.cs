using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Controllers;

/// <summary>
/// A watch-fed cache of one resource, shared by the in-process controllers (like client-go's shared
/// informer): it lists and watches through <see cref="ClusterApi.WatchAsync"/>, keeps the newest
/// <see cref="StoredObject"/> per key, indexes objects by owner uid, and calls the registered handlers
/// for every change (handlers must be quick; they enqueue keys). When the watch ends it starts again
/// from scratch, so a missed event is repaired by the relist.
/// </summary>
public sealed class Informer
{
    private readonly ClusterApi _api;
    private readonly object _gate = new();
    private readonly Dictionary<string, StoredObject> _items = new(StringComparer.Ordinal);
    private readonly Dictionary<string, HashSet<string>> _byOwner = new(StringComparer.Ordinal);
    private readonly List<Action<StoredObject?, StoredObject?>> _handlers = [];
    private readonly TaskCompletionSource _synced = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Informer(ClusterApi api, ResourceType type)
    {
        _api = api;
        Type = type;
    }

    public ResourceType Type { get; }

    /// <summary>Completes once the initial objects are in the cache.</summary>
    public Task Synced => _synced.Task;

    /// <summary>Registers a change handler: (old, new); old null on add, new null on delete.</summary>
    public void OnChange(Action<StoredObject?, StoredObject?> handler)
    {
        lock (_gate)
        {
            _handlers.Add(handler);
        }
    }

    public StoredObject? Get(string? ns, string name)
    {
        lock (_gate)
        {
            return _items.GetValueOrDefault(StoredObject.KeyOf(ns ?? "", name));
        }
    }

    public List<StoredObject> All()
    {
        lock (_gate)
        {
            return [.. _items.Values];
        }
    }

    /// <summary>The cached objects whose ownerReferences name <paramref name="ownerUid"/>.</summary>
    public List<StoredObject> OwnedBy(string ownerUid)
    {
        lock (_gate)
        {
            return _byOwner.TryGetValue(ownerUid, out var keys) ? keys.Select(k => _items[k]).ToList() : [];
        }
    }

    /// <summary>
    /// Records an object a controller just wrote (newer than the cache), so its next decision does not act on a
    /// stale copy before the watch delivers the change.
    /// </summary>
    public void Observe(StoredObject written)
    {
        lock (_gate)
        {
            if (_items.TryGetValue(written.Key, out var cached) && cached.ResourceVersion >= written.ResourceVersion)
            {
                return;
            }
            PutLocked(written);
        }
    }

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var initial = true;
            try
            {
                await foreach (var e in _api.WatchAsync(Type, null, new WatchOptions { SendInitialEvents = true, AllowBookmarks = true }, cancellationToken)
                    .ConfigureAwait(false))
                {
                    if (e.Type == WatchEventKind.Bookmark)
                    {
                        if (initial && e.InitialEventsEnd)
                        {
                            initial = false;
                            DropMissing(seen);
                            _synced.TrySetResult();
                        }
                        continue;
                    }
                    if (initial)
                    {
                        seen.Add(e.Object!.Key);
                    }
                    Apply(e);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // The watch failed (resource gone, history expired, server stopping): list and watch again.
            }
            if (!cancellationToken.IsCancellationRequested)
            {
                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private void Apply(WatchEvent e)
    {
        var obj = e.Object!;
        StoredObject? old;
        List<Action<StoredObject?, StoredObject?>> handlers;
        lock (_gate)
        {
            old = _items.GetValueOrDefault(obj.Key);
            if (e.Type == WatchEventKind.Deleted)
            {
                if (old is null)
                {
                    return;
                }
                RemoveLocked(old);
            }
            else
            {
                if (old is not null && old.ResourceVersion > obj.ResourceVersion)
                {
                    return;
                }
                if (old is not null && old.ResourceVersion == obj.ResourceVersion)
                {
                    // Already observed from a controller's own write: still tell the other handlers.
                    old = e.Previous;
                }
                PutLocked(obj);
            }
            handlers = [.. _handlers];
        }
        var next = e.Type == WatchEventKind.Deleted ? null : obj;
        foreach (var handler in handlers)
        {
            handler(old, next);
        }
    }

    private void DropMissing(HashSet<string> seen)
    {
        List<StoredObject> gone;
        List<Action<StoredObject?, StoredObject?>> handlers;
        lock (_gate)
        {
            gone = _items.Values.Where(o => !seen.Contains(o.Key)).ToList();
            foreach (var obj in gone)
            {
                RemoveLocked(obj);
            }
            handlers = [.. _handlers];
        }
        foreach (var obj in gone)
        {
            foreach (var handler in handlers)
            {
                handler(obj, null);
            }
        }
    }

    private void PutLocked(StoredObject obj)
    {
        if (_items.TryGetValue(obj.Key, out var old))
        {
            UnindexLocked(old);
        }
        _items[obj.Key] = obj;
        foreach (var owner in obj.OwnerUids)
        {
            if (!_byOwner.TryGetValue(owner, out var keys))
            {
                keys = new HashSet<string>(StringComparer.Ordinal);
                _byOwner[owner] = keys;
            }
            keys.Add(obj.Key);
        }
    }

    private void RemoveLocked(StoredObject obj)
    {
        _items.Remove(obj.Key);
        UnindexLocked(obj);
    }

    private void UnindexLocked(StoredObject obj)
    {
        foreach (var owner in obj.OwnerUids)
        {
            if (_byOwner.TryGetValue(owner, out var keys) && keys.Remove(obj.Key) && keys.Count == 0)
            {
                _byOwner.Remove(owner);
            }
        }
    }
}
