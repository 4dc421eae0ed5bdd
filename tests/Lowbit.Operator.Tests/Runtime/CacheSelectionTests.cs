using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.LocalCluster;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Runtime.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;
using static Lowbit.Operator.Runtime.Tests.Support.TestSupport;

namespace Lowbit.Operator.Tests.Runtime;

/// <summary>A label-selected, transformed informer against the embedded API server (its list and watch honour labelSelector).</summary>
public sealed class CacheSelectionTests : IAsyncLifetime
{
    private static readonly string ManagedBy = $"{Labels.ManagedBy}={Labels.ManagedByValue}";

    private LocalClusterServer _server = null!;

    public async Task InitializeAsync() => _server = await LocalClusterServer.StartAsync(new LocalClusterOptions { Https = false });

    public async Task DisposeAsync() => await _server.DisposeAsync();

    [Fact]
    public async Task Does_not_see_foreign_objects_when_label_selected_and_follows_objects_entering_and_leaving_the_selection()
    {
        _server.Api.Create(Labelled("ours-before-sync", ours: true));
        _server.Api.Create(Labelled("foreign-before-sync", ours: false));
        var metrics = new RuntimeMetrics();
        using var client = new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(_server.KubeconfigPath), new RequestMetricsHandler(metrics));
        var informer = new Informer<V1ConfigMap>(new KubernetesRest(client), FastInformerOptions, TimeProvider.System, metrics, NullLogger<Informer<V1ConfigMap>>.Instance,
            new CacheOptions<V1ConfigMap> { LabelSelector = ManagedBy });
        var events = new RecordingHandler<V1ConfigMap>();
        informer.AddHandler(events);
        using var stop = new CancellationTokenSource();
        var run = informer.RunAsync(stop.Token);
        try
        {
            await informer.WaitForSyncAsync(CancellationToken.None).WaitAsync(Patience);
            Assert.Equal(["ours-before-sync"], informer.List().Select(c => c.Metadata.Name));

            _server.Api.Create(Labelled("foreign-while-watching", ours: false));
            _server.Api.Create(Labelled("ours-while-watching", ours: true));
            await Eventually(() => informer.TryGet(new ObjectKey("default", "ours-while-watching"), out _), "the labelled object created while watching");

            // A foreign object that takes our label enters the cache; one of ours that drops it leaves (as a delete).
            var adopted = _server.Api.Get<V1ConfigMap>("default", "foreign-before-sync");
            adopted.Metadata.Labels[Labels.ManagedBy] = Labels.ManagedByValue;
            _server.Api.Update(adopted);
            var dropped = _server.Api.Get<V1ConfigMap>("default", "ours-before-sync");
            dropped.Metadata.Labels.Remove(Labels.ManagedBy);
            _server.Api.Update(dropped);
            await Eventually(() => events.Saw("delete", "ours-before-sync") && informer.TryGet(new ObjectKey("default", "foreign-before-sync"), out _), "the label changes");

            Assert.Equal(["foreign-before-sync", "ours-while-watching"], informer.List().Select(c => c.Metadata.Name).Order(StringComparer.Ordinal));
            Assert.DoesNotContain(events.Events, e => e.Name == "foreign-while-watching");
            Assert.Equal(2, informer.Count);
        }
        finally
        {
            await stop.CancelAsync();
            await run.WaitAsync(Patience);
        }
    }

    [Fact]
    public async Task Does_cache_objects_without_managed_fields_and_trimmed_by_the_transform()
    {
        var metrics = new RuntimeMetrics();
        using var client = new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(_server.KubeconfigPath), new RequestMetricsHandler(metrics));
        var rest = new KubernetesRest(client);
        var informer = new Informer<V1ConfigMap>(rest, FastInformerOptions, TimeProvider.System, metrics, NullLogger<Informer<V1ConfigMap>>.Instance,
            new CacheOptions<V1ConfigMap> { Transform = c => { c.BinaryData = null; return c; } });
        using var stop = new CancellationTokenSource();
        var run = informer.RunAsync(stop.Token);
        try
        {
            await informer.WaitForSyncAsync(CancellationToken.None).WaitAsync(Patience);
            var desired = Labelled("applied", ours: true);
            desired.BinaryData = new Dictionary<string, byte[]> { ["blob"] = new byte[1024] };
            desired.Metadata.Annotations = new Dictionary<string, string> { [CacheTransforms.LastAppliedAnnotation] = "{}", ["keep"] = "me" };
            await rest.ApplyAsync(desired, Labels.FieldManager);
            var key = new ObjectKey("default", "applied");
            await Eventually(() => informer.TryGet(key, out _), "the applied object in the cache");

            var stored = _server.Api.Get<V1ConfigMap>("default", "applied");
            Assert.NotEmpty(stored.Metadata.ManagedFields); // the server keeps server-side apply bookkeeping
            Assert.True(informer.TryGet(key, out var cached));
            Assert.Null(cached.Metadata.ManagedFields);
            Assert.Null(cached.BinaryData);
            Assert.Equal(new Dictionary<string, string> { ["keep"] = "me" }, cached.Metadata.Annotations);
            Assert.Equal(stored.Data, cached.Data);
            Assert.Equal(stored.Metadata.ResourceVersion, cached.Metadata.ResourceVersion);
        }
        finally
        {
            await stop.CancelAsync();
            await run.WaitAsync(Patience);
        }
    }

    private static V1ConfigMap Labelled(string name, bool ours)
    {
        var map = ConfigMap(name);
        map.Metadata.Labels = ours
            ? new Dictionary<string, string> { [Labels.ManagedBy] = Labels.ManagedByValue, ["app"] = "x" }
            : new Dictionary<string, string> { ["app"] = "x" };
        return map;
    }
}
