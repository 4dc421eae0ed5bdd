using System.Collections.Concurrent;
using k8s;
using k8s.Models;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// What one informer caches of a kind (controller-runtime's <c>cache.ByObject</c>): a label selector sent with
/// its list and watch calls, so the server never sends objects outside it, and a transform applied to every
/// object before it is cached and handed to event handlers (after <see cref="CacheTransforms.StripManagedFields{T}"/>,
/// which every informer applies).
/// </summary>
public sealed record CacheOptions<T>
    where T : class, IKubernetesObject<V1ObjectMeta>
{
    /// <summary>A <c>labelSelector</c> (e.g. <c>app.kubernetes.io/managed-by=lowbit-operator</c>); null caches every object.</summary>
    public string? LabelSelector { get; init; }

    /// <summary>Trims a freshly decoded object before it is cached; it must keep metadata.name, namespace and resourceVersion.</summary>
    public Func<T, T>? Transform { get; init; }

    /// <summary>
    /// Hold each object serialized (<see cref="CacheCodec"/>) and decode it on every read (default), or as typed objects.
    /// Typed suits a kind the reconcilers scan by namespace on every reconcile (pods): decoding the whole namespace
    /// per reconcile would make convergence quadratic in the number of objects.
    /// </summary>
    public bool Serialized { get; init; } = true;

    /// <summary>
    /// A kind the cluster may not serve (a third-party CRD such as LeaderWorkerSet): a 404 on its list then means
    /// "not installed": the cache is empty and synced, <see cref="IObjectCache.IsServed{T}"/> is false, and the list
    /// is retried. Off (default) for the operator's own kinds and built-ins, whose absence must stop the start.
    /// </summary>
    public bool Optional { get; init; }

    /// <summary>
    /// Secondary indexes (client-go's <c>Indexers</c>): name → the values an object is filed under (e.g. the
    /// <c>namespace/name</c> of a resource it references). Kept current on every event, so a reverse lookup
    /// (<see cref="IObjectCache.KeysByIndex{T}"/>) reads keys only and never decodes the cache.
    /// </summary>
    public IReadOnlyDictionary<string, Func<T, IEnumerable<string>>> Indexes { get; init; } =
        new Dictionary<string, Func<T, IEnumerable<string>>>(StringComparer.Ordinal);
}

/// <summary>
/// Cache transforms that cut what an informer holds per object (controller-runtime's
/// <c>cache.TransformStripManagedFields</c> and friends). They mutate the freshly decoded object they are given,
/// which only the informer holds, and return it. A cached object is read, never written back whole: status goes
/// through <c>/status</c> (the server keeps metadata and managedFields it was not sent) and children are applied from
/// freshly built objects, so nothing stripped here is ever lost on the server.
/// </summary>
public static class CacheTransforms
{
    /// <summary>kubectl's client-side apply annotation: a full copy of the object as last applied.</summary>
    public const string LastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration";

    /// <summary>
    /// Drops <c>metadata.managedFields</c> (server-side apply bookkeeping: often larger than the object itself) and
    /// the <see cref="LastAppliedAnnotation"/>. No reconciler reads either.
    /// </summary>
    public static T StripManagedFields<T>(T obj)
        where T : IKubernetesObject<V1ObjectMeta>
    {
        ArgumentNullException.ThrowIfNull(obj);
        if (obj.Metadata is { } meta)
        {
            meta.ManagedFields = null;
            meta.Annotations?.Remove(LastAppliedAnnotation);
            if (meta.Annotations is { Count: 0 })
            {
                meta.Annotations = null;
            }
        }

        return obj;
    }

    /// <summary>
    /// Keeps of a pod spec what identifies its containers (name, image, command, args, ports) and where it runs
    /// (nodeName); drops env, volumes, mounts, resources, probes, security contexts and scheduling constraints.
    /// </summary>
    public static V1PodSpec? TrimPodSpec(V1PodSpec? spec)
    {
        if (spec is null)
        {
            return null;
        }

        return new V1PodSpec
        {
            Containers = spec.Containers?.Select(TrimContainer).ToList(),
            InitContainers = spec.InitContainers is { Count: > 0 } init ? init.Select(TrimContainer).ToList() : null,
            NodeName = spec.NodeName,
            RestartPolicy = spec.RestartPolicy,
        };
    }

    /// <summary>A pod with its spec trimmed by <see cref="TrimPodSpec"/>; metadata and status are kept whole.</summary>
    public static V1Pod TrimPod(V1Pod pod)
    {
        ArgumentNullException.ThrowIfNull(pod);
        pod.Spec = TrimPodSpec(pod.Spec);
        return pod;
    }

    /// <summary>
    /// A Deployment as metadata, <c>spec.replicas</c>, <c>spec.selector</c> and status: the pod template (the bulk of
    /// the object) is dropped — whether a Deployment is current is told by its spec-hash annotation, and pods are
    /// read from the pod cache.
    /// </summary>
    public static V1Deployment TrimDeployment(V1Deployment deployment)
    {
        ArgumentNullException.ThrowIfNull(deployment);
        if (deployment.Spec is { } spec)
        {
            deployment.Spec = new V1DeploymentSpec { Replicas = spec.Replicas, Selector = spec.Selector, Paused = spec.Paused };
        }

        return deployment;
    }

    /// <summary>A Service as metadata and status: its spec (ports, selector, cluster IPs) is dropped; the spec-hash annotation tells whether it is current.</summary>
    public static V1Service TrimService(V1Service service)
    {
        ArgumentNullException.ThrowIfNull(service);
        service.Spec = null;
        return service;
    }

    /// <summary>A Job whose pod template spec is trimmed by <see cref="TrimPodSpec"/> (its containers' args are kept: a FineTuneJob resumes from them).</summary>
    public static V1Job TrimJob(V1Job job)
    {
        ArgumentNullException.ThrowIfNull(job);
        if (job.Spec?.Template is { } template)
        {
            template.Spec = TrimPodSpec(template.Spec);
        }

        return job;
    }

    /// <summary>
    /// Objects for which <paramref name="ours"/> holds get <paramref name="trim"/>; any other object is cached as
    /// metadata only (name, namespace, uid, versions, labels, annotations, owner references, timestamps): enough to
    /// map it to an owner and to tell a foreign object of a child's name from ours, at a fraction of the memory.
    /// </summary>
    public static Func<T, T> MetadataOnlyUnless<T>(Func<T, bool> ours, Func<T, T> trim)
        where T : class, IKubernetesObject<V1ObjectMeta>, new()
    {
        ArgumentNullException.ThrowIfNull(ours);
        ArgumentNullException.ThrowIfNull(trim);
        return obj => ours(obj) ? trim(obj) : MetadataOnly(obj);
    }

    /// <summary>A new object of the same kind carrying only identifying metadata.</summary>
    public static T MetadataOnly<T>(T obj)
        where T : class, IKubernetesObject<V1ObjectMeta>, new()
    {
        ArgumentNullException.ThrowIfNull(obj);
        var meta = obj.Metadata;
        return new T
        {
            ApiVersion = obj.ApiVersion,
            Kind = obj.Kind,
            Metadata = new V1ObjectMeta
            {
                Name = meta.Name,
                NamespaceProperty = meta.NamespaceProperty,
                Uid = meta.Uid,
                ResourceVersion = meta.ResourceVersion,
                Generation = meta.Generation,
                Labels = meta.Labels,
                Annotations = meta.Annotations,
                OwnerReferences = meta.OwnerReferences,
                CreationTimestamp = meta.CreationTimestamp,
                DeletionTimestamp = meta.DeletionTimestamp,
            },
        };
    }

    /// <summary>
    /// Shares the strings that repeat across objects (label and annotation keys and short values, namespaces, owner
    /// kinds and apiVersions) through one bounded pool, and rebuilds label and annotation maps at their exact size.
    /// Every informer applies it last. Unique values (names, UIDs) are pooled only until the pool is full, which
    /// bounds what it can hold; pooled strings are immutable, so sharing them is invisible to readers.
    /// </summary>
    public static T InternMetadata<T>(T obj)
        where T : IKubernetesObject<V1ObjectMeta>
    {
        ArgumentNullException.ThrowIfNull(obj);
        obj.ApiVersion = StringPool.Intern(obj.ApiVersion);
        obj.Kind = StringPool.Intern(obj.Kind);
        if (obj.Metadata is not { } meta)
        {
            return obj;
        }

        meta.NamespaceProperty = StringPool.Intern(meta.NamespaceProperty);
        meta.Labels = StringPool.Intern(meta.Labels);
        meta.Annotations = StringPool.Intern(meta.Annotations);
        foreach (var reference in meta.OwnerReferences ?? [])
        {
            reference.ApiVersion = StringPool.Intern(reference.ApiVersion);
            reference.Kind = StringPool.Intern(reference.Kind);
        }

        return obj;
    }

    private static V1Container TrimContainer(V1Container container) => new()
    {
        Name = container.Name,
        Image = container.Image,
        Command = container.Command,
        Args = container.Args,
        Ports = container.Ports,
    };
}

/// <summary>A process-wide, bounded string pool for cached metadata (unlike <see cref="string.Intern"/>, it cannot grow without bound).</summary>
internal static class StringPool
{
    public const int Capacity = 16_384;
    public const int MaxLength = 64;

    private static readonly ConcurrentDictionary<string, string> Pool = new(StringComparer.Ordinal);
    private static int _count;

    public static string Intern(string value)
    {
        if (value is null || value.Length > MaxLength)
        {
            return value!;
        }

        if (Pool.TryGetValue(value, out var pooled))
        {
            return pooled;
        }

        if (Volatile.Read(ref _count) >= Capacity)
        {
            return value;
        }

        pooled = Pool.GetOrAdd(value, value);
        if (ReferenceEquals(pooled, value))
        {
            Interlocked.Increment(ref _count);
        }

        return pooled;
    }

    public static IDictionary<string, string>? Intern(IDictionary<string, string>? map)
    {
        if (map is null or { Count: 0 })
        {
            return null;
        }

        var pooled = new Dictionary<string, string>(map.Count, StringComparer.Ordinal);
        foreach (var (key, value) in map)
        {
            pooled[Intern(key)] = Intern(value);
        }

        return pooled;
    }
}
