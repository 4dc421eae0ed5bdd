using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Runtime;

/// <summary>Receives an informer's cache changes; called on the informer's loop, so keep it cheap (enqueue, do not call the API).</summary>
public interface IInformerEventHandler<in T>
{
    void OnAdd(T obj);

    void OnUpdate(T oldObj, T newObj);

    void OnDelete(T obj);
}

/// <summary>The kind-independent face of an informer, for the manager and readiness.</summary>
public interface IInformer
{
    ResourceType Type { get; }

    bool HasSynced { get; }

    Task WaitForSyncAsync(CancellationToken cancellationToken);

    Task RunAsync(CancellationToken cancellationToken);
}

/// <summary>How an informer lists and watches.</summary>
public sealed record InformerOptions
{
    /// <summary>Namespace to watch; null watches all namespaces.</summary>
    public string? Namespace { get; init; }

    /// <summary>The watch's <c>timeoutSeconds</c> before jitter (the server then ends the stream and we resume).</summary>
    public TimeSpan WatchTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>No event or bookmark for this long → cancel the watch and resume from the last resourceVersion.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromMinutes(2.5);

    /// <summary>Bound on one list call (watch streams have none; the idle timeout guards them).</summary>
    public TimeSpan ListTimeout { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>Page size of list calls.</summary>
    public int PageSize { get; init; } = 500;

    /// <summary>First wait after a failed list or watch; doubles up to <see cref="MaxBackoff"/>.</summary>
    public TimeSpan MinBackoff { get; init; } = TimeSpan.FromMilliseconds(800);

    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// A reflector and cache for one kind (client-go's informer): list, then watch from the list's resourceVersion
/// with bookmarks and <c>timeoutSeconds</c>, resuming from the newest resourceVersion seen (event or BOOKMARK).
/// A 410 Gone (an ERROR event or a 410 response) relists, replaces the cache and synthesizes DELETE events for
/// objects that vanished meanwhile. An idle watchdog cancels a silent watch. A line that cannot be decoded is
/// counted and forces a relist, so no event is silently lost. Every object is cached without managedFields
/// (<see cref="CacheTransforms.StripManagedFields{T}"/>) and then trimmed by <see cref="CacheOptions{T}.Transform"/>;
/// <see cref="CacheOptions{T}.LabelSelector"/> limits what the server sends at all. Objects are held serialized
/// (<see cref="CacheCodec"/>) unless <see cref="CacheOptions{T}.Serialized"/> is off: every read (<see cref="TryGet"/>,
/// <see cref="List"/>, the old side of an update) decodes a fresh copy, so callers may not rely on object identity
/// (and cannot corrupt the cache by mutating what they got).
/// </summary>
public sealed class Informer<T> : IInformer
    where T : class, IKubernetesObject<V1ObjectMeta>
{
    private readonly KubernetesRest _rest;
    private readonly InformerOptions _options;
    private readonly TimeProvider _time;
    private readonly RuntimeMetrics _metrics;
    private readonly ILogger _logger;
    // Values are byte[] (serialized) or T (typed), one representation per informer: see Pack and Unpack.
    private readonly ConcurrentDictionary<ObjectKey, object> _items = new();
    private readonly List<IInformerEventHandler<T>> _handlers = [];
    private readonly TaskCompletionSource _synced = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly string _kindLabel;
    private readonly string? _labelSelector;
    private readonly Func<T, T> _transform;
    private readonly bool _serialized;
    private readonly IReadOnlyDictionary<string, Func<T, IEnumerable<string>>> _indexers;
    // Secondary indexes: (index, value) → keys, and per key what it is filed under (to unfile it on change).
    // Written only by the informer's loop; read concurrently by reconcilers and event mappings.
    private readonly ConcurrentDictionary<(string Index, string Value), ConcurrentDictionary<ObjectKey, byte>> _index = new();
    private readonly ConcurrentDictionary<ObjectKey, (string Index, string Value)[]> _filed = new();
    private readonly Prometheus.Counter.Child _decodes;
    private long _watchStartedAt;
    private volatile bool _served = true;
    private readonly bool _optional;

    public Informer(KubernetesRest rest, InformerOptions options, TimeProvider time, RuntimeMetrics metrics, ILogger<Informer<T>> logger, CacheOptions<T>? cache = null)
    {
        _rest = rest ?? throw new ArgumentNullException(nameof(rest));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _time = time ?? throw new ArgumentNullException(nameof(time));
        _metrics = metrics ?? throw new ArgumentNullException(nameof(metrics));
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
        Type = ResourceType.For<T>();
        _kindLabel = Type.LabelName;
        _labelSelector = string.IsNullOrEmpty(cache?.LabelSelector) ? null : cache.LabelSelector;
        var trim = cache?.Transform;
        _serialized = cache?.Serialized ?? true;
        _optional = cache?.Optional ?? false;
        _indexers = cache?.Indexes ?? new Dictionary<string, Func<T, IEnumerable<string>>>();
        _decodes = _metrics.CacheDecodes.WithLabels(_kindLabel);

        // Pooling metadata strings pays only where the decoded objects are what is held.
        Func<T, T> intern = _serialized ? obj => obj : CacheTransforms.InternMetadata;
        _transform = trim is null
            ? obj => intern(CacheTransforms.StripManagedFields(obj))
            : obj => intern(trim(CacheTransforms.StripManagedFields(obj)));
        _metrics.InformerSynced.WithLabels(_kindLabel).Set(0);
        _metrics.BeforeCollect(UpdateWatchAge);
    }

    public ResourceType Type { get; }

    /// <summary>The label selector of list and watch calls, or null for every object of the kind.</summary>
    public string? LabelSelector => _labelSelector;

    public bool HasSynced => _synced.Task.IsCompleted;

    /// <summary>
    /// False while the API server answers the kind's list with 404 (its CustomResourceDefinition is not installed);
    /// the informer lists again every <see cref="InformerOptions.MaxBackoff"/>. True before the first list.
    /// </summary>
    public bool Served => _served;

    /// <summary>The newest resourceVersion seen (list, event or bookmark); the next watch resumes from it.</summary>
    public string? ResourceVersion { get; private set; }

    public Task WaitForSyncAsync(CancellationToken cancellationToken) => _synced.Task.WaitAsync(cancellationToken);

    /// <summary>Registers a handler; call before <see cref="RunAsync"/>.</summary>
    public void AddHandler(IInformerEventHandler<T> handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        lock (_handlers)
        {
            _handlers.Add(handler);
        }
    }

    /// <summary>Whether objects are held serialized and decoded on each read (<see cref="CacheOptions{T}.Serialized"/>).</summary>
    public bool Serialized => _serialized;

    public bool TryGet(ObjectKey key, [MaybeNullWhen(false)] out T obj)
    {
        if (_items.TryGetValue(key, out var stored))
        {
            obj = Unpack(stored);
            return true;
        }

        obj = null;
        return false;
    }

    /// <summary>
    /// The cached objects, optionally of one namespace (a snapshot; do not mutate the objects). Filtering by namespace
    /// reads only the keys: only the objects returned are decoded.
    /// </summary>
    public IReadOnlyList<T> List(string? ns = null) =>
        _items.Where(e => ns is null || e.Key.Namespace == ns).Select(e => Unpack(e.Value)).ToList();

    /// <summary>The keys of the cached objects, optionally of one namespace (nothing is decoded).</summary>
    public IReadOnlyList<ObjectKey> Keys(string? ns = null) =>
        [.. _items.Keys.Where(k => ns is null || k.Namespace == ns)];

    public int Count => _items.Count;

    /// <summary>The keys filed under <paramref name="value"/> in <paramref name="index"/> (see <see cref="CacheOptions{T}.Indexes"/>).</summary>
    public IReadOnlyList<ObjectKey> KeysByIndex(string index, string value)
    {
        if (!_indexers.ContainsKey(index))
        {
            throw new InvalidOperationException($"{typeof(T).Name} has no cache index '{index}': register it with OperatorBuilder.Index<{typeof(T).Name}>(\"{index}\", ...)");
        }

        return _index.TryGetValue((index, value), out var keys) ? [.. keys.Keys] : [];
    }

    /// <summary>Files <paramref name="key"/> under its index values (none when <paramref name="item"/> is null: deleted).</summary>
    private void Reindex(ObjectKey key, T? item)
    {
        if (_indexers.Count == 0)
        {
            return;
        }

        (string Index, string Value)[] values = item is null
            ? []
            : [.. _indexers.SelectMany(i => i.Value(item).Select(v => (i.Key, v))).Distinct()];
        var old = _filed.TryGetValue(key, out var filed) ? filed : [];
        foreach (var entry in old.Except(values))
        {
            if (_index.TryGetValue(entry, out var keys) && keys.TryRemove(key, out _) && keys.IsEmpty)
            {
                _index.TryRemove(entry, out _);
            }
        }

        foreach (var entry in values.Except(old))
        {
            _index.GetOrAdd(entry, _ => new ConcurrentDictionary<ObjectKey, byte>())[key] = 0;
        }

        if (values.Length == 0)
        {
            _filed.TryRemove(key, out _);
        }
        else
        {
            _filed[key] = values;
        }
    }

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        var relistReason = "initial";
        var backoff = _options.MinBackoff;
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                if (relistReason is not null)
                {
                    if (!await RelistAsync(relistReason, cancellationToken).ConfigureAwait(false))
                    {
                        // The kind is not served (its CRD is not installed): look again later, never a crash loop.
                        relistReason = "notServed";
                        await DelayAsync(_options.MaxBackoff, cancellationToken).ConfigureAwait(false);
                        continue;
                    }

                    relistReason = null;
                    backoff = _options.MinBackoff;
                }

                var outcome = await WatchAsync(cancellationToken).ConfigureAwait(false);
                _metrics.WatchReconnects.WithLabels(_kindLabel, outcome.Reason).Inc();
                InformerLog.WatchEnded(_logger, Type.Kind, outcome.Reason, ResourceVersion);
                if (outcome.Relist)
                {
                    relistReason = outcome.Reason;
                }

                if (outcome.Healthy)
                {
                    backoff = _options.MinBackoff;
                }
                else
                {
                    await DelayAsync(backoff, cancellationToken).ConfigureAwait(false);
                    backoff = Next(backoff);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex) when (KubernetesRest.IsGone(ex))
            {
                relistReason = "expired";
                _metrics.WatchReconnects.WithLabels(_kindLabel, "expired").Inc();
            }
            catch (Exception ex)
            {
                InformerLog.ListWatchFailed(_logger, Type.Kind, backoff, ex);
                relistReason ??= ResourceVersion is null ? "error" : null;
                if (relistReason is null)
                {
                    _metrics.WatchReconnects.WithLabels(_kindLabel, "error").Inc();
                }

                try
                {
                    await DelayAsync(backoff, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }

                backoff = Next(backoff);
            }
        }

        Interlocked.Exchange(ref _watchStartedAt, 0);
    }

    /// <summary>
    /// Lists the kind and replaces the cache. False when an optional kind (<see cref="CacheOptions{T}.Optional"/>) is not
    /// served at all (a 404 on the list: its CustomResourceDefinition is not installed): the cache is then empty and
    /// counts as synced, so a LeaderWorkerSet neither blocks the operator's start nor crashes it; <see cref="Served"/>
    /// tells. For other kinds a 404 is an error like any other (retried with backoff; the start times out).
    /// </summary>
    private async Task<bool> RelistAsync(string reason, CancellationToken cancellationToken)
    {
        _metrics.WatchRelists.WithLabels(_kindLabel, reason).Inc();
        var fresh = new Dictionary<ObjectKey, object>();
        string? continueToken = null;
        string? listVersion;
        using (var timeout = new CancellationTokenSource(_options.ListTimeout, _time))
        using (var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token))
        {
            do
            {
                var path = KubernetesRest.Query(
                    Type.CollectionPath(_options.Namespace),
                    ("labelSelector", _labelSelector),
                    ("limit", _options.PageSize.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                    ("continue", continueToken));
                using var response = await _rest.GetAsync(path, linked.Token).ConfigureAwait(false);
                if (_optional && response.StatusCode == System.Net.HttpStatusCode.NotFound && continueToken is null)
                {
                    MarkNotServed();
                    return false;
                }

                await KubernetesRest.EnsureSuccessAsync(response, linked.Token).ConfigureAwait(false);
                KubernetesList<T> page;
                try
                {
                    await response.Content.LoadIntoBufferAsync(linked.Token).ConfigureAwait(false);
                    await using var stream = await response.Content.ReadAsStreamAsync(linked.Token).ConfigureAwait(false);
                    page = KubernetesJson.Deserialize<KubernetesList<T>>(stream)
                        ?? throw new JsonException("empty list response");
                }
                catch (JsonException)
                {
                    _metrics.WatchDecodeErrors.WithLabels(_kindLabel).Inc();
                    throw;
                }

                foreach (var item in page.Items ?? [])
                {
                    fresh[ObjectKey.Of(item)] = Pack(_transform(item));
                }

                listVersion = page.Metadata?.ResourceVersion;
                continueToken = string.IsNullOrEmpty(page.Metadata?.ContinueProperty) ? null : page.Metadata.ContinueProperty;
            }
            while (continueToken is not null);
        }

        // Replace the cache; what vanished while we were away is a delete the handlers must see.
        var deleted = 0;
        foreach (var (key, old) in _items)
        {
            if (!fresh.ContainsKey(key) && _items.TryRemove(key, out _))
            {
                deleted++;
                Reindex(key, null);
                var gone = Unpack(old);
                Dispatch(h => h.OnDelete(gone));
            }
        }

        foreach (var (key, stored) in fresh)
        {
            if (_items.TryGetValue(key, out var previous))
            {
                _items[key] = stored;
                if (previous is byte[] before && stored is byte[] after && before.AsSpan().SequenceEqual(after))
                {
                    continue;
                }

                var old = Unpack(previous);
                var item = Unpack(stored);
                Reindex(key, item);
                if (old.Metadata.ResourceVersion != item.Metadata.ResourceVersion)
                {
                    Dispatch(h => h.OnUpdate(old, item));
                }
            }
            else
            {
                _items[key] = stored;
                var item = Unpack(stored);
                Reindex(key, item);
                Dispatch(h => h.OnAdd(item));
            }
        }

        ResourceVersion = listVersion;
        _metrics.CachedObjects.WithLabels(_kindLabel).Set(_items.Count);
        InformerLog.Listed(_logger, Type.Kind, reason, fresh.Count, deleted, listVersion);
        _served = true;
        if (_synced.TrySetResult())
        {
            _metrics.InformerSynced.WithLabels(_kindLabel).Set(1);
        }

        return true;
    }

    /// <summary>The kind is not served: empty the cache (handlers see the deletes), count as synced, say so once.</summary>
    private void MarkNotServed()
    {
        foreach (var (key, old) in _items)
        {
            if (_items.TryRemove(key, out _))
            {
                Reindex(key, null);
                var gone = Unpack(old);
                Dispatch(h => h.OnDelete(gone));
            }
        }

        ResourceVersion = null;
        _metrics.CachedObjects.WithLabels(_kindLabel).Set(0);
        if (_served)
        {
            InformerLog.NotServed(_logger, Type.Kind, Type.ApiVersion, _options.MaxBackoff);
        }

        _served = false;
        if (_synced.TrySetResult())
        {
            _metrics.InformerSynced.WithLabels(_kindLabel).Set(1);
        }
    }

    private async Task<WatchOutcome> WatchAsync(CancellationToken cancellationToken)
    {
        var timeoutSeconds = (int)(_options.WatchTimeout.TotalSeconds * (1 + (Random.Shared.NextDouble() * 0.2)));
        var path = KubernetesRest.Query(
            Type.CollectionPath(_options.Namespace),
            ("watch", "true"),
            ("labelSelector", _labelSelector),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", ResourceVersion),
            ("timeoutSeconds", Math.Max(1, timeoutSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture)));

        using var idle = new CancellationTokenSource(_options.IdleTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, idle.Token);
        try
        {
            using var response = await _rest.GetAsync(path, linked.Token).ConfigureAwait(false);
            if (response.StatusCode == System.Net.HttpStatusCode.Gone)
            {
                return WatchOutcome.Expired;
            }

            await KubernetesRest.EnsureSuccessAsync(response, linked.Token).ConfigureAwait(false);
            Interlocked.Exchange(ref _watchStartedAt, _time.GetTimestamp());
            await using var stream = await response.Content.ReadAsStreamAsync(linked.Token).ConfigureAwait(false);
            using var reader = new StreamReader(stream);
            var sawEvent = false;
            while (true)
            {
                var line = await reader.ReadLineAsync(linked.Token).ConfigureAwait(false);
                if (line is null)
                {
                    return sawEvent ? WatchOutcome.Closed : WatchOutcome.ClosedEmpty;
                }

                if (line.Length == 0)
                {
                    continue;
                }

                idle.CancelAfter(_options.IdleTimeout);
                var outcome = Apply(line);
                if (outcome is not null)
                {
                    return outcome;
                }

                sawEvent = true;
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or HttpRequestException
            && idle.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            // Over TLS a cancelled read can surface as an IOException; the watchdog fired either way.
            InformerLog.WatchIdle(_logger, Type.Kind, _options.IdleTimeout);
            return WatchOutcome.Idle;
        }
        catch (Exception ex) when (ex is IOException or HttpRequestException && !cancellationToken.IsCancellationRequested)
        {
            // Connection reset or half-written chunk: resume from the last resourceVersion.
            InformerLog.WatchBroken(_logger, Type.Kind, ex);
            return WatchOutcome.Broken;
        }
        finally
        {
            Interlocked.Exchange(ref _watchStartedAt, 0);
        }
    }

    /// <summary>Applies one watch line; returns how the watch ends, or null to keep reading.</summary>
    private WatchOutcome? Apply(string line)
    {
        string? type;
        JsonElement obj;
        try
        {
            using var document = JsonDocument.Parse(line);
            type = document.RootElement.TryGetProperty("type", out var t) ? t.GetString() : null;
            obj = document.RootElement.TryGetProperty("object", out var o) ? o.Clone() : default;
        }
        catch (JsonException ex)
        {
            return DecodeError(ex);
        }

        _metrics.WatchEvents.WithLabels(_kindLabel, (type ?? "UNKNOWN").ToLowerInvariant()).Inc();
        switch (type)
        {
            case "BOOKMARK":
                ResourceVersion = ReadResourceVersion(obj) ?? ResourceVersion;
                return null;
            case "ERROR":
                var status = obj.ValueKind == JsonValueKind.Object ? Deserialize<V1Status>(obj) : null;
                InformerLog.WatchError(_logger, Type.Kind, status?.Code, status?.Reason, status?.Message);
                return status?.Code == 410 || status?.Reason is "Expired" or "Gone" ? WatchOutcome.Expired : WatchOutcome.ServerError;
            case "ADDED" or "MODIFIED" or "DELETED":
                T? item;
                try
                {
                    item = Deserialize<T>(obj);
                }
                catch (JsonException ex)
                {
                    return DecodeError(ex);
                }

                if (item?.Metadata?.Name is null)
                {
                    return DecodeError(new JsonException($"{type} event without an object name"));
                }

                ApplyEvent(type, _transform(item));
                ResourceVersion = item.Metadata.ResourceVersion ?? ResourceVersion;
                return null;
            default:
                return DecodeError(new JsonException($"unknown watch event type '{type}'"));
        }
    }

    private void ApplyEvent(string type, T item)
    {
        // Handlers get the object just decoded; the cache keeps its packed form.
        var key = ObjectKey.Of(item);
        if (type == "DELETED")
        {
            _items.TryRemove(key, out _);
            Reindex(key, null);
            Dispatch(h => h.OnDelete(item));
        }
        else if (_items.TryGetValue(key, out var previous))
        {
            _items[key] = Pack(item);
            Reindex(key, item);
            var old = Unpack(previous);
            Dispatch(h => h.OnUpdate(old, item));
        }
        else
        {
            _items[key] = Pack(item);
            Reindex(key, item);
            Dispatch(h => h.OnAdd(item));
        }

        _metrics.CachedObjects.WithLabels(_kindLabel).Set(_items.Count);
    }

    private object Pack(T obj) => _serialized ? CacheCodec.Encode(obj) : obj;

    private T Unpack(object stored)
    {
        if (stored is not byte[] json)
        {
            return (T)stored;
        }

        _decodes.Inc();
        return CacheCodec.Decode<T>(json);
    }

    private WatchOutcome DecodeError(JsonException ex)
    {
        _metrics.WatchDecodeErrors.WithLabels(_kindLabel).Inc();
        InformerLog.DecodeFailed(_logger, Type.Kind, ex);
        return WatchOutcome.DecodeError;
    }

    private void Dispatch(Action<IInformerEventHandler<T>> action)
    {
        IInformerEventHandler<T>[] handlers;
        lock (_handlers)
        {
            handlers = [.. _handlers];
        }

        foreach (var handler in handlers)
        {
            try
            {
                action(handler);
            }
            catch (Exception ex)
            {
                InformerLog.HandlerFailed(_logger, Type.Kind, ex);
            }
        }
    }

    private static TValue? Deserialize<TValue>(JsonElement element) => KubernetesJson.Deserialize<TValue>(element);

    private static string? ReadResourceVersion(JsonElement obj) =>
        obj.ValueKind == JsonValueKind.Object
        && obj.TryGetProperty("metadata", out var meta)
        && meta.ValueKind == JsonValueKind.Object
        && meta.TryGetProperty("resourceVersion", out var rv)
        && rv.ValueKind == JsonValueKind.String
            ? rv.GetString()
            : null;

    private Task DelayAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        var jittered = delay * (1 + (Random.Shared.NextDouble() * 0.2));
        return Task.Delay(jittered, _time, cancellationToken);
    }

    private TimeSpan Next(TimeSpan backoff) => backoff * 2 > _options.MaxBackoff ? _options.MaxBackoff : backoff * 2;

    private void UpdateWatchAge()
    {
        var started = Interlocked.Read(ref _watchStartedAt);
        _metrics.WatchAge.WithLabels(_kindLabel).Set(started == 0 ? 0 : _time.GetElapsedTime(started).TotalSeconds);
        if (_serialized)
        {
            long bytes = 0;
            foreach (var (_, stored) in _items)
            {
                bytes += ((byte[])stored).Length;
            }

            _metrics.CachedBytes.WithLabels(_kindLabel).Set(bytes);
        }
    }

    private sealed record WatchOutcome(string Reason, bool Relist, bool Healthy)
    {
        public static readonly WatchOutcome Closed = new("closed", Relist: false, Healthy: true);
        public static readonly WatchOutcome ClosedEmpty = new("closed", Relist: false, Healthy: false);
        public static readonly WatchOutcome Idle = new("idle", Relist: false, Healthy: false);
        public static readonly WatchOutcome Expired = new("expired", Relist: true, Healthy: true);
        public static readonly WatchOutcome DecodeError = new("decode_error", Relist: true, Healthy: false);
        public static readonly WatchOutcome ServerError = new("error", Relist: false, Healthy: false);
        public static readonly WatchOutcome Broken = new("broken", Relist: false, Healthy: false);
    }
}
