using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lowbit.LocalCluster.Tests.Cluster;

/// <summary>An in-process store with the simulated cluster running on it, and event-driven waits.</summary>
internal sealed class ClusterHarness : IAsyncDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    private ClusterHarness(ClusterApi api, PodLogStore logs, SimulatedCluster cluster, string stateDirectory)
    {
        Api = api;
        Logs = logs;
        Cluster = cluster;
        StateDirectory = stateDirectory;
    }

    public ClusterApi Api { get; }

    /// <summary>Waits on a store whose cluster the test started itself (Cluster and Logs are not available).</summary>
    public static ClusterHarness Attach(ClusterApi api) => new(api, new PodLogStore(), null!, "");

    public PodLogStore Logs { get; }

    public SimulatedCluster Cluster { get; }

    public string StateDirectory { get; }

    /// <summary>Two CPU nodes and GPU nodes (1 × T4, 2 × A100 tainted), all simulated; or the given config.</summary>
    public static async Task<ClusterHarness> StartAsync(string? nodesYaml = null, KubeletOptions? kubelet = null, IReadOnlyList<ImageMapping>? images = null,
        IReadOnlyDictionary<string, string>? seededClaims = null)
    {
        var api = new ClusterApi(new ClusterApiOptions { GracefulPodDeletion = true });
        var logs = new PodLogStore();
        var state = Directory.CreateTempSubdirectory("lowbit-cluster-test-").FullName;
        var nodes = NodesConfig.Parse(nodesYaml ?? DefaultNodes);
        var cluster = await SimulatedCluster.StartAsync(api, logs, new ClusterSimulationOptions
        {
            Nodes = nodes,
            Kubelet = kubelet ?? new KubeletOptions { SimulatedRunDuration = TimeSpan.FromMilliseconds(50), CrashLoopBackOff = TimeSpan.FromMilliseconds(100) },
            StateDirectory = state,
            Images = images,
            SeededClaims = seededClaims ?? new Dictionary<string, string>(),
        }, TimeProvider.System, NullLoggerFactory.Instance);
        return new ClusterHarness(api, logs, cluster, state);
    }

    public const string DefaultNodes = """
        nodes:
        - name: cpu
          count: 2
          cpu: "4"
          memory: 8Gi
          labels: { lowbit.dev/node-type: cpu }
        - name: gpu-t4
          cpu: "8"
          memory: 30Gi
          gpus: 1
          labels: { lowbit.dev/node-type: gpu, nvidia.com/gpu.product: Tesla-T4 }
        - name: gpu-a100
          count: 2
          cpu: "16"
          memory: 120Gi
          gpus: 2
          labels: { lowbit.dev/node-type: gpu, nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB }
          taints: [ { key: nvidia.com/gpu, value: present, effect: NoSchedule } ]
        """;

    public T Create<T>(ResourceType type, T model)
        where T : IKubernetesObject<V1ObjectMeta> => Api.Create(type, model.Metadata.NamespaceProperty ?? "default", model);

    /// <summary>Waits (on the watch, not by sleeping) until the object satisfies <paramref name="condition"/>; returns it.</summary>
    public async Task<T> WaitAsync<T>(ResourceType type, string? ns, string name, Func<T, bool> condition, string what)
    {
        using var cts = new CancellationTokenSource(Timeout);
        T? last = default;
        try
        {
            await foreach (var e in Api.WatchAsync(type, ns, new WatchOptions { FieldSelector = $"metadata.name={name}" }, cts.Token))
            {
                if (e.Object is null || e.Type == WatchEventKind.Deleted)
                {
                    continue;
                }
                last = e.Object.As<T>();
                if (condition(last))
                {
                    return last;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        throw new TimeoutException($"{type.Kind} {ns}/{name}: {what} not reached within {Timeout.TotalSeconds} s; last: {(last is null ? "none" : KubernetesJson.Serialize(last))}");
    }

    /// <summary>Waits until an object is gone.</summary>
    public async Task WaitGoneAsync(ResourceType type, string? ns, string name)
    {
        using var cts = new CancellationTokenSource(Timeout);
        if (Api.TryGet(type, ns, name) is null)
        {
            return;
        }
        try
        {
            await foreach (var e in Api.WatchAsync(type, ns, new WatchOptions { FieldSelector = $"metadata.name={name}", ResourceVersion = Api.CurrentResourceVersion.ToString(System.Globalization.CultureInfo.InvariantCulture) }, cts.Token))
            {
                if (e.Type == WatchEventKind.Deleted || Api.TryGet(type, ns, name) is null)
                {
                    return;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        if (Api.TryGet(type, ns, name) is not null)
        {
            throw new TimeoutException($"{type.Kind} {ns}/{name} still exists after {Timeout.TotalSeconds} s");
        }
    }

    /// <summary>Waits until a list condition holds (re-evaluated on every change of the resource).</summary>
    public async Task<List<T>> WaitListAsync<T>(ResourceType type, string ns, string? labelSelector, Func<List<T>, bool> condition, string what)
    {
        using var cts = new CancellationTokenSource(Timeout);
        List<T> Current() => Api.List(type, ns, new ListOptions { LabelSelector = labelSelector }).Items.Select(o => o.As<T>()).ToList();
        var rv = Api.CurrentResourceVersion.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var items = Current();
        if (condition(items))
        {
            return items;
        }
        try
        {
            await foreach (var e in Api.WatchAsync(type, ns, new WatchOptions { ResourceVersion = rv, AllowBookmarks = true, BookmarkInterval = TimeSpan.FromMilliseconds(200) }, cts.Token))
            {
                items = Current();
                if (condition(items))
                {
                    return items;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        throw new TimeoutException($"{type.Kind} list in {ns} ({labelSelector}): {what} not reached within {Timeout.TotalSeconds} s; last count {items.Count}: {string.Join(", ", items.Select(i => KubernetesJson.Serialize(i)).Take(3))}");
    }

    public static V1Pod Pod(string name, Action<V1Pod>? configure = null)
    {
        var pod = new V1Pod
        {
            ApiVersion = "v1",
            Kind = "Pod",
            Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default", Annotations = new Dictionary<string, string>() },
            Spec = new V1PodSpec
            {
                RestartPolicy = "Never",
                Containers = [new V1Container { Name = "main", Image = "registry.example/app:1" }],
            },
        };
        configure?.Invoke(pod);
        return pod;
    }

    public static Dictionary<string, ResourceQuantity> Resources(params (string Name, string Quantity)[] items) =>
        items.ToDictionary(i => i.Name, i => new ResourceQuantity(i.Quantity));

    public static JsonObject Json(object model) => Typed.ToJson(model);

    public async ValueTask DisposeAsync()
    {
        await Cluster.DisposeAsync();
        try
        {
            Directory.Delete(StateDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
