using Lowbit.LocalCluster.Nodes;
using Lowbit.Planner;

namespace Lowbit.LocalCluster.Tests;

/// <summary>Moved from Lowbit.Planner.Tests/CatalogTests with SimulatedNodes (the planner stays free of cluster shapes).</summary>
public class SimulatedNodesTests
{
    [Fact]
    public void Does_turn_the_catalog_into_simulated_nodes()
    {
        var nodes = SimulatedNodes.FromCatalog(GpuCatalog.Default, nodesPerType: 2);
        Assert.Equal(GpuCatalog.Default.NodeTypes.Count * 2, nodes.Count);
        var a100 = nodes.Single(n => n.Name == "a100-80gb-1");
        Assert.Equal("8", a100.Allocatable["nvidia.com/gpu"]);
        Assert.Equal("96", a100.Allocatable["cpu"]);
        Assert.Equal("1392640Mi", a100.Allocatable["memory"]);
        Assert.Equal("NVIDIA-A100-SXM4-80GB", a100.Labels["nvidia.com/gpu.product"]);
        Assert.Equal("a100-80gb", a100.Labels["lowbit.dev/node-type"]);
        var taint = Assert.Single(a100.Taints);
        Assert.Equal(("nvidia.com/gpu", "NoSchedule"), (taint.Key, taint.Effect));
        var cpu = nodes.Single(n => n.Name == "cpu-highmem-16-0");
        Assert.Empty(cpu.Taints);
        Assert.False(cpu.Allocatable.ContainsKey("nvidia.com/gpu"));
    }
}
