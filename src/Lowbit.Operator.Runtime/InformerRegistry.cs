using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Runtime;

/// <summary>Read access to the informer caches, for reconcilers (observe children without API calls).</summary>
public interface IObjectCache
{
    /// <summary>The cached object, if any. Throws when <typeparamref name="T"/> is not a watched kind.</summary>
    bool TryGet<T>(ObjectKey key, [MaybeNullWhen(false)] out T obj)
        where T : class, IKubernetesObject<V1ObjectMeta>;

    /// <summary>Cached objects of a kind, optionally of one namespace. Throws when <typeparamref name="T"/> is not a watched kind.</summary>
    IReadOnlyList<T> List<T>(string? ns = null)
        where T : class, IKubernetesObject<V1ObjectMeta>;

    /// <summary>
    /// The keys of the cached objects of a kind, optionally of one namespace, without decoding the objects (a
    /// serialized cache decodes on every <see cref="List{T}"/>). Throws when <typeparamref name="T"/> is not a watched kind.
    /// </summary>
    IReadOnlyList<ObjectKey> Keys<T>(string? ns = null)
        where T : class, IKubernetesObject<V1ObjectMeta>
        => [.. List<T>(ns).Select(ObjectKey.Of)];

    /// <summary>
    /// The keys of the cached objects filed under <paramref name="value"/> in the index <paramref name="index"/>
    /// (registered with <see cref="OperatorBuilder.Index{T}"/>); nothing is decoded. Throws for an unknown index.
    /// </summary>
    IReadOnlyList<ObjectKey> KeysByIndex<T>(string index, string value)
        where T : class, IKubernetesObject<V1ObjectMeta>;

    /// <summary>Cached objects whose controller owner reference points at <paramref name="owner"/> (same namespace, matching UID).</summary>
    IReadOnlyList<TChild> ListOwnedBy<TChild>(IKubernetesObject<V1ObjectMeta> owner)
        where TChild : class, IKubernetesObject<V1ObjectMeta>;

    /// <summary>
    /// False when the API server does not serve the kind (an optional CustomResourceDefinition, such as LeaderWorkerSet,
    /// is not installed): its cache is empty and creating one would fail. Throws when <typeparamref name="T"/> is not a watched kind.
    /// </summary>
    bool IsServed<T>()
        where T : class, IKubernetesObject<V1ObjectMeta>
        => true;
}

/// <summary>One shared informer per kind (a controller's primary and child watches, and reconcilers' reads, share it).</summary>
public sealed class InformerRegistry : IObjectCache
{
    private readonly ConcurrentDictionary<Type, IInformer> _informers = new();
    private readonly ConcurrentDictionary<Type, object> _cacheOptions = new();
    private readonly KubernetesRest _rest;
    private readonly InformerOptions _options;
    private readonly TimeProvider _time;
    private readonly RuntimeMetrics _metrics;
    private readonly ILoggerFactory _loggers;

    public InformerRegistry(KubernetesRest rest, InformerOptions options, TimeProvider time, RuntimeMetrics metrics, ILoggerFactory loggers)
    {
        _rest = rest ?? throw new ArgumentNullException(nameof(rest));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _time = time ?? throw new ArgumentNullException(nameof(time));
        _metrics = metrics ?? throw new ArgumentNullException(nameof(metrics));
        _loggers = loggers ?? throw new ArgumentNullException(nameof(loggers));
    }

    /// <summary>Every informer created so far.</summary>
    public IReadOnlyCollection<IInformer> All => _informers.Values.ToList();

    /// <summary>
    /// Sets what the informer of <typeparamref name="T"/> caches (label selector, transform). Call before the
    /// informer is first used: a selector cannot change under a running watch.
    /// </summary>
    public void Configure<T>(CacheOptions<T> cache)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        ArgumentNullException.ThrowIfNull(cache);
        if (_informers.ContainsKey(typeof(T)))
        {
            throw new InvalidOperationException($"the {typeof(T).Name} informer already exists: configure its cache before any controller or watch uses it");
        }

        // Indexes registered earlier (AddIndex) survive a later Configure that names none.
        var indexes = _cacheOptions.TryGetValue(typeof(T), out var earlier) ? ((CacheOptions<T>)earlier).Indexes : null;
        _cacheOptions[typeof(T)] = indexes is { Count: > 0 } && cache.Indexes.Count == 0 ? cache with { Indexes = indexes } : cache;
    }

    /// <summary>Adds a secondary index to the informer of <typeparamref name="T"/>; call before the informer is first used.</summary>
    public void AddIndex<T>(string name, Func<T, IEnumerable<string>> values)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(values);
        if (_informers.ContainsKey(typeof(T)))
        {
            throw new InvalidOperationException($"the {typeof(T).Name} informer already exists: add index '{name}' before any controller or watch uses it");
        }

        var cache = _cacheOptions.TryGetValue(typeof(T), out var existing) ? (CacheOptions<T>)existing : new CacheOptions<T>();
        var indexes = new Dictionary<string, Func<T, IEnumerable<string>>>(cache.Indexes, StringComparer.Ordinal) { [name] = values };
        _cacheOptions[typeof(T)] = cache with { Indexes = indexes };
    }

    /// <summary>The informer of <typeparamref name="T"/>, created on first use (with the cache options <see cref="Configure{T}"/> set).</summary>
    public Informer<T> GetOrAdd<T>()
        where T : class, IKubernetesObject<V1ObjectMeta>
        => (Informer<T>)_informers.GetOrAdd(typeof(T), _ => new Informer<T>(_rest, _options, _time, _metrics, _loggers.CreateLogger<Informer<T>>(),
            _cacheOptions.TryGetValue(typeof(T), out var cache) ? (CacheOptions<T>)cache : null));

    public bool TryGet<T>(ObjectKey key, [MaybeNullWhen(false)] out T obj)
        where T : class, IKubernetesObject<V1ObjectMeta>
        => Existing<T>().TryGet(key, out obj);

    public IReadOnlyList<T> List<T>(string? ns = null)
        where T : class, IKubernetesObject<V1ObjectMeta>
        => Existing<T>().List(ns);

    public IReadOnlyList<ObjectKey> Keys<T>(string? ns = null)
        where T : class, IKubernetesObject<V1ObjectMeta>
        => Existing<T>().Keys(ns);

    public IReadOnlyList<ObjectKey> KeysByIndex<T>(string index, string value)
        where T : class, IKubernetesObject<V1ObjectMeta>
        => Existing<T>().KeysByIndex(index, value);

    public IReadOnlyList<TChild> ListOwnedBy<TChild>(IKubernetesObject<V1ObjectMeta> owner)
        where TChild : class, IKubernetesObject<V1ObjectMeta>
    {
        ArgumentNullException.ThrowIfNull(owner);
        var uid = owner.Metadata.Uid;
        return Existing<TChild>()
            .List(owner.Metadata.NamespaceProperty)
            .Where(c => c.Metadata.OwnerReferences?.Any(r => r.Controller == true && r.Uid == uid) == true)
            .ToList();
    }

    public bool IsServed<T>()
        where T : class, IKubernetesObject<V1ObjectMeta>
        => Existing<T>().Served;

    private Informer<T> Existing<T>()
        where T : class, IKubernetesObject<V1ObjectMeta>
        => _informers.TryGetValue(typeof(T), out var informer)
            ? (Informer<T>)informer
            : throw new InvalidOperationException($"{typeof(T).Name} is not cached: register it with Owns<{typeof(T).Name}>(), Watches<{typeof(T).Name}>(...) or OperatorBuilder.Watch<{typeof(T).Name}>()");
}
