using k8s;
using k8s.Models;
using Lowbit.Api.Generation;
using Lowbit.Api.V1Alpha1;
using Lowbit.LocalCluster;
using Lowbit.LocalCluster.Testing;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Runtime.Tests.Support;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using static Lowbit.Operator.Runtime.Tests.Support.TestSupport;

namespace Lowbit.Operator.Tests.Runtime;

/// <summary>The runtime against the embedded Kubernetes-compatible API server (src/Lowbit.LocalCluster), over HTTPS.</summary>
public sealed class EmbeddedApiServerTests : IAsyncLifetime
{
    private LocalClusterServer _server = null!;
    private readonly List<WebApplication> _apps = [];

    public async Task InitializeAsync() =>
        _server = await LocalClusterServer.StartAsync(new LocalClusterOptions
        {
            Store = new LocalCluster.Store.ClusterApiOptions { BookmarkInterval = TimeSpan.FromMilliseconds(200) },
        });

    public async Task DisposeAsync()
    {
        foreach (var app in _apps)
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }

        await _server.DisposeAsync();

    }

    private KubernetesClientConfiguration Configuration => KubernetesClientConfiguration.BuildConfigFromConfigFile(_server.KubeconfigPath);

    [Fact]
    public async Task Does_relist_after_410_and_see_a_delete_missed_while_disconnected()
    {
        _server.Api.Create(ConfigMap("a"));
        _server.Api.Create(ConfigMap("b"));
        var metrics = new RuntimeMetrics();
        using var client = new Kubernetes(Configuration, new RequestMetricsHandler(metrics));
        var informer = new Informer<V1ConfigMap>(
            new KubernetesRest(client),
            FastInformerOptions with { WatchTimeout = TimeSpan.FromSeconds(3), IdleTimeout = TimeSpan.FromSeconds(1) },
            TimeProvider.System,
            metrics,
            NullLogger<Informer<V1ConfigMap>>.Instance);
        double relistsWhenDeleteSeen = -1;
        informer.AddHandler(new DeleteProbe(() => relistsWhenDeleteSeen = Value(metrics.WatchRelists, "configmap", "expired")));
        using var stop = new CancellationTokenSource();
        var run = informer.RunAsync(stop.Token);
        try
        {
            await informer.WaitForSyncAsync(CancellationToken.None).WaitAsync(Patience);
            await DeleteWhileDisconnectedAsync(informer, metrics, () => relistsWhenDeleteSeen);
        }
        finally
        {
            await stop.CancelAsync();
            await run.WaitAsync(Patience);
        }
    }

    private async Task DeleteWhileDisconnectedAsync(Informer<V1ConfigMap> informer, RuntimeMetrics metrics, Func<double> relistsWhenDeleteSeen)
    {

        // The next watch is broken off (this server's Stall ends the stream at its first event), the one after is
        // told 410 Gone; b is deleted while nothing is delivered.
        _server.Faults.BreakNextWatch(WatchFault.Stall, "configmaps");
        _server.Faults.BreakNextWatch(WatchFault.Expire, "configmaps");
        await Eventually(() => Watches(metrics) >= 1, "the first watch ended");
        _server.Api.Delete<V1ConfigMap>("default", "b");

        await Eventually(() => relistsWhenDeleteSeen() >= 0, "b's delete");
        Assert.Equal(1, relistsWhenDeleteSeen()); // seen through the relist, not a watch event
        Assert.False(informer.TryGet(new ObjectKey("default", "b"), out _));
        Assert.True(informer.TryGet(new ObjectKey("default", "a"), out _));
    }

    [Fact]
    public async Task Does_reconcile_only_on_the_lease_holder_and_fail_over_when_it_stops()
    {
        _server.Api.Create(ConfigMap("x"));
        var (first, firstProbe) = Start("first");
        await Eventually(() => firstProbe.Calls == 1, "first leads and reconciles");
        var (second, secondProbe) = Start("second");
        await Eventually(() => second.Services.GetRequiredService<OperatorState>().CachesSynced, "second's caches synced");
        _server.Api.Update(ConfigMap("x", value: "2"));
        await Eventually(() => firstProbe.Calls == 2, "the leader reconciles the change");

        Assert.Equal(0, secondProbe.Calls);
        Assert.Equal("first", _server.Api.Get<V1Lease>("default", "lowbit-operator").Spec.HolderIdentity);

        await first.StopAsync().WaitAsync(Patience);
        await Eventually(() => secondProbe.Calls >= 1, "second takes over and reconciles");
        Assert.Equal("second", _server.Api.Get<V1Lease>("default", "lowbit-operator").Spec.HolderIdentity);
        Assert.Equal(2, firstProbe.Calls);
    }

    [Fact]
    public async Task Does_cache_our_custom_resource_and_server_side_apply_spec_and_status_idempotently()
    {
        _server.Api.Create(CrdGenerator.Generate(typeof(QuantizedModel)));
        var yaml = await File.ReadAllTextAsync(Path.Combine(RepoRoot(), "examples", "quantizedmodel-llama-2-7b-hqq-int4.yaml"));
        var example = KubernetesJson.Deserialize<QuantizedModel>(Lowbit.Schema.Yaml.ParseObject(yaml).ToJsonString());
        example.Metadata.NamespaceProperty = "default";
        var metrics = new RuntimeMetrics();
        using var client = new Kubernetes(Configuration, new RequestMetricsHandler(metrics));
        var rest = new KubernetesRest(client);
        var informer = new Informer<QuantizedModel>(rest, FastInformerOptions, TimeProvider.System, metrics, NullLogger<Informer<QuantizedModel>>.Instance);
        using var stop = new CancellationTokenSource();
        var run = informer.RunAsync(stop.Token);
        try
        {
            await informer.WaitForSyncAsync(CancellationToken.None).WaitAsync(Patience);
            var key = new ObjectKey("default", example.Metadata.Name);

            var created = await rest.ApplyAsync(example, "lowbit-operator");
            var again = await rest.ApplyAsync(example, "lowbit-operator");
            var status = await rest.ApplyAsync(
                new QuantizedModel
                {
                    Metadata = new V1ObjectMeta { Name = example.Metadata.Name, NamespaceProperty = "default" },
                    Status = new QuantizedModelStatus { ObservedGeneration = created.Metadata.Generation, Phase = "Planning" },
                },
                "lowbit-operator",
                subresource: "status");
            await Eventually(() => informer.TryGet(key, out var cached) && cached.Status?.Phase == "Planning", "the status update in the cache");

            Assert.Equal(created.Metadata.ResourceVersion, again.Metadata.ResourceVersion); // unchanged apply writes nothing
            Assert.Equal(created.Metadata.Generation, status.Metadata.Generation); // status does not bump generation
            Assert.True(informer.TryGet(key, out var seen));
            Assert.Equal(KubernetesJson.Serialize(example.Spec), KubernetesJson.Serialize(seen.Spec));
            Assert.Equal(0, metrics.WatchDecodeErrors.WithLabels("quantizedmodel").Value);
            Assert.Contains(_server.Journal.Entries, e => e.Verb == "patch" && e.FieldManager == "lowbit-operator" && e.Path.EndsWith("/status", StringComparison.Ordinal));
        }
        finally
        {
            await stop.CancelAsync();
            await run.WaitAsync(Patience);
        }
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Operator.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("no Operator.sln above the test assembly");
    }

    private (WebApplication App, Probe Probe) Start(string identity)
    {
        var probe = new Probe();
        var app = OperatorHost.Build(["--urls=http://127.0.0.1:0"], op =>
        {
            op.Services.AddSingleton(probe);
            op.Services.AddLogging(l => l.ClearProviders());
            op.UseKubernetes(Configuration)
                .Configure(o =>
                {
                    o.WatchNamespace = "default";
                    o.LeaderElection.Identity = identity;
                    o.LeaderElection.LeaseNamespace = "default";
                    o.LeaderElection.LeaseDuration = TimeSpan.FromSeconds(3);
                    o.LeaderElection.RenewDeadline = TimeSpan.FromSeconds(1.5);
                    o.LeaderElection.RetryPeriod = TimeSpan.FromSeconds(0.2);
                })
                .AddController<V1ConfigMap, ProbeReconciler>(c => c.Owns<V1Pod>());
        });
        _apps.Add(app);
        app.StartAsync().GetAwaiter().GetResult();
        return (app, probe);
    }

    private static double Watches(RuntimeMetrics metrics) =>
        new[] { "closed", "broken", "idle" }.Sum(reason => Value(metrics.WatchReconnects, "configmap", reason));

    private sealed class DeleteProbe(Action onDelete) : IInformerEventHandler<V1ConfigMap>
    {
        public void OnAdd(V1ConfigMap obj)
        {
        }

        public void OnUpdate(V1ConfigMap oldObj, V1ConfigMap newObj)
        {
        }

        public void OnDelete(V1ConfigMap obj)
        {
            if (obj.Metadata.Name == "b")
            {
                onDelete();
            }
        }
    }
}
