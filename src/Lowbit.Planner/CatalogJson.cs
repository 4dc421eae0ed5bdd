using System.Globalization;
using System.Text.Json;

namespace Lowbit.Planner;

/// <summary>
/// Reads a catalog override (the text; the CLI or operator reads the file and converts YAML to JSON).
/// Scalars may be JSON numbers/booleans or strings holding them (YAML converted by a generic
/// converter yields strings). Shape:
/// <code>
/// { "replaceDefaults": false,            # true: only the listed node types
///   "nodeTypes": [ {
///       "name": "a100-80gb",              # an existing name overrides that entry field by field
///       "gpuModel": "A100-80GB", "kind": "gpu",          # gpu | cpu
///       "gpuMemoryGiB": 80,               # or gpuMemoryMiB; CPU nodes: the node's RAM
///       "memoryBandwidthGBps": 2039, "bf16Tflops": 312, "gpusPerNode": 8,
///       "usdPerHour": 3.85,               # per GPU (per node for CPU nodes)
///       "priceSource": "...", "priceDate": "2024-02",   # required with a price
///       "interconnect": "nvlink",         # nvlink | pcie
///       "hostCpu": 96, "hostMemoryGiB": 1360,
///       "nodeSelector": { "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB" },
///       "tolerations": [ { "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule" } ],
///       "resourceName": "nvidia.com/gpu" } ] }
/// </code>
/// </summary>
public static class CatalogJson
{
    public static GpuCatalog Parse(string json, GpuCatalog? baseCatalog = null)
    {
        var defaults = baseCatalog ?? GpuCatalog.Default;
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException ex)
        {
            throw new PlanInputException("catalog", $"not valid JSON ({ex.Message})");
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("nodeTypes", out var list) || list.ValueKind != JsonValueKind.Array)
            {
                throw new PlanInputException("catalog", "expected an object with a 'nodeTypes' list");
            }

            var replace = Bool(root, "replaceDefaults", "catalog") ?? false;
            var result = replace ? new List<NodeType>() : [.. defaults.NodeTypes];
            var index = 0;
            foreach (var element in list.EnumerateArray())
            {
                var path = $"catalog.nodeTypes[{index++}]";
                var name = Str(element, "name", path) ?? throw new PlanInputException($"{path}.name", "missing");
                var existing = result.FindIndex(n => string.Equals(n.Name, name, StringComparison.OrdinalIgnoreCase));
                var inherited = existing >= 0 ? result[existing] : defaults.Find(name);
                var nodeType = Read(element, name, inherited, path);
                if (existing >= 0)
                {
                    result[existing] = nodeType;
                }
                else
                {
                    result.Add(nodeType);
                }
            }
            if (result.Count == 0)
            {
                throw new PlanInputException("catalog.nodeTypes", "is empty");
            }
            return new GpuCatalog { NodeTypes = result };
        }
    }

    private static NodeType Read(JsonElement e, string name, NodeType? inherited, string path)
    {
        var kind = Str(e, "kind", path) is { } k
            ? k.ToLowerInvariant() switch
            {
                "gpu" => DeviceKind.Gpu,
                "cpu" => DeviceKind.Cpu,
                _ => throw new PlanInputException($"{path}.kind", $"unknown kind '{k}'", ["gpu", "cpu"]),
            }
            : inherited?.Kind ?? DeviceKind.Gpu;
        var memory = Num(e, "gpuMemoryGiB", path) is { } gib ? ByteSize.FromGiB(gib)
            : Num(e, "gpuMemoryMiB", path) is { } mib ? ByteSize.FromMiB(mib)
            : inherited?.MemoryPerDevice ?? throw Missing(path, "gpuMemoryGiB");
        var price = Num(e, "usdPerHour", path) ?? Num(e, "usdPerGpuHour", path);
        var priceSource = Str(e, "priceSource", path) ?? (price is null ? inherited?.PriceSource : null) ?? throw Missing(path, "priceSource");
        var priceDate = Str(e, "priceDate", path) ?? (price is null ? inherited?.PriceDate : null) ?? throw Missing(path, "priceDate");
        var interconnect = Str(e, "interconnect", path) is { } i
            ? i.ToLowerInvariant() switch
            {
                "pcie" => Interconnect.Pcie,
                "nvlink" => Interconnect.NvLink,
                _ => throw new PlanInputException($"{path}.interconnect", $"unknown interconnect '{i}'", ["pcie", "nvlink"]),
            }
            : inherited?.Interconnect ?? Interconnect.Pcie;

        var nodeType = new NodeType
        {
            Name = name,
            GpuModel = Str(e, "gpuModel", path) ?? inherited?.GpuModel ?? throw Missing(path, "gpuModel"),
            Kind = kind,
            MemoryPerDevice = memory,
            MemoryBandwidthGBps = Num(e, "memoryBandwidthGBps", path) ?? inherited?.MemoryBandwidthGBps ?? throw Missing(path, "memoryBandwidthGBps"),
            Bf16Tflops = Num(e, "bf16Tflops", path) ?? inherited?.Bf16Tflops ?? throw Missing(path, "bf16Tflops"),
            GpusPerNode = (int?)Num(e, "gpusPerNode", path) ?? inherited?.GpusPerNode ?? (kind == DeviceKind.Cpu ? 0 : throw Missing(path, "gpusPerNode")),
            UsdPerHour = price ?? inherited?.UsdPerHour ?? throw Missing(path, "usdPerHour"),
            PriceSource = priceSource,
            PriceDate = priceDate,
            Interconnect = interconnect,
            HostCpu = (int?)Num(e, "hostCpu", path) ?? inherited?.HostCpu ?? 8,
            HostMemory = Num(e, "hostMemoryGiB", path) is { } host ? ByteSize.FromGiB(host) : inherited?.HostMemory ?? ByteSize.FromGiB(32),
            NodeSelector = StringMap(e, "nodeSelector", path) ?? inherited?.NodeSelector ?? new Dictionary<string, string>(),
            Tolerations = Tolerations(e, path) ?? inherited?.Tolerations ?? [],
            ResourceName = Str(e, "resourceName", path) ?? inherited?.ResourceName ?? (kind == DeviceKind.Gpu ? GpuCatalog.NvidiaGpuResource : ""),
        };
        Check(nodeType, path);
        return nodeType;
    }

    private static void Check(NodeType n, string path)
    {
        if (n.MemoryPerDevice <= ByteSize.Zero)
        {
            throw new PlanInputException($"{path}.gpuMemoryGiB", "must be positive");
        }
        if (n.MemoryBandwidthGBps <= 0 || n.Bf16Tflops <= 0)
        {
            throw new PlanInputException($"{path}.memoryBandwidthGBps/bf16Tflops", "must be positive");
        }
        if (n.Kind == DeviceKind.Gpu && n.GpusPerNode is < 1 or > 16)
        {
            throw new PlanInputException($"{path}.gpusPerNode", $"must be between 1 and 16 for a GPU node, got {n.GpusPerNode}");
        }
        if (n.UsdPerHour < 0 || double.IsNaN(n.UsdPerHour))
        {
            throw new PlanInputException($"{path}.usdPerHour", "must be zero or positive");
        }
    }

    private static PlanInputException Missing(string path, string field) => new($"{path}.{field}", "missing (required for a new node type, and priceSource/priceDate with a new price)");

    private static string? Str(JsonElement e, string field, string path)
    {
        if (!e.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Number => v.GetRawText(),
            _ => throw new PlanInputException($"{path}.{field}", $"must be a string, got {v.ValueKind}"),
        };
    }

    private static double? Num(JsonElement e, string field, string path)
    {
        if (!e.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        if (v.ValueKind == JsonValueKind.Number)
        {
            return v.GetDouble();
        }
        if (v.ValueKind == JsonValueKind.String && double.TryParse(v.GetString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var parsed))
        {
            return parsed;
        }
        throw new PlanInputException($"{path}.{field}", $"must be a number, got {v.GetRawText()}");
    }

    private static bool? Bool(JsonElement e, string field, string path)
    {
        if (!e.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.String when bool.TryParse(v.GetString(), out var b) => b,
            _ => throw new PlanInputException($"{path}.{field}", $"must be true or false, got {v.GetRawText()}"),
        };
    }

    private static Dictionary<string, string>? StringMap(JsonElement e, string field, string path)
    {
        if (!e.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        if (v.ValueKind != JsonValueKind.Object)
        {
            throw new PlanInputException($"{path}.{field}", "must be a map of strings");
        }
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var property in v.EnumerateObject())
        {
            map[property.Name] = Str(v, property.Name, $"{path}.{field}") ?? "";
        }
        return map;
    }

    private static List<Toleration>? Tolerations(JsonElement e, string path)
    {
        if (!e.TryGetProperty("tolerations", out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        if (v.ValueKind != JsonValueKind.Array)
        {
            throw new PlanInputException($"{path}.tolerations", "must be a list");
        }
        var list = new List<Toleration>();
        var index = 0;
        foreach (var t in v.EnumerateArray())
        {
            var tPath = $"{path}.tolerations[{index++}]";
            list.Add(new Toleration
            {
                Key = Str(t, "key", tPath) ?? throw new PlanInputException($"{tPath}.key", "missing"),
                Operator = Str(t, "operator", tPath) ?? "Exists",
                Value = Str(t, "value", tPath) ?? "",
                Effect = Str(t, "effect", tPath) ?? "NoSchedule",
            });
        }
        return list;
    }
}
