using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Lowbit.LocalCluster.Store;

/// <summary>
/// The in-memory object store with the API server's semantics: one global resourceVersion counter,
/// uid and creationTimestamp, generation (bumped on spec changes only), optimistic concurrency,
/// status subresources, finalizers and deletion propagation, CRDs that become live resources, and
/// watches with a bounded history per resource. The HTTP server is a thin layer over this class;
/// in-process controllers call it directly (JsonObject methods, or the typed helpers in
/// <c>ClusterApi.Typed.cs</c>). Every method is thread-safe; writes are serialized by one lock.
/// Errors are <see cref="ApiException"/>s carrying the HTTP code and Status reason.
/// </summary>
public sealed partial class ClusterApi
{
    private readonly object _gate = new();
    private readonly Dictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;
    private long _resourceVersion;

    /// <summary>A fresh store with the initial namespaces, or one restored from <paramref name="stateDirectory"/>'s snapshot.</summary>
    public ClusterApi(ClusterApiOptions? options = null, TimeProvider? time = null, string? stateDirectory = null)
    {
        Options = options ?? new ClusterApiOptions();
        _time = time ?? TimeProvider.System;
        Resources = new ResourceCatalog();
        var snapshot = stateDirectory is null ? null : StateSnapshot.Load(stateDirectory);
        if (snapshot is { } state)
        {
            Restore(state.ResourceVersion, state.Objects);
        }
        GarbageCollector = new GarbageCollector(this);
        if (snapshot is null)
        {
            foreach (var ns in BuiltinResources.InitialNamespaces)
            {
                Create(BuiltinResources.Namespaces, null, new JsonObject { ["metadata"] = new JsonObject { ["name"] = ns } });
            }
        }
        else
        {
            GarbageCollector.Rebuild(SnapshotAll(out _).Select(o => (Resources.All.First(t => t.BucketKey == o.Bucket), o.Object)));
        }
    }

    private void Restore(long resourceVersion, List<(string Bucket, JsonObject Object)> objects)
    {
        lock (_gate)
        {
            _resourceVersion = resourceVersion;
            foreach (var (bucketKey, obj) in objects)
            {
                var rv = long.Parse((string?)obj["metadata"]?["resourceVersion"] ?? "0", System.Globalization.CultureInfo.InvariantCulture);
                var stored = StoredObject.From(obj, rv);
                if (!_buckets.TryGetValue(bucketKey, out var bucket))
                {
                    bucket = new Bucket { HistoryFloor = resourceVersion };
                    _buckets[bucketKey] = bucket;
                }
                bucket.Items[stored.Key] = stored;
                if (bucketKey == BuiltinResources.CustomResourceDefinitions.BucketKey)
                {
                    ActivateCrdLocked(obj);
                }
            }
        }
    }

    public ClusterApiOptions Options { get; }

    /// <summary>The served resources (built-ins and live CRD versions).</summary>
    public ResourceCatalog Resources { get; }

    /// <summary>Deletes dependents whose owners are gone, finishes foreground deletions and namespace deletions.</summary>
    public GarbageCollector GarbageCollector { get; }

    /// <summary>The newest resourceVersion handed out.</summary>
    public long CurrentResourceVersion
    {
        get
        {
            lock (_gate)
            {
                return _resourceVersion;
            }
        }
    }

    /// <summary>Raised under the store lock after every committed change (keep handlers short and non-blocking).</summary>
    internal event Action<ResourceType, WatchEvent>? Committed;

    internal TimeProvider Time => _time;

    /// <summary>Gets one object (a fresh copy) or throws 404.</summary>
    public JsonObject Get(ResourceType type, string? ns, string name) => GetStored(type, ns, name).ToJsonObject();

    /// <summary>Gets one object, or null when it does not exist.</summary>
    public JsonObject? TryGet(ResourceType type, string? ns, string name) => TryGetStored(type, ns, name)?.ToJsonObject();

    public StoredObject GetStored(ResourceType type, string? ns, string name) =>
        TryGetStored(type, ns, name) ?? throw ApiException.NotFound(type, name);

    public StoredObject? TryGetStored(ResourceType type, string? ns, string name)
    {
        CheckScope(type, ns);
        lock (_gate)
        {
            return BucketOf(type).Items.GetValueOrDefault(StoredObject.KeyOf(Scope(type, ns), name));
        }
    }

    /// <summary>Lists objects of a resource, in one namespace or (ns null) all, with selectors and paging.</summary>
    public ObjectList List(ResourceType type, string? ns, ListOptions? options = null)
    {
        options ??= ListOptions.Default;
        var labels = LabelSelector.Parse(options.LabelSelector);
        var fields = FieldSelector.Parse(options.FieldSelector, type);
        var (startAfter, listRv) = DecodeContinue(options.Continue);
        var scope = type.Namespaced ? ns : null;
        var limit = options.Limit is > 0 ? options.Limit.Value : int.MaxValue;
        var items = new List<StoredObject>();
        string? next = null;
        long? remaining = null;
        lock (_gate)
        {
            var bucket = BucketOf(type);
            listRv ??= _resourceVersion;
            if (fields.PinnedName is { } pinned && (scope is not null || !type.Namespaced))
            {
                if (bucket.Items.TryGetValue(StoredObject.KeyOf(scope ?? "", pinned), out var one) && labels.Matches(one.Labels) && fields.Matches(one))
                {
                    items.Add(one);
                }
                return new ObjectList(items, listRv.Value, null, null);
            }
            var prefix = scope is null ? null : scope + "/";
            foreach (var (key, obj) in bucket.Items)
            {
                if (startAfter is not null && string.CompareOrdinal(key, startAfter) <= 0)
                {
                    continue;
                }
                if (prefix is not null && !key.StartsWith(prefix, StringComparison.Ordinal))
                {
                    continue;
                }
                if (!labels.Matches(obj.Labels) || !fields.Matches(obj))
                {
                    continue;
                }
                if (items.Count == limit)
                {
                    next = EncodeContinue(items[^1].Key, listRv.Value);
                    remaining = 1 + bucket.Items.Count(kv => string.CompareOrdinal(kv.Key, key) > 0
                        && (prefix is null || kv.Key.StartsWith(prefix, StringComparison.Ordinal))
                        && labels.Matches(kv.Value.Labels) && fields.Matches(kv.Value));
                    break;
                }
                items.Add(obj);
            }
        }
        return new ObjectList(items, listRv.Value, next, remaining);
    }

    /// <summary>
    /// Watches a resource. Without a resourceVersion (or "0") the current objects come first as ADDED;
    /// with one, the events after it (an <see cref="ApiException"/> 410 when it is older than the history).
    /// Label and field selectors turn changes into ADDED/DELETED as objects enter or leave the selection.
    /// Ends when <paramref name="cancellationToken"/> fires or the resource stops being served.
    /// </summary>
    public async IAsyncEnumerable<WatchEvent> WatchAsync(ResourceType type, string? ns, WatchOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options ??= WatchOptions.Default;
        var labels = LabelSelector.Parse(options.LabelSelector);
        var fields = FieldSelector.Parse(options.FieldSelector, type);
        var scope = type.Namespaced ? ns : null;
        bool Matches(StoredObject? o) => o is not null && (scope is null || o.Namespace == scope) && labels.Matches(o.Labels) && fields.Matches(o);

        var subscriber = new Subscriber();
        List<WatchEvent> backlog;
        long startRv;
        Bucket bucket;
        var initial = options.SendInitialEvents ?? (string.IsNullOrEmpty(options.ResourceVersion) || options.ResourceVersion == "0");
        lock (_gate)
        {
            bucket = BucketOf(type);
            startRv = _resourceVersion;
            if (initial)
            {
                backlog = bucket.Items.Values.Where(Matches).Select(o => new WatchEvent(WatchEventKind.Added, o, null, o.ResourceVersion)).ToList();
            }
            else
            {
                if (!long.TryParse(options.ResourceVersion, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var from))
                {
                    throw ApiException.BadRequest($"invalid resourceVersion \"{options.ResourceVersion}\": expected a resourceVersion from a list or watch");
                }
                if (from < bucket.HistoryFloor)
                {
                    throw ApiException.Gone($"too old resource version: {from} ({bucket.HistoryFloor})");
                }
                backlog = bucket.History.Where(e => e.ResourceVersion > from).ToList();
            }
            bucket.Subscribers.Add(subscriber);
        }
        try
        {
            foreach (var e in backlog)
            {
                if (initial ? true : Translate(e, Matches) is not null)
                {
                    yield return initial ? e : Translate(e, Matches)!;
                }
            }
            if (options.SendInitialEvents == true && options.AllowBookmarks)
            {
                yield return new WatchEvent(WatchEventKind.Bookmark, null, null, startRv) { InitialEventsEnd = true };
            }
            var interval = options.BookmarkInterval ?? Options.BookmarkInterval;
            var reader = subscriber.Channel.Reader;
            while (!cancellationToken.IsCancellationRequested)
            {
                while (reader.TryRead(out var e))
                {
                    if (Translate(e, Matches) is { } translated)
                    {
                        yield return translated;
                    }
                }
                if (subscriber.Closed)
                {
                    yield break;
                }
                var wait = await WaitAsync(reader, options.AllowBookmarks ? interval : Timeout.InfiniteTimeSpan, cancellationToken).ConfigureAwait(false);
                if (wait == WaitResult.Ended)
                {
                    yield break;
                }
                if (wait == WaitResult.Idle)
                {
                    long bookmarkRv;
                    lock (_gate)
                    {
                        bookmarkRv = reader.TryPeek(out _) ? 0 : _resourceVersion;
                    }
                    if (bookmarkRv > 0)
                    {
                        yield return new WatchEvent(WatchEventKind.Bookmark, null, null, bookmarkRv);
                    }
                }
            }
        }
        finally
        {
            lock (_gate)
            {
                bucket.Subscribers.Remove(subscriber);
            }
        }
    }

    private enum WaitResult
    {
        Ready,
        Idle,
        Ended,
    }

    private static async Task<WaitResult> WaitAsync(ChannelReader<WatchEvent> reader, TimeSpan idle, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (idle != Timeout.InfiniteTimeSpan)
        {
            timeout.CancelAfter(idle);
        }
        try
        {
            return await reader.WaitToReadAsync(timeout.Token).ConfigureAwait(false) ? WaitResult.Ready : WaitResult.Ended;
        }
        catch (OperationCanceledException)
        {
            return cancellationToken.IsCancellationRequested ? WaitResult.Ended : WaitResult.Idle;
        }
    }

    private static WatchEvent? Translate(WatchEvent e, Func<StoredObject?, bool> matches)
    {
        if (e.Type == WatchEventKind.Bookmark)
        {
            return e;
        }
        var now = matches(e.Object);
        if (e.Type == WatchEventKind.Deleted)
        {
            return now ? e : null;
        }
        var before = matches(e.Previous);
        return (before, now) switch
        {
            (true, true) => e,
            (false, true) => e with { Type = WatchEventKind.Added },
            (true, false) => e with { Type = WatchEventKind.Deleted },
            _ => null,
        };
    }

    /// <summary>Every stored object of every resource, for snapshots (bucket key, object).</summary>
    internal List<(string Bucket, StoredObject Object)> SnapshotAll(out long resourceVersion)
    {
        lock (_gate)
        {
            resourceVersion = _resourceVersion;
            return _buckets.SelectMany(b => b.Value.Items.Values.Select(o => (b.Key, o))).ToList();
        }
    }

    /// <summary>Objects of a resource in a namespace (or all), without copying JSON.</summary>
    internal List<StoredObject> Scan(ResourceType type, string? ns)
    {
        lock (_gate)
        {
            var bucket = BucketOf(type);
            return ns is null ? [.. bucket.Items.Values] : bucket.Items.Values.Where(o => o.Namespace == ns).ToList();
        }
    }

    private Bucket BucketOf(ResourceType type)
    {
        if (!_buckets.TryGetValue(type.BucketKey, out var bucket))
        {
            bucket = new Bucket { HistoryFloor = _resourceVersion };
            _buckets[type.BucketKey] = bucket;
        }
        return bucket;
    }

    private static void CheckScope(ResourceType type, string? ns)
    {
        if (type.Namespaced && string.IsNullOrEmpty(ns))
        {
            throw ApiException.BadRequest($"{type.GroupResource} is namespaced: a namespace is required");
        }
    }

    private static string Scope(ResourceType type, string? ns) => type.Namespaced ? ns ?? "" : "";

    private static string EncodeContinue(string lastKey, long rv) =>
        Convert.ToBase64String(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new JsonObject { ["rv"] = rv, ["start"] = lastKey })));

    private static (string? StartAfter, long? Rv) DecodeContinue(string? token)
    {
        if (string.IsNullOrEmpty(token))
        {
            return (null, null);
        }
        try
        {
            var obj = JsonNode.Parse(Convert.FromBase64String(token))!.AsObject();
            return ((string?)obj["start"], (long?)obj["rv"]);
        }
        catch (Exception ex) when (ex is FormatException or JsonException or InvalidOperationException)
        {
            throw ApiException.BadRequest($"continue key is not valid: {ex.Message}");
        }
    }

    /// <summary>Stores one change under the lock: assigns the next resourceVersion, records history and notifies watchers.</summary>
    private StoredObject CommitLocked(ResourceType type, JsonObject obj, WatchEventKind eventType, StoredObject? previous)
    {
        var rv = ++_resourceVersion;
        obj["metadata"]!["resourceVersion"] = rv.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var stored = StoredObject.From(obj, rv);
        var bucket = BucketOf(type);
        if (eventType == WatchEventKind.Deleted)
        {
            bucket.Items.Remove(stored.Key);
        }
        else
        {
            bucket.Items[stored.Key] = stored;
        }
        var e = new WatchEvent(eventType, stored, previous, rv);
        bucket.History.Enqueue(e);
        while (bucket.History.Count > Options.WatchHistoryPerResource)
        {
            bucket.HistoryFloor = bucket.History.Dequeue().ResourceVersion;
        }
        foreach (var subscriber in bucket.Subscribers)
        {
            if (subscriber.Channel.Reader.Count >= Options.MaxPendingWatchEvents)
            {
                // A watcher this far behind is cut off, as kube-apiserver does; it resumes or relists.
                subscriber.Closed = true;
                subscriber.Channel.Writer.TryComplete();
                continue;
            }
            subscriber.Channel.Writer.TryWrite(e);
        }
        Committed?.Invoke(type, e);
        return stored;
    }

    /// <summary>Drops a whole bucket (a deleted CRD): watchers end, objects go without events.</summary>
    private void DropBucketLocked(string bucketKey)
    {
        if (_buckets.Remove(bucketKey, out var bucket))
        {
            foreach (var subscriber in bucket.Subscribers)
            {
                subscriber.Closed = true;
                subscriber.Channel.Writer.TryComplete();
            }
        }
    }

    /// <summary>Ends every watch (server stop).</summary>
    internal void CloseAllWatches()
    {
        lock (_gate)
        {
            foreach (var subscriber in _buckets.Values.SelectMany(b => b.Subscribers))
            {
                subscriber.Closed = true;
                subscriber.Channel.Writer.TryComplete();
            }
        }
    }

    private sealed class Bucket
    {
        public SortedDictionary<string, StoredObject> Items { get; } = new(StringComparer.Ordinal);

        public Queue<WatchEvent> History { get; } = new();

        /// <summary>Events with a resourceVersion above this are all in <see cref="History"/>.</summary>
        public long HistoryFloor { get; set; }

        public List<Subscriber> Subscribers { get; } = [];
    }

    private sealed class Subscriber
    {
        public Channel<WatchEvent> Channel { get; } = System.Threading.Channels.Channel.CreateUnbounded<WatchEvent>(
            new UnboundedChannelOptions { SingleReader = false, SingleWriter = false, AllowSynchronousContinuations = false });

        public volatile bool Closed;
    }
}
