using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lowbit.LocalCluster.Tests.Cluster;

/// <summary>
/// Executed pods get loopback addresses of their own, so two servers on the same container port run side by side, and
/// the API server's proxy subresource reaches them through a Service or a pod, with real kubectl.
/// </summary>
public sealed class ServiceProxyTests
{
    private const int Port = 18931;

    [Fact]
    public async Task Does_proxy_to_pods_and_services_whose_servers_share_a_port_on_their_own_addresses()
    {
        var state = Directory.CreateTempSubdirectory("lowbit-proxy-").FullName;
        var home = Directory.CreateTempSubdirectory("lowbit-proxy-home-").FullName;
        try
        {
            await using var server = await LocalClusterServer.StartAsync(new LocalClusterOptions
            {
                StateDirectory = state,
                Store = new ClusterApiOptions { GracefulPodDeletion = true },
            });
            await using var simulation = await SimulatedCluster.AttachAsync(server, new ClusterSimulationOptions
            {
                Nodes = NodesConfig.Parse("nodes: [ { name: local, mode: execute, cpu: '4', memory: 8Gi } ]"),
                StateDirectory = Path.Combine(state, "exec"),
                Images = [new ImageMapping("python", null)],
            }, TimeProvider.System, NullLoggerFactory.Instance);
            var harness = ClusterHarness.Attach(server.Api);
            foreach (var name in new[] { "web-a", "web-b" })
            {
                server.Api.Create(BuiltinResources.Pods, "default", Typed.ToJson(WebPod(name)));
            }
            server.Api.Create(BuiltinResources.Pods, "default", Typed.ToJson(WebPod("web-idle", ready: false)));
            server.Api.Create(BuiltinResources.Services, "default", Typed.ToJson(Service("web", "web")));
            server.Api.Create(BuiltinResources.Services, "default", Typed.ToJson(Service("idle", "idle")));

            var a = await harness.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "web-a", PodControl.IsReady, "Ready");
            var b = await harness.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "web-b", PodControl.IsReady, "Ready");
            Assert.NotEqual(a.Status.PodIP, b.Status.PodIP);
            Assert.StartsWith("127.", a.Status.PodIP, StringComparison.Ordinal);

            async Task<ToolResult> Raw(string path) =>
                await ClusterFixture.RunToolAsync(ClusterFixture.Tool("kubectl"), ["get", "--raw", path], server.KubeconfigPath, home, TimeSpan.FromSeconds(60));

            Assert.Equal("web-a", (await Raw($"/api/v1/namespaces/default/pods/web-a:{Port}/proxy/name.txt")).StdOut.Trim());
            Assert.Equal("web-b", (await Raw("/api/v1/namespaces/default/pods/web-b:http/proxy/name.txt")).StdOut.Trim());
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (var i = 0; i < 4; i++)
            {
                var result = await Raw("/api/v1/namespaces/default/services/web:http/proxy/name.txt");
                Assert.True(result.ExitCode == 0, result.StdErr);
                seen.Add(result.StdOut.Trim());
            }
            Assert.Equal(new[] { "web-a", "web-b" }, seen.Order(StringComparer.Ordinal));

            var idle = await Raw("/api/v1/namespaces/default/services/idle:http/proxy/name.txt");
            Assert.NotEqual(0, idle.ExitCode);
            Assert.Contains("ServiceUnavailable", idle.StdErr + idle.StdOut, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(state, recursive: true);
            Directory.Delete(home, recursive: true);
        }
    }

    /// <summary>python3's http.server on the pod's own address, serving a file with the pod's name; ready when it answers.</summary>
    private static V1Pod WebPod(string name, bool ready = true) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default", Labels = new Dictionary<string, string> { ["app"] = ready ? "web" : "idle" } },
        Spec = new V1PodSpec
        {
            TerminationGracePeriodSeconds = 2,
            Containers =
            [
                new V1Container
                {
                    Name = "main",
                    Image = "python:3.12-slim",
                    Command = ["/bin/sh", "-c", ready
                        ? $"mkdir -p www && echo \"$POD_NAME\" > www/name.txt && cd www && exec python3 -m http.server {Port} --bind \"$POD_IP\""
                        : "exec sleep 60"],
                    Env =
                    [
                        new V1EnvVar { Name = "POD_IP", ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "status.podIP" } } },
                        new V1EnvVar { Name = "POD_NAME", ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "metadata.name" } } },
                    ],
                    Ports = [new V1ContainerPort { Name = "http", ContainerPort = Port }],
                    ReadinessProbe = new V1Probe { HttpGet = new V1HTTPGetAction { Path = "/name.txt", Port = "http" }, PeriodSeconds = 1 },
                },
            ],
        },
    };

    private static V1Service Service(string name, string app) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default" },
        Spec = new V1ServiceSpec
        {
            Selector = new Dictionary<string, string> { ["app"] = app },
            Ports = [new V1ServicePort { Name = "http", Port = 80, TargetPort = "http" }],
        },
    };
}
