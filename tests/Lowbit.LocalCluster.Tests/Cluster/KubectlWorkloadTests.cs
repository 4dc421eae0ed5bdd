using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lowbit.LocalCluster.Tests.Cluster;

/// <summary>The embedded server with simulated nodes and the local executor, serving real kubectl.</summary>
public sealed class WorkloadClusterFixture : IAsyncLifetime
{
    private string _home = "";
    private string _state = "";

    public LocalClusterServer Server { get; private set; } = null!;

    public SimulatedCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        _home = Directory.CreateTempSubdirectory("lowbit-kubectl-home-").FullName;
        _state = Directory.CreateTempSubdirectory("lowbit-exec-").FullName;
        Server = await LocalClusterServer.StartAsync(new LocalClusterOptions
        {
            Store = new ClusterApiOptions { GracefulPodDeletion = true, BookmarkInterval = TimeSpan.FromMilliseconds(500) },
        });
        Cluster = await SimulatedCluster.StartAsync(Server.Api, Server.Logs, new ClusterSimulationOptions
        {
            Nodes = NodesConfig.Parse("""
                nodes:
                - name: local
                  mode: execute
                  taints: [ { key: lowbit.dev/execute, effect: NoSchedule } ]
                - name: sim
                  count: 2
                  cpu: "8"
                  memory: 16Gi
                """),
            Kubelet = new KubeletOptions { SimulatedRunDuration = TimeSpan.FromMilliseconds(100) },
            StateDirectory = _state,
            Images = [new ImageMapping("busybox", null)],
        }, TimeProvider.System, NullLoggerFactory.Instance);
    }

    public async Task DisposeAsync()
    {
        await Cluster.DisposeAsync();
        await Server.DisposeAsync();
        Directory.Delete(_home, recursive: true);
        Directory.Delete(_state, recursive: true);
    }

    /// <summary>Runs kubectl, which must succeed; returns stdout.</summary>
    public async Task<string> Kubectl(params string[] args)
    {
        var result = await KubectlAsync(args);
        Assert.True(result.ExitCode == 0, $"kubectl {string.Join(' ', args)} failed ({result.ExitCode}): {result.StdErr}\n{result.StdOut}");
        return result.StdOut;
    }

    /// <summary>Runs kubectl and returns its exit code and output, whether it succeeds or not.</summary>
    public Task<ToolResult> KubectlAsync(params string[] args) =>
        ClusterFixture.RunToolAsync(ClusterFixture.Tool("kubectl"), args, Server.KubeconfigPath, _home, TimeSpan.FromSeconds(60));

    /// <summary>kubectl apply of a full manifest (KubectlCreateTests drives the protobuf bodies of kubectl create deployment/job).</summary>
    public async Task<string> ApplyAsync(string ns, string manifest)
    {
        var file = Path.Combine(_home, $"manifest-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(file, manifest);
        return await Kubectl("apply", "-n", ns, "-f", file);
    }

    public static string Deployment(string name, int replicas, string image) => $$"""
        apiVersion: apps/v1
        kind: Deployment
        metadata: { name: {{name}}, labels: { app: {{name}} } }
        spec:
          replicas: {{replicas}}
          selector: { matchLabels: { app: {{name}} } }
          template:
            metadata: { labels: { app: {{name}} } }
            spec:
              containers: [ { name: {{name}}, image: "{{image}}" } ]
        """;

    public async Task<string> NamespaceAsync(string prefix)
    {
        var name = $"{prefix}-{Guid.NewGuid().ToString("N")[..6]}";
        await Kubectl("create", "namespace", name);
        return name;
    }
}

/// <summary>kubectl scale, rollout status, logs and cascading deletes against pods that really progress.</summary>
public sealed class KubectlWorkloadTests : IClassFixture<WorkloadClusterFixture>
{
    private readonly WorkloadClusterFixture _cluster;

    public KubectlWorkloadTests(WorkloadClusterFixture cluster) => _cluster = cluster;

    [Fact]
    public async Task Does_scale_and_roll_out_a_deployment_when_kubectl_asks()
    {
        var ns = await _cluster.NamespaceAsync("rollout");
        await _cluster.ApplyAsync(ns, WorkloadClusterFixture.Deployment("web", 2, "registry.example/web:1"));

        var first = await _cluster.Kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s");
        Assert.Contains("deployment \"web\" successfully rolled out", first, StringComparison.Ordinal);

        var scaled = await _cluster.Kubectl("scale", "deployment", "web", "--replicas=4", "-n", ns);
        Assert.Contains("deployment.apps/web scaled", scaled, StringComparison.Ordinal);
        await _cluster.Kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s");
        var ready = await _cluster.Kubectl("get", "deployment", "web", "-n", ns, "-o", "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}");
        Assert.Equal("4/4", ready);

        await _cluster.Kubectl("set", "image", "deployment/web", "web=registry.example/web:2", "-n", ns);
        var second = await _cluster.Kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s");
        Assert.Contains("successfully rolled out", second, StringComparison.Ordinal);
        var live = _cluster.Server.Api.List<k8s.Models.V1Pod>(ns, new ListOptions { LabelSelector = "app=web" })
            .Where(p => p.Metadata.DeletionTimestamp is null).Select(p => p.Spec.Containers[0].Image).ToList();
        Assert.Equal(4, live.Count);
        Assert.All(live, image => Assert.Equal("registry.example/web:2", image));
        var revisions = await _cluster.Kubectl("get", "rs", "-n", ns, "-o", "jsonpath={range .items[*]}{.spec.replicas}{\" \"}{end}");
        Assert.Equal(["0", "4"], revisions.Split(' ', StringSplitOptions.RemoveEmptyEntries).Order().ToArray());
    }

    [Fact]
    public async Task Does_show_and_follow_the_log_of_an_executed_pod()
    {
        var ns = await _cluster.NamespaceAsync("logs");
        await _cluster.Kubectl("run", "talker", "-n", ns, "--image=busybox:1.36", "--restart=Never",
            "--overrides={\"spec\":{\"tolerations\":[{\"key\":\"lowbit.dev/execute\",\"operator\":\"Exists\"}]}}",
            "--command", "--", "/bin/sh", "-c", "echo first line; echo second line >&2; echo third line");

        try
        {
            // 60 s: the other test classes of this assembly run beside this one on the same executor (a fresh-clone CI
            // run on the 2-core box once took over 30 s here; alone it takes 1-2 s).
            await _cluster.Kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/talker", "-n", ns, "--timeout=60s");
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            var pod = await _cluster.Kubectl("get", "pod", "talker", "-n", ns, "-o", "yaml");
            var events = await _cluster.Kubectl("get", "events", "-n", ns);
            Assert.Fail($"{ex.Message}\n--- pod ---\n{pod}\n--- events ---\n{events}");
        }
        var log = await _cluster.Kubectl("logs", "talker", "-n", ns);
        Assert.Equal(["first line", "second line", "third line"], log.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order().ToArray());
        var followed = await _cluster.Kubectl("logs", "-f", "talker", "-n", ns);
        Assert.Contains("third line", followed, StringComparison.Ordinal);
        var node = await _cluster.Kubectl("get", "pod", "talker", "-n", ns, "-o", "jsonpath={.spec.nodeName} {.status.containerStatuses[0].state.terminated.reason}");
        Assert.Equal("local Completed", node);
    }

    [Fact]
    public async Task Does_remove_a_deployments_replica_sets_and_pods_when_kubectl_deletes_it()
    {
        var ns = await _cluster.NamespaceAsync("cascade");
        await _cluster.ApplyAsync(ns, WorkloadClusterFixture.Deployment("bg", 2, "registry.example/web:1"));
        await _cluster.ApplyAsync(ns, WorkloadClusterFixture.Deployment("fg", 2, "registry.example/web:1"));
        await _cluster.Kubectl("rollout", "status", "deployment/bg", "-n", ns, "--timeout=30s");
        await _cluster.Kubectl("rollout", "status", "deployment/fg", "-n", ns, "--timeout=30s");

        await _cluster.Kubectl("delete", "deployment", "fg", "-n", ns, "--cascade=foreground", "--timeout=30s");
        Assert.Equal("", await _cluster.Kubectl("get", "rs,pods", "-n", ns, "-l", "app=fg", "-o", "name"));

        await _cluster.Kubectl("delete", "deployment", "bg", "-n", ns);
        await _cluster.Kubectl("wait", "--for=delete", "pod", "-l", "app=bg", "-n", ns, "--timeout=30s");
        await _cluster.Kubectl("wait", "--for=delete", "rs", "-l", "app=bg", "-n", ns, "--timeout=30s");
        Assert.Equal("", await _cluster.Kubectl("get", "deploy,rs,pods", "-n", ns, "-o", "name"));
    }

    [Fact]
    public async Task Does_complete_a_job_and_explain_an_unschedulable_pod()
    {
        var ns = await _cluster.NamespaceAsync("jobs");
        await _cluster.ApplyAsync(ns, """
            apiVersion: batch/v1
            kind: Job
            metadata: { name: once }
            spec:
              template:
                spec:
                  restartPolicy: Never
                  containers: [ { name: task, image: "registry.example/task:1" } ]
            """);
        await _cluster.Kubectl("wait", "--for=condition=complete", "job/once", "-n", ns, "--timeout=30s");

        await _cluster.Kubectl("run", "greedy", "-n", ns, "--image=registry.example/llm:1", "--restart=Never",
            "--overrides={\"spec\":{\"containers\":[{\"name\":\"greedy\",\"image\":\"registry.example/llm:1\",\"resources\":{\"limits\":{\"nvidia.com/gpu\":\"1\"}}}]}}");
        await _cluster.Kubectl("wait", "--for=condition=PodScheduled=false", "pod/greedy", "-n", ns, "--timeout=30s");
        var message = await _cluster.Kubectl("get", "pod", "greedy", "-n", ns, "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}");
        Assert.StartsWith("0/3 nodes are available: 1 node(s) had untolerated taint {lowbit.dev/execute: }, 2 Insufficient nvidia.com/gpu.", message, StringComparison.Ordinal);
    }
}
