using System.Text.Json.Nodes;
using k8s.Models;
using Lowbit.LocalCluster.Patching;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Nodes;

/// <summary>How a node's kubelet runs pods.</summary>
public enum KubeletMode
{
    /// <summary>Pods follow a script (annotations <c>sim.lowbit.dev/*</c>): Running, then Succeeded or Failed.</summary>
    Simulate,

    /// <summary>The container's command runs as a local process (images from the executor's image map only).</summary>
    Execute,
}

/// <summary>A node taint (effect NoSchedule, PreferNoSchedule or NoExecute).</summary>
public sealed record NodeTaint(string Key, string? Value, string Effect);

/// <summary>One simulated node: what becomes its Node object and how its kubelet behaves.</summary>
public sealed record NodeConfig
{
    public required string Name { get; init; }

    public KubeletMode Mode { get; init; } = KubeletMode.Simulate;

    /// <summary>Allocatable CPU as a Kubernetes quantity ("8", "7500m").</summary>
    public string Cpu { get; init; } = "8";

    /// <summary>Allocatable memory as a Kubernetes quantity ("32Gi").</summary>
    public string Memory { get; init; } = "32Gi";

    /// <summary>Allocatable <c>nvidia.com/gpu</c>.</summary>
    public int Gpus { get; init; }

    public int MaxPods { get; init; } = 110;

    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();

    public IReadOnlyList<NodeTaint> Taints { get; init; } = [];
}

/// <summary>
/// The node list of a simulated cluster, read from YAML or JSON:
/// <code>
/// nodes:
/// - name: cpu-0
///   mode: execute            # simulate (default) | execute
///   cpu: "4"                 # allocatable quantities
///   memory: 16Gi
///   gpus: 0                  # nvidia.com/gpu
///   count: 1                 # optional: count > 1 makes name-0 .. name-(count-1)
///   labels: { lowbit.dev/node-type: cpu }
///   taints: [ { key: nvidia.com/gpu, value: present, effect: NoSchedule } ]
/// </code>
/// </summary>
public sealed record NodesConfig
{
    public const string GpuProductLabel = "nvidia.com/gpu.product";
    public const string GpuMemoryLabel = "nvidia.com/gpu.memory";
    public const string NodeTypeLabel = "lowbit.dev/node-type";
    public const string KubeletModeLabel = "lowbit.dev/kubelet-mode";

    private static readonly string[] Effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

    public required IReadOnlyList<NodeConfig> Nodes { get; init; }

    /// <summary>One CPU node that executes pods locally plus one simulated node per common GPU.</summary>
    public static NodesConfig Default { get; } = new()
    {
        Nodes =
        [
            new NodeConfig { Name = "cpu-0", Mode = KubeletMode.Execute, Cpu = "4", Memory = "16Gi", Labels = TypeLabels("cpu") },
            Gpu("gpu-t4-0", "Tesla-T4", 15360, 1, "8", "30Gi"),
            Gpu("gpu-l4-0", "NVIDIA-L4", 23034, 1, "8", "32Gi"),
            Gpu("gpu-a100-40gb-0", "NVIDIA-A100-SXM4-40GB", 40960, 1, "12", "85Gi"),
            Gpu("gpu-a100-80gb-0", "NVIDIA-A100-SXM4-80GB", 81920, 2, "24", "170Gi"),
            Gpu("gpu-h100-0", "NVIDIA-H100-80GB-HBM3", 81559, 8, "200", "1800Gi"),
        ],
    };

    public static NodesConfig LoadFile(string path)
    {
        if (!File.Exists(path))
        {
            throw new ArgumentException($"node config file '{path}' does not exist", nameof(path));
        }
        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>Parses the YAML/JSON format above; errors name the field and the accepted values.</summary>
    public static NodesConfig Parse(string text, string source = "node config")
    {
        JsonObject root;
        try
        {
            root = YamlBody.ParseObject(text);
        }
        catch (ApiException ex)
        {
            throw new FormatException($"{source}: {ex.Message}", ex);
        }
        if (root["nodes"] is not JsonArray items || items.Count == 0)
        {
            throw new FormatException($"{source}: 'nodes' must be a non-empty list of nodes");
        }
        var nodes = new List<NodeConfig>();
        for (var i = 0; i < items.Count; i++)
        {
            nodes.AddRange(ParseNode(items[i] as JsonObject ?? throw new FormatException($"{source}: nodes[{i}] must be an object"), $"{source}: nodes[{i}]"));
        }
        var duplicate = nodes.GroupBy(n => n.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new FormatException($"{source}: node name '{duplicate.Key}' appears more than once");
        }
        return new NodesConfig { Nodes = nodes };
    }

    private static IEnumerable<NodeConfig> ParseNode(JsonObject item, string at)
    {
        var known = new[] { "name", "mode", "cpu", "memory", "gpus", "maxPods", "count", "labels", "taints" };
        if (item.Select(kv => kv.Key).FirstOrDefault(k => !known.Contains(k)) is { } unknown)
        {
            throw new FormatException($"{at}.{unknown}: unknown field; accepted: {string.Join(", ", known)}");
        }
        var name = Text(item, "name", at) ?? throw new FormatException($"{at}.name: required");
        var modeText = Text(item, "mode", at) ?? "simulate";
        var mode = modeText switch
        {
            "simulate" => KubeletMode.Simulate,
            "execute" => KubeletMode.Execute,
            _ => throw new FormatException($"{at}.mode: '{modeText}' is not a kubelet mode; accepted: simulate, execute"),
        };
        var cpu = Quantity(item, "cpu", at) ?? "8";
        var memory = Quantity(item, "memory", at) ?? "32Gi";
        var gpus = Integer(item, "gpus", at) ?? 0;
        var maxPods = Integer(item, "maxPods", at) ?? 110;
        var count = Integer(item, "count", at) ?? 1;
        if (count < 1)
        {
            throw new FormatException($"{at}.count: must be at least 1");
        }
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (item["labels"] is JsonObject labelObj)
        {
            foreach (var (k, v) in labelObj)
            {
                labels[k] = v?.ToString() ?? "";
            }
        }
        else if (item["labels"] is not null)
        {
            throw new FormatException($"{at}.labels: must be a map of label names to values");
        }
        var taints = new List<NodeTaint>();
        if (item["taints"] is JsonArray taintItems)
        {
            for (var t = 0; t < taintItems.Count; t++)
            {
                var taint = taintItems[t] as JsonObject ?? throw new FormatException($"{at}.taints[{t}]: must be an object with key, value, effect");
                var key = Text(taint, "key", $"{at}.taints[{t}]") ?? throw new FormatException($"{at}.taints[{t}].key: required");
                var effect = Text(taint, "effect", $"{at}.taints[{t}]") ?? "NoSchedule";
                if (!Effects.Contains(effect))
                {
                    throw new FormatException($"{at}.taints[{t}].effect: '{effect}' is not a taint effect; accepted: {string.Join(", ", Effects)}");
                }
                taints.Add(new NodeTaint(key, Text(taint, "value", $"{at}.taints[{t}]"), effect));
            }
        }
        else if (item["taints"] is not null)
        {
            throw new FormatException($"{at}.taints: must be a list");
        }
        for (var i = 0; i < count; i++)
        {
            yield return new NodeConfig
            {
                Name = count == 1 ? name : $"{name}-{i}",
                Mode = mode,
                Cpu = cpu,
                Memory = memory,
                Gpus = gpus,
                MaxPods = maxPods,
                Labels = labels,
                Taints = taints,
            };
        }
    }

    private static string? Text(JsonObject obj, string field, string at) => obj[field] switch
    {
        null => null,
        JsonValue v => v.ToString(),
        _ => throw new FormatException($"{at}.{field}: must be a string"),
    };

    private static int? Integer(JsonObject obj, string field, string at) => obj[field] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<long>(out var l) && l is >= 0 and <= int.MaxValue => (int)l,
        _ => throw new FormatException($"{at}.{field}: must be a non-negative integer"),
    };

    private static string? Quantity(JsonObject obj, string field, string at)
    {
        var text = Text(obj, field, at);
        if (text is null)
        {
            return null;
        }
        try
        {
            _ = new ResourceQuantity(text).ToDecimal();
            return text;
        }
        catch (Exception ex) when (ex is FormatException or ArgumentException or OverflowException)
        {
            throw new FormatException($"{at}.{field}: '{text}' is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)", ex);
        }
    }

    private static Dictionary<string, string> TypeLabels(string type) => new(StringComparer.Ordinal) { [NodeTypeLabel] = type };

    private static NodeConfig Gpu(string name, string product, int memoryMiB, int gpus, string cpu, string memory) => new()
    {
        Name = name,
        Cpu = cpu,
        Memory = memory,
        Gpus = gpus,
        Labels = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [NodeTypeLabel] = "gpu",
            [GpuProductLabel] = product,
            [GpuMemoryLabel] = memoryMiB.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["nvidia.com/gpu.count"] = gpus.ToString(System.Globalization.CultureInfo.InvariantCulture),
        },
    };
}
