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
            await using var server = await LocalClusterServer.StartAsync(new LocalClusterOptions
            {
                StateDirectory = state,
                Https = false,
                Store = new ClusterApiOptions { GracefulPodDeletion = true },
            });
            await using var simulation = await SimulatedCluster.AttachAsync(server, new ClusterSimulationOptions
            {
                Nodes = NodesConfig.Parse("nodes: [ { name: sim, count: 2 } ]"),
                Kubelet = new KubeletOptions { SimulatedRunDuration = TimeSpan.FromMilliseconds(50) },
                StateDirectory = Path.Combine(state, "exec"),
            }, TimeProvider.System, NullLoggerFactory.Instance);
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
