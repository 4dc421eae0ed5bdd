using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Tests.Cluster;

public sealed class NodeConfigTests
{
    [Fact]
    public void Does_refuse_a_yaml_alias_bomb_with_a_format_error_instead_of_expanding_it()
    {
        var lines = new List<string> { "l0: &l0 [x, x, x, x, x, x, x, x, x, x]" };
        for (var i = 1; i < 9; i++)
        {
            lines.Add($"l{i}: &l{i} [{string.Join(", ", Enumerable.Repeat($"*l{i - 1}", 10))}]");
        }
        lines.Add("nodes: *l8");

        var ex = Assert.Throws<FormatException>(() => NodesConfig.Parse(string.Join("\n", lines)));

        Assert.Contains("expands to more than", ex.Message);
    }

    [Fact]
    public void Does_answer_every_mutated_node_config_with_nodes_or_a_format_error()
    {
        var seed = System.Text.Encoding.UTF8.GetBytes(ClusterHarness.DefaultNodes);
        var run = Lowbit.Testing.Fuzzer.Run(seed, 24, input => NodesConfig.Parse(System.Text.Encoding.UTF8.GetString(input)), ex => ex is FormatException);
        Assert.True(run >= 50);
    }

    [Fact]
    public void Does_expand_counts_and_keep_labels_taints_and_modes_when_parsing()
    {
        var config = NodesConfig.Parse("""
            nodes:
            - name: cpu
              mode: execute
              cpu: 3500m
              memory: 12Gi
            - name: h100
              count: 2
              gpus: 8
              labels: { nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3 }
              taints: [ { key: nvidia.com/gpu, value: present, effect: NoSchedule } ]
            """);

        Assert.Equal(["cpu", "h100-0", "h100-1"], config.Nodes.Select(n => n.Name).ToArray());
        Assert.Equal(KubeletMode.Execute, config.Nodes[0].Mode);
        Assert.Equal(KubeletMode.Simulate, config.Nodes[1].Mode);
        var node = NodeRegistrar.Build(config.Nodes[2], new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc));
        Assert.Equal(8m, node.Status.Allocatable["nvidia.com/gpu"].ToDecimal());
        Assert.Equal("NVIDIA-H100-80GB-HBM3", node.Metadata.Labels[NodesConfig.GpuProductLabel]);
        Assert.Equal("simulate", node.Metadata.Labels[NodesConfig.KubeletModeLabel]);
        Assert.Equal(("nvidia.com/gpu", "present", "NoSchedule"), (node.Spec.Taints[0].Key, node.Spec.Taints[0].Value, node.Spec.Taints[0].Effect));
        Assert.Equal("True", node.Status.Conditions.Single(c => c.Type == "Ready").Status);
        Assert.Equal(3.5m, NodeRegistrar.Build(config.Nodes[0], DateTime.UtcNow).Status.Capacity["cpu"].ToDecimal());
    }

    [Theory]
    [InlineData("nodes: []", "'nodes' must be a non-empty list")]
    [InlineData("nodes: [ { name: a, mode: docker } ]", "nodes[0].mode: 'docker' is not a kubelet mode; accepted: simulate, execute")]
    [InlineData("nodes: [ { name: a, memory: lots } ]", "nodes[0].memory: 'lots' is not a Kubernetes quantity")]
    [InlineData("nodes: [ { name: a, gpu: 1 } ]", "nodes[0].gpu: unknown field; accepted: name, mode, cpu, memory, gpus")]
    [InlineData("nodes: [ { name: a, taints: [ { key: k, effect: Never } ] } ]", "nodes[0].taints[0].effect: 'Never' is not a taint effect; accepted: NoSchedule, PreferNoSchedule, NoExecute")]
    [InlineData("nodes: [ { name: a }, { name: a } ]", "node name 'a' appears more than once")]
    public void Does_name_the_field_and_accepted_values_when_the_config_is_wrong(string yaml, string expected)
    {
        var error = Assert.Throws<FormatException>(() => NodesConfig.Parse(yaml, "nodes.yaml"));

        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.StartsWith("nodes.yaml: ", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_register_the_default_nodes_as_ready_nodes_with_gpus()
    {
        var api = new ClusterApi(new ClusterApiOptions { GracefulPodDeletion = true });
        await using var cluster = await SimulatedCluster.StartAsync(api, new PodLogStore(), new ClusterSimulationOptions(), TimeProvider.System,
            Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);

        var nodes = api.List(BuiltinResources.Nodes, null).Items.Select(n => n.As<V1Node>()).ToList();

        Assert.Equal(NodesConfig.Default.Nodes.Count, nodes.Count);
        Assert.All(nodes, n => Assert.Equal("True", n.Status.Conditions.Single(c => c.Type == "Ready").Status));
        Assert.Equal("execute", nodes.Single(n => n.Metadata.Name == "cpu-0").Metadata.Labels[NodesConfig.KubeletModeLabel]);
        Assert.Contains(nodes, n => n.Metadata.Labels.TryGetValue(NodesConfig.GpuProductLabel, out var p) && p == "NVIDIA-H100-80GB-HBM3"
            && n.Status.Allocatable["nvidia.com/gpu"].ToDecimal() == 8m);
    }

    [Fact]
    public async Task Does_not_run_a_finished_pod_again_when_the_cluster_starts_on_restored_state()
    {
        var api = new ClusterApi(new ClusterApiOptions { GracefulPodDeletion = true });
        var finished = ClusterHarness.Pod("finished", p => p.Spec.NodeName = "cpu-0");
        api.Create(BuiltinResources.Pods, "default", Typed.ToJson(finished));
        var stored = api.Get(BuiltinResources.Pods, "default", "finished").As<V1Pod>();
        stored.Status = new V1PodStatus { Phase = "Succeeded" };
        var rv = (string)api.Replace(BuiltinResources.Pods, stored, "status")["metadata"]!["resourceVersion"]!;
        var nodes = NodesConfig.Parse("nodes: [ { name: cpu, count: 1 } ]");
        nodes = new NodesConfig { Nodes = [nodes.Nodes[0] with { Name = "cpu-0" }] };
        await using var cluster = await SimulatedCluster.StartAsync(api, new PodLogStore(), new ClusterSimulationOptions
        {
            Nodes = nodes,
            Kubelet = new KubeletOptions { SimulatedRunDuration = TimeSpan.FromMilliseconds(10) },
        }, TimeProvider.System, Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);
        var harness = ClusterHarness.Attach(api);

        // A pod created afterwards on the same node runs to completion: by then the kubelet has seen both.
        api.Create(BuiltinResources.Pods, "default", Typed.ToJson(ClusterHarness.Pod("later", p => p.Spec.NodeName = "cpu-0")));
        await harness.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "later", p => p.Status?.Phase == "Succeeded", "Succeeded");

        Assert.Equal(rv, api.Get(BuiltinResources.Pods, "default", "finished").As<V1Pod>().Metadata.ResourceVersion);
    }

    [Theory]
    [InlineData("250ms", 250)]
    [InlineData("1m30s", 90_000)]
    [InlineData("2", 2_000)]
    public void Does_parse_simulation_durations(string text, int milliseconds) =>
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), SimulationAnnotations.ParseDuration(text, SimulationAnnotations.Duration));
}
