namespace Lowbit.Planner;

/// <summary>GPU nodes, or CPU-only nodes (memory = the node's RAM).</summary>
public enum DeviceKind
{
    Gpu,
    Cpu,
}

/// <summary>
/// How the GPUs of a node talk. Multi-node vLLM serving is only planned for NVLink node types (they come with RDMA
/// networking between nodes); PCIe boxes are planned as single nodes. Training is never planned over several nodes.
/// </summary>
public enum Interconnect
{
    Pcie,
    NvLink,
}

/// <summary>A Kubernetes toleration a pod needs to land on the node type.</summary>
public sealed record Toleration
{
    public required string Key { get; init; }

    public string Operator { get; init; } = "Exists";

    public string Value { get; init; } = "";

    public required string Effect { get; init; }
}

/// <summary>One purchasable node shape: GPU model, count, speed, price (with its source) and scheduling hints.</summary>
public sealed record NodeType
{
    /// <summary>Catalog key, e.g. <c>a100-80gb</c>.</summary>
    public required string Name { get; init; }

    /// <summary>Display name of the device, e.g. <c>A100-80GB</c> (CPU nodes: the machine type).</summary>
    public required string GpuModel { get; init; }

    public DeviceKind Kind { get; init; } = DeviceKind.Gpu;

    /// <summary>Memory of one GPU as the driver reports it (nvidia-smi total); for CPU nodes, the node's RAM.</summary>
    public required ByteSize MemoryPerDevice { get; init; }

    public required double MemoryBandwidthGBps { get; init; }

    /// <summary>Dense bf16 (fp16 for T4) tensor TFLOP/s, no sparsity.</summary>
    public required double Bf16Tflops { get; init; }

    /// <summary>GPUs per node (0 for CPU nodes).</summary>
    public required int GpusPerNode { get; init; }

    /// <summary>On-demand USD per GPU-hour (per node-hour for CPU nodes).</summary>
    public required double UsdPerHour { get; init; }

    public required string PriceSource { get; init; }

    public required string PriceDate { get; init; }

    public Interconnect Interconnect { get; init; } = Interconnect.Pcie;

    public int HostCpu { get; init; } = 8;

    public ByteSize HostMemory { get; init; } = ByteSize.FromGiB(32);

    /// <summary>Node labels a pod selects, e.g. <c>nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB</c>.</summary>
    public IReadOnlyDictionary<string, string> NodeSelector { get; init; } = new Dictionary<string, string>();

    public IReadOnlyList<Toleration> Tolerations { get; init; } = [];

    /// <summary>Extended resource a pod requests per GPU.</summary>
    public string ResourceName { get; init; } = GpuCatalog.NvidiaGpuResource;
}

/// <summary>
/// The node types placements are chosen from. <see cref="Default"/> carries public on-demand prices with
/// source and date; a JSON catalog (<see cref="CatalogJson"/>) overrides or extends it.
/// </summary>
public sealed record GpuCatalog
{
    public const string NvidiaGpuResource = "nvidia.com/gpu";
    public const string GpuProductLabel = "nvidia.com/gpu.product";
    public const string InstanceTypeLabel = "node.kubernetes.io/instance-type";
    public const string NodeTypeLabel = "lowbit.dev/node-type";

    public required IReadOnlyList<NodeType> NodeTypes { get; init; }

    public NodeType? Find(string name) =>
        NodeTypes.FirstOrDefault(n => string.Equals(n.Name, name, StringComparison.OrdinalIgnoreCase));

    private const string Seed = "seed article table (GCP on-demand, as listed in shared/reference/gpu-prices.md)";
    private const string SeedDate = "2024-02";
    private const string RunPod = "RunPod on-demand, deploybase.ai/articles/runpod-gpu-pricing";
    private const string RunPodDate = "2026-03-10";

    private static readonly Toleration GpuToleration = new() { Key = NvidiaGpuResource, Effect = "NoSchedule" };

    /// <summary>
    /// Default catalog. Memory is what nvidia-smi reports (T4 15360 MiB with ECC, L4 23034 MiB, A10G
    /// 22888 MiB, A100-40GB 40960 MiB, H100 81559 MiB, H200 143771 MiB). Prices: T4, A100-40GB and
    /// A100-80GB at the seed article's GCP figures (so the published placements reproduce: 2× T4 $0.70,
    /// 2× A100-80GB $7.70); the rest from the sources named per entry.
    /// </summary>
    public static readonly GpuCatalog Default = new()
    {
        NodeTypes =
        [
            Gpu("t4", "T4-16GB", "Tesla-T4", memoryMiB: 15360, bandwidth: 320, tflops: 65, perNode: 4, usd: 0.35, Seed, SeedDate, Interconnect.Pcie, cpu: 32, hostGiB: 120, instance: "n1-highmem-32"),
            Gpu("l4", "L4-24GB", "NVIDIA-L4", memoryMiB: 23034, bandwidth: 300, tflops: 121, perNode: 8, usd: 0.56004, "GCP accelerator price, skypilot-catalog catalogs/v5/gcp/vms.csv @0129130f", "catalog snapshot (undated, 2024-2025)", Interconnect.Pcie, cpu: 96, hostGiB: 384, instance: "g2-standard-96"),
            Gpu("a10g", "A10G-24GB", "NVIDIA-A10G", memoryMiB: 22888, bandwidth: 600, tflops: 70, perNode: 8, usd: 1.006, "AWS g5.xlarge on-demand, factualminds.com EC2 pricing 2026 (multi-GPU g5.12xlarge is $1.418/GPU)", "2026-06-17", Interconnect.Pcie, cpu: 192, hostGiB: 768, instance: "g5.48xlarge"),
            Gpu("rtx-3090", "RTX-3090-24GB", "NVIDIA-GeForce-RTX-3090", memoryMiB: 24576, bandwidth: 936, tflops: 71, perNode: 4, usd: 0.39, RunPod, RunPodDate, Interconnect.Pcie, cpu: 32, hostGiB: 128, instance: "rtx3090x4"),
            Gpu("rtx-4090", "RTX-4090-24GB", "NVIDIA-GeForce-RTX-4090", memoryMiB: 24564, bandwidth: 1008, tflops: 165, perNode: 4, usd: 0.60, RunPod, RunPodDate, Interconnect.Pcie, cpu: 32, hostGiB: 128, instance: "rtx4090x4"),
            Gpu("a100-40gb", "A100-40GB", "NVIDIA-A100-SXM4-40GB", memoryMiB: 40960, bandwidth: 1555, tflops: 312, perNode: 8, usd: 2.87, Seed, SeedDate, Interconnect.NvLink, cpu: 96, hostGiB: 680, instance: "a2-highgpu-8g"),
            Gpu("a100-80gb", "A100-80GB", "NVIDIA-A100-SXM4-80GB", memoryMiB: 81920, bandwidth: 2039, tflops: 312, perNode: 8, usd: 3.85, Seed, SeedDate, Interconnect.NvLink, cpu: 96, hostGiB: 1360, instance: "a2-ultragpu-8g"),
            Gpu("h100-80gb", "H100-80GB", "NVIDIA-H100-80GB-HBM3", memoryMiB: 81559, bandwidth: 3350, tflops: 989, perNode: 8, usd: 4.29, "Lambda 1x H100 SXM on-demand, github.com/tgarg01/silybench-data gpu_prices.csv", "2026-09-26", Interconnect.NvLink, cpu: 208, hostGiB: 1872, instance: "a3-highgpu-8g"),
            Gpu("h200-141gb", "H200-141GB", "NVIDIA-H200", memoryMiB: 143771, bandwidth: 4800, tflops: 989, perNode: 8, usd: 6.35, RunPod, RunPodDate, Interconnect.NvLink, cpu: 224, hostGiB: 2952, instance: "a3-ultragpu-8g"),
            new NodeType
            {
                Name = "cpu-highmem-16",
                GpuModel = "CPU n2-highmem-16",
                Kind = DeviceKind.Cpu,
                MemoryPerDevice = ByteSize.FromGiB(128),
                MemoryBandwidthGBps = 60,
                Bf16Tflops = 1.5,
                GpusPerNode = 0,
                UsdPerHour = 1.048,
                PriceSource = "GCP n2-highmem-2 us-central1 $0.131014/h × 8 (cloud.google.com/compute/vm-instance-pricing, via a third-party copy)",
                PriceDate = "retrieved 2026-11-22",
                HostCpu = 16,
                HostMemory = ByteSize.FromGiB(128),
                NodeSelector = new Dictionary<string, string> { [InstanceTypeLabel] = "n2-highmem-16" },
                ResourceName = "",
            },
        ],
    };

    private static NodeType Gpu(string name, string model, string product, int memoryMiB, double bandwidth, double tflops, int perNode, double usd,
        string source, string date, Interconnect interconnect, int cpu, int hostGiB, string instance) => new()
    {
        Name = name,
        GpuModel = model,
        MemoryPerDevice = ByteSize.FromMiB(memoryMiB),
        MemoryBandwidthGBps = bandwidth,
        Bf16Tflops = tflops,
        GpusPerNode = perNode,
        UsdPerHour = usd,
        PriceSource = source,
        PriceDate = date,
        Interconnect = interconnect,
        HostCpu = cpu,
        HostMemory = ByteSize.FromGiB(hostGiB),
        NodeSelector = new Dictionary<string, string> { [GpuProductLabel] = product, [InstanceTypeLabel] = instance },
        Tolerations = [GpuToleration],
    };
}
