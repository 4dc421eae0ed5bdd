using System.Globalization;
using Lowbit.Planner;

namespace Lowbit.LocalCluster.Nodes;

/// <summary>A taint on a simulated node.</summary>
public sealed record SimulatedTaint
{
    public required string Key { get; init; }

    public string Value { get; init; } = "";

    public required string Effect { get; init; }
}

/// <summary>
/// A node as the local cluster should register it: labels (including the node selector of its type),
/// allocatable resources as Kubernetes quantity strings, and taints (GPU nodes: nvidia.com/gpu NoSchedule).
/// </summary>
public sealed record SimulatedNode
{
    public required string Name { get; init; }

    public required string NodeType { get; init; }

    public required IReadOnlyDictionary<string, string> Labels { get; init; }

    /// <summary><c>cpu</c>, <c>memory</c>, <c>pods</c> and, on GPU nodes, the GPU resource (e.g. <c>nvidia.com/gpu</c>).</summary>
    public required IReadOnlyDictionary<string, string> Allocatable { get; init; }

    public required IReadOnlyList<SimulatedTaint> Taints { get; init; }
}

/// <summary>Turns a catalog into node definitions for a simulated cluster.</summary>
public static class SimulatedNodes
{
    /// <summary><paramref name="nodesPerType"/> nodes of every node type, named <c>&lt;type&gt;-&lt;i&gt;</c>.</summary>
    public static IReadOnlyList<SimulatedNode> FromCatalog(GpuCatalog catalog, int nodesPerType = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(nodesPerType);
        var nodes = new List<SimulatedNode>(catalog.NodeTypes.Count * nodesPerType);
        foreach (var type in catalog.NodeTypes)
        {
            for (var i = 0; i < nodesPerType; i++)
            {
                nodes.Add(Create(type, $"{type.Name}-{i}"));
            }
        }
        return nodes;
    }

    public static SimulatedNode Create(NodeType type, string name)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["kubernetes.io/hostname"] = name,
            ["kubernetes.io/os"] = "linux",
            ["kubernetes.io/arch"] = "amd64",
            [GpuCatalog.NodeTypeLabel] = type.Name,
        };
        foreach (var (key, value) in type.NodeSelector)
        {
            labels[key] = value;
        }

        var allocatable = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["cpu"] = type.HostCpu.ToString(CultureInfo.InvariantCulture),
            ["memory"] = string.Create(CultureInfo.InvariantCulture, $"{type.HostMemory.Bytes / ByteSize.BytesPerMiB}Mi"),
            ["pods"] = "110",
        };
        var taints = new List<SimulatedTaint>();
        if (type.Kind == DeviceKind.Gpu)
        {
            labels["nvidia.com/gpu.count"] = type.GpusPerNode.ToString(CultureInfo.InvariantCulture);
            labels["nvidia.com/gpu.memory"] = (type.MemoryPerDevice.Bytes / ByteSize.BytesPerMiB).ToString(CultureInfo.InvariantCulture);
            allocatable[type.ResourceName] = type.GpusPerNode.ToString(CultureInfo.InvariantCulture);
            foreach (var toleration in type.Tolerations)
            {
                taints.Add(new SimulatedTaint { Key = toleration.Key, Value = toleration.Value, Effect = toleration.Effect });
            }
        }
        return new SimulatedNode { Name = name, NodeType = type.Name, Labels = labels, Allocatable = allocatable, Taints = taints };
    }
}
