using System.Globalization;
using Lowbit.LocalCluster.Nodes;
using Lowbit.Planner;

namespace Lowbit.Cli.Local;

/// <summary>
/// The local cluster's default nodes, made from the planner's GPU catalog so that the node selectors and tolerations
/// the operator renders for a placement match real nodes: one node per node type, CPU node types executing their pods
/// as local processes, GPU node types simulated.
/// </summary>
public static class CatalogNodes
{
    public static NodesConfig FromCatalog(GpuCatalog catalog) => new()
    {
        Nodes = SimulatedNodes.FromCatalog(catalog).Select(ToNodeConfig).ToList(),
    };

    private static NodeConfig ToNodeConfig(SimulatedNode node)
    {
        var gpuResource = node.Allocatable.Keys.FirstOrDefault(k => k.Contains('/', StringComparison.Ordinal));
        var gpus = gpuResource is null ? 0 : int.Parse(node.Allocatable[gpuResource], CultureInfo.InvariantCulture);
        return new NodeConfig
        {
            Name = node.Name,
            Mode = gpus == 0 ? KubeletMode.Execute : KubeletMode.Simulate,
            Cpu = node.Allocatable["cpu"],
            Memory = node.Allocatable["memory"],
            Gpus = gpus,
            Labels = node.Labels,
            Taints = node.Taints.Select(t => new NodeTaint(t.Key, t.Value.Length == 0 ? null : t.Value, t.Effect)).ToList(),
        };
    }
}
