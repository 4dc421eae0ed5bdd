using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lowbit.LocalCluster.Tests.Cluster;

public sealed class ServerAttachmentTests
{
    [Fact]
    public async Task Does_keep_running_workloads_after_the_server_restarts_from_its_snapshot()
    {
        var state = Directory.CreateTempSubdirectory("lowbit-attach-").FullName;
        try
        {
            await using var server = await StartServerAsync(state);
            await using var simulation = await AttachAsync(server, state, "nodes: [ { name: sim, count: 2 } ]");
            server.Api.Create(BuiltinResources.Jobs, "default", Typed.ToJson(Job("before")));
            await ClusterHarness.Attach(server.Api).WaitAsync<V1Job>(BuiltinResources.Jobs, "default", "before", Complete, "Complete");

            server.SaveState();
            await server.RestartAsync();
            server.Api.Create(BuiltinResources.Jobs, "default", Typed.ToJson(Job("after")));

            var after = await ClusterHarness.Attach(server.Api).WaitAsync<V1Job>(BuiltinResources.Jobs, "default", "after", Complete, "Complete");
            Assert.Equal(1, after.Status.Succeeded);
            Assert.NotNull(server.Api.TryGet(BuiltinResources.Nodes, null, "sim-1"));
        }
        finally
        {
            Directory.Delete(state, recursive: true);
        }
    }

    [Fact]
    public async Task Does_restart_a_running_pod_unready_then_ready_after_the_server_restarts_from_its_snapshot()
    {
        var state = Directory.CreateTempSubdirectory("lowbit-attach-").FullName;
        try
        {
            await using var server = await StartServerAsync(state);
            await using var simulation = await AttachAsync(server, state, "nodes: [ { name: sim } ]");
            // restartPolicy Always: a simulated container runs until stopped (a server, as an InferenceEndpoint's pod).
            server.Api.Create(BuiltinResources.Pods, "default", Typed.ToJson(ClusterHarness.Pod("web", p => p.Spec.RestartPolicy = "Always")));
            var before = await ClusterHarness.Attach(server.Api).WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "web", Ready, "Ready");
            Assert.Equal(0, before.Status.ContainerStatuses.Single().RestartCount);

            server.SaveState();
            var saved = server.Api.CurrentResourceVersion;
            await server.RestartAsync();

            // Every status written since the snapshot, until the pod is Ready again: it must have left Ready first
            // (else its Service kept a stale endpoint while nothing served), as a restarted container, still Running.
            var seen = new List<V1Pod>();
            using var timeout = new CancellationTokenSource(ClusterHarness.Timeout);
            await foreach (var (_, pod, _) in server.Api.WatchAsync<V1Pod>("default", new WatchOptions { ResourceVersion = saved.ToString(System.Globalization.CultureInfo.InvariantCulture) }, timeout.Token))
            {
                if (pod?.Metadata.Name != "web")
                {
                    continue;
                }
                seen.Add(pod);
                if (Ready(pod))
                {
                    break;
                }
            }
            Assert.True(seen.Count >= 2, $"expected an unready status before Ready, saw {seen.Count} status(es)");
            var first = seen[0];
            Assert.False(Ready(first));
            Assert.Equal("Running", first.Status.Phase);
            Assert.Equal("ContainerCreating", first.Status.ContainerStatuses.Single().State.Waiting?.Reason);
            var after = seen[^1].Status.ContainerStatuses.Single();
            Assert.Equal(1, after.RestartCount);
            Assert.EndsWith("/main/1", after.ContainerID, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(state, recursive: true);
        }
    }

    private static Task<LocalClusterServer> StartServerAsync(string state) => LocalClusterServer.StartAsync(new LocalClusterOptions
    {
        StateDirectory = state,
        Https = false,
        Store = new ClusterApiOptions { GracefulPodDeletion = true },
    });

    private static Task<IAsyncDisposable> AttachAsync(LocalClusterServer server, string state, string nodes) => SimulatedCluster.AttachAsync(server, new ClusterSimulationOptions
    {
        Nodes = NodesConfig.Parse(nodes),
        Kubelet = new KubeletOptions { SimulatedRunDuration = TimeSpan.FromMilliseconds(50) },
        StateDirectory = Path.Combine(state, "exec"),
    }, TimeProvider.System, NullLoggerFactory.Instance);

    private static bool Ready(V1Pod pod) => pod.Status?.Conditions?.Any(c => c.Type == "Ready" && c.Status == "True") == true;

    private static bool Complete(V1Job job) => job.Status?.Conditions?.Any(c => c.Type == "Complete" && c.Status == "True") == true;

    private static V1Job Job(string name) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default" },
        Spec = new V1JobSpec
        {
            Template = new V1PodTemplateSpec
            {
                Spec = new V1PodSpec { RestartPolicy = "Never", Containers = [new V1Container { Name = "main", Image = "registry.example/task:1" }] },
            },
        },
    };
}
