using System.Collections.Concurrent;
using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.LocalCluster;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Runtime.Tests.Support;
using Lowbit.Operator.Tests.Reconcilers;
using Microsoft.Extensions.Logging.Abstractions;
using static Lowbit.Operator.Runtime.Tests.Support.TestSupport;

namespace Lowbit.Operator.Tests.Runtime;

/// <summary>
/// An informer that holds objects serialized (the default) against the embedded API server: reads decode exactly what
/// a typed cache would hold, handlers see the right old and new objects, and namespace lists decode only their namespace.
/// </summary>
public sealed class SerializedCacheTests : IAsyncLifetime
{
    private LocalClusterServer _server = null!;
    private Kubernetes _client = null!;
    private readonly RuntimeMetrics _metrics = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _runs = [];

    public async Task InitializeAsync()
    {
        _server = await LocalClusterServer.StartAsync(new LocalClusterOptions { Https = false });
        foreach (var file in Directory.GetFiles(Path.Combine(OperatorHarness.RepoRoot, "crds"), "*.yaml"))
        {
            _server.Api.Create(KubernetesYaml.Deserialize<V1CustomResourceDefinition>(await File.ReadAllTextAsync(file)));
        }

        _client = new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(_server.KubeconfigPath), new RequestMetricsHandler(_metrics));
    }

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_runs).WaitAsync(Patience);
        _client.Dispose();
        _stop.Dispose();
        await _server.DisposeAsync();
    }

    private async Task<Informer<T>> StartAsync<T>(CacheOptions<T> cache, InformerOptions? options = null, IInformerEventHandler<T>? handler = null)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var informer = new Informer<T>(new KubernetesRest(_client), options ?? FastInformerOptions, TimeProvider.System, _metrics, NullLogger<Informer<T>>.Instance, cache);
        if (handler is not null)
        {
            informer.AddHandler(handler);
        }

        _runs.Add(informer.RunAsync(_stop.Token));
        await informer.WaitForSyncAsync(CancellationToken.None).WaitAsync(Patience);
        return informer;
    }

    [Fact]
    public async Task Does_decode_the_same_trimmed_object_a_typed_cache_holds()
    {
        var endpoint = Fixtures.Endpoint("chat");
        endpoint.Metadata.NamespaceProperty = "default";
        endpoint.Metadata.Labels = new Dictionary<string, string> { ["team"] = "ml" };
        endpoint.Metadata.Annotations = new Dictionary<string, string> { [CacheTransforms.LastAppliedAnnotation] = "{}", ["keep"] = "me" };
        _server.Api.Create(endpoint);
        var job = new V1Job
        {
            ApiVersion = "batch/v1",
            Kind = "Job",
            Metadata = new V1ObjectMeta { Name = "chat-quantize", NamespaceProperty = "default", Labels = new Dictionary<string, string> { [Labels.ManagedBy] = Labels.ManagedByValue } },
            Spec = new V1JobSpec
            {
                BackoffLimit = 2,
                Template = new V1PodTemplateSpec
                {
                    Spec = new V1PodSpec
                    {
                        RestartPolicy = "Never",
                        Containers = [new V1Container { Name = "engine", Image = "lowbit/engine:1", Args = ["quantize", "--bits", "4"], Env = [new V1EnvVar { Name = "HF_HOME", Value = "/cache" }] }],
                    },
                },
            },
        };
        _server.Api.Create(job);

        var serialized = await StartAsync(new CacheOptions<InferenceEndpoint>());
        var serializedJobs = await StartAsync(new CacheOptions<V1Job> { Transform = CacheTransforms.TrimJob });
        var typedJobs = await StartAsync(new CacheOptions<V1Job> { Transform = CacheTransforms.TrimJob, Serialized = false });
        Assert.True(serialized.Serialized);
        Assert.False(typedJobs.Serialized);

        var key = new ObjectKey("default", "chat");
        Assert.True(serialized.TryGet(key, out var cached));
        var stored = _server.Api.Get<InferenceEndpoint>("default", "chat");
        Assert.Equal(stored.Metadata.ResourceVersion, cached.Metadata.ResourceVersion);
        Assert.Equal(stored.Metadata.Uid, cached.Metadata.Uid);
        Assert.Null(cached.Metadata.ManagedFields);
        Assert.Equal(new Dictionary<string, string> { ["keep"] = "me" }, cached.Metadata.Annotations);
        Assert.Equal("ml", cached.Metadata.Labels["team"]);
        Assert.Equal(KubernetesJson.Serialize(stored.Spec), KubernetesJson.Serialize(cached.Spec));

        // The trimmed Job decodes to exactly what the typed cache holds (args kept, env trimmed the same way).
        var jobKey = new ObjectKey("default", "chat-quantize");
        Assert.True(serializedJobs.TryGet(jobKey, out var fromBytes));
        Assert.True(typedJobs.TryGet(jobKey, out var typed));
        Assert.Equal(KubernetesJson.Serialize(typed), KubernetesJson.Serialize(fromBytes));
        Assert.Equal(["quantize", "--bits", "4"], fromBytes.Spec.Template.Spec.Containers[0].Args);

        // Held compressed: well under the object's JSON, and the packed length prefix is that JSON's size.
        var packed = CacheCodec.Encode(cached);
        Assert.Equal(System.Text.Encoding.UTF8.GetByteCount(KubernetesJson.Serialize(cached)), CacheCodec.JsonLength(packed));
        Assert.True(packed.Length < CacheCodec.JsonLength(packed) * 0.8, $"{packed.Length} packed bytes for {CacheCodec.JsonLength(packed)} bytes of JSON");
        Assert.Equal(KubernetesJson.Serialize(cached), KubernetesJson.Serialize(CacheCodec.Decode<InferenceEndpoint>(packed)));

        // Each read is a fresh copy: a caller mutating what it got cannot change the cache.
        cached.Metadata.Labels["team"] = "mutated";
        Assert.True(serialized.TryGet(key, out var again));
        Assert.NotSame(cached, again);
        Assert.Equal("ml", again.Metadata.Labels["team"]);
    }

    [Fact]
    public async Task Does_hand_handlers_the_cached_old_object_and_the_new_one_on_update()
    {
        _server.Api.Create(ConfigMap("a", "1"));
        var handler = new PairHandler();
        var informer = await StartAsync(new CacheOptions<V1ConfigMap>(), handler: handler);
        Assert.Equal("1", Assert.Single(handler.Added).Data["value"]);

        var changed = _server.Api.Get<V1ConfigMap>("default", "a");
        changed.Data["value"] = "2";
        _server.Api.Update(changed);
        await Eventually(() => !handler.Updated.IsEmpty, "the update");

        var (oldObj, newObj) = Assert.Single(handler.Updated);
        Assert.Equal("1", oldObj.Data["value"]);
        Assert.Equal("2", newObj.Data["value"]);
        Assert.NotEqual(oldObj.Metadata.ResourceVersion, newObj.Metadata.ResourceVersion);
        Assert.True(informer.TryGet(new ObjectKey("default", "a"), out var cached));
        Assert.Equal("2", cached.Data["value"]);

        _server.Api.Delete<V1ConfigMap>("default", "a");
        await Eventually(() => !handler.Deleted.IsEmpty, "the delete");
        Assert.Equal("2", Assert.Single(handler.Deleted).Data["value"]);
        Assert.Equal(0, informer.Count);
    }

    [Fact]
    public async Task Does_list_one_namespace_and_keys_without_the_others()
    {
        foreach (var ns in new[] { "team-a", "team-b" })
        {
            _server.Api.Create(new V1Namespace { ApiVersion = "v1", Kind = "Namespace", Metadata = new V1ObjectMeta { Name = ns } });
        }

        _server.Api.Create(ConfigMap("x", "1", "team-a"));
        _server.Api.Create(ConfigMap("y", "2", "team-a"));
        _server.Api.Create(ConfigMap("z", "3", "team-b"));
        var informer = await StartAsync(new CacheOptions<V1ConfigMap> { LabelSelector = "app=listed" }, FastInformerOptions with { Namespace = null });

        Assert.Equal(["x", "y"], informer.List("team-a").Select(c => c.Metadata.Name).Order(StringComparer.Ordinal));
        Assert.Equal(["1", "2"], informer.List("team-a").Select(c => c.Data["value"]).Order(StringComparer.Ordinal));
        Assert.Equal("3", Assert.Single(informer.List("team-b")).Data["value"]);
        Assert.Empty(informer.List("team-c"));
        Assert.Equal(3, informer.List().Count);
        Assert.Equal([new ObjectKey("team-b", "z")], informer.Keys("team-b"));
        Assert.Equal(3, informer.Keys().Count);
    }

    private static V1ConfigMap ConfigMap(string name, string value, string ns = "default")
    {
        var map = TestSupport.ConfigMap(name, value, ns);
        map.Metadata.Labels = new Dictionary<string, string> { ["app"] = "listed" };
        return map;
    }

    private sealed class PairHandler : IInformerEventHandler<V1ConfigMap>
    {
        public ConcurrentQueue<V1ConfigMap> Added { get; } = new();

        public ConcurrentQueue<(V1ConfigMap Old, V1ConfigMap New)> Updated { get; } = new();

        public ConcurrentQueue<V1ConfigMap> Deleted { get; } = new();

        public void OnAdd(V1ConfigMap obj) => Added.Enqueue(obj);

        public void OnUpdate(V1ConfigMap oldObj, V1ConfigMap newObj) => Updated.Enqueue((oldObj, newObj));

        public void OnDelete(V1ConfigMap obj) => Deleted.Enqueue(obj);
    }
}
