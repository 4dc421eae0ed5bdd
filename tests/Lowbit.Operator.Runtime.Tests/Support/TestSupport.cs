using System.Collections.Concurrent;
using k8s;
using k8s.Models;
using Lowbit.Operator.Runtime;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lowbit.Operator.Runtime.Tests.Support;

internal static class TestSupport
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    /// <summary>Waits until <paramref name="condition"/> holds (polling), failing the test after <see cref="Patience"/>.</summary>
    public static async Task Eventually(Func<bool> condition, string what, TimeSpan? patience = null)
    {
        var deadline = DateTime.UtcNow + (patience ?? Patience);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out waiting for: {what}");
            }

            await Task.Delay(10);
        }
    }

    public static Kubernetes Client(FakeApiServer server, RuntimeMetrics metrics, TimeProvider? time = null, ClientRetryOptions? retry = null) =>
        new(
            server.ClientConfiguration,
            new ClientRetryHandler(retry ?? new ClientRetryOptions { BaseDelay = TimeSpan.FromMilliseconds(10) }, time ?? TimeProvider.System, metrics, NullLogger<ClientRetryHandler>.Instance),
            new RequestMetricsHandler(metrics));

    public static Informer<T> Informer<T>(FakeApiServer server, RuntimeMetrics metrics, InformerOptions? options = null, TimeProvider? time = null, CacheOptions<T>? cache = null)
        where T : class, IKubernetesObject<V1ObjectMeta>
        => new(
            new KubernetesRest(Client(server, metrics)),
            options ?? FastInformerOptions,
            time ?? TimeProvider.System,
            metrics,
            NullLogger<Informer<T>>.Instance,
            cache);

    public static readonly InformerOptions FastInformerOptions = new()
    {
        Namespace = "default",
        MinBackoff = TimeSpan.FromMilliseconds(10),
        MaxBackoff = TimeSpan.FromMilliseconds(100),
        IdleTimeout = TimeSpan.FromSeconds(30),
    };

    public static V1ConfigMap ConfigMap(string name, string value = "1", string ns = "default") => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns },
        Data = new Dictionary<string, string> { ["value"] = value },
    };

    public static double Value(Prometheus.Counter counter, params string[] labels) => counter.WithLabels(labels).Value;
}

/// <summary>Records what an informer delivers.</summary>
internal sealed class RecordingHandler<T> : IInformerEventHandler<T>
    where T : IKubernetesObject<V1ObjectMeta>
{
    public ConcurrentQueue<(string Type, string Name)> Events { get; } = new();

    public void OnAdd(T obj) => Events.Enqueue(("add", obj.Metadata.Name));

    public void OnUpdate(T oldObj, T newObj) => Events.Enqueue(("update", newObj.Metadata.Name));

    public void OnDelete(T obj) => Events.Enqueue(("delete", obj.Metadata.Name));

    public bool Saw(string type, string name) => Events.Contains((type, name));
}
