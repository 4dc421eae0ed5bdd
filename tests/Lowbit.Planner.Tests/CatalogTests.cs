namespace Lowbit.Planner.Tests;

public sealed class CatalogTests
{
    [Fact]
    public void Does_ship_every_default_node_type_with_price_source_and_date()
    {
        var names = GpuCatalog.Default.NodeTypes.Select(n => n.Name).ToList();
        Assert.Equal(["t4", "l4", "a10g", "rtx-3090", "rtx-4090", "a100-40gb", "a100-80gb", "h100-80gb", "h200-141gb", "cpu-highmem-16"], names);
        Assert.All(GpuCatalog.Default.NodeTypes, n =>
        {
            Assert.False(string.IsNullOrWhiteSpace(n.PriceSource));
            Assert.False(string.IsNullOrWhiteSpace(n.PriceDate));
            Assert.True(n.UsdPerHour > 0 && n.MemoryBandwidthGBps > 0 && n.Bf16Tflops > 0);
        });
        Assert.Equal(0.35, GpuCatalog.Default.Find("t4")!.UsdPerHour);
        Assert.Equal(2.87, GpuCatalog.Default.Find("a100-40gb")!.UsdPerHour);
        Assert.Equal(3.85, GpuCatalog.Default.Find("a100-80gb")!.UsdPerHour);
    }

    [Fact]
    public void Does_give_gpu_node_types_a_product_selector_gpu_toleration_and_resource()
    {
        var a100 = GpuCatalog.Default.Find("a100-80gb")!;
        Assert.Equal("NVIDIA-A100-SXM4-80GB", a100.NodeSelector[GpuCatalog.GpuProductLabel]);
        Assert.Equal("nvidia.com/gpu", a100.ResourceName);
        var toleration = Assert.Single(a100.Tolerations);
        Assert.Equal(("nvidia.com/gpu", "Exists", "NoSchedule"), (toleration.Key, toleration.Operator, toleration.Effect));
        Assert.Equal(80, a100.MemoryPerDevice.GiB);
    }

    [Fact]
    public void Does_override_fields_of_a_default_entry_and_add_new_ones()
    {
        var catalog = CatalogJson.Parse("""
            { "nodeTypes": [
                { "name": "t4", "usdPerHour": "0.526", "priceSource": "AWS g4dn.xlarge", "priceDate": "2025", "gpusPerNode": "1" },
                { "name": "mi300x", "gpuModel": "MI300X-192GB", "gpuMemoryGiB": 192, "memoryBandwidthGBps": 5300,
                  "bf16Tflops": 1307, "gpusPerNode": 8, "usdPerHour": 4.0, "priceSource": "example", "priceDate": "2026-01",
                  "interconnect": "nvlink", "resourceName": "amd.com/gpu",
                  "nodeSelector": { "amd.com/gpu.product": "MI300X" },
                  "tolerations": [ { "key": "amd.com/gpu", "effect": "NoSchedule" } ] } ] }
            """);
        var t4 = catalog.Find("t4")!;
        Assert.Equal((0.526, 1, "AWS g4dn.xlarge"), (t4.UsdPerHour, t4.GpusPerNode, t4.PriceSource));
        Assert.Equal(15360, t4.MemoryPerDevice.Bytes / ByteSize.BytesPerMiB); // inherited
        var mi300 = catalog.Find("mi300x")!;
        Assert.Equal(("amd.com/gpu", Interconnect.NvLink), (mi300.ResourceName, mi300.Interconnect));
        Assert.Equal(GpuCatalog.Default.NodeTypes.Count + 1, catalog.NodeTypes.Count);
        var plan = Assert.IsType<Planned>(PlacementPlanner.Plan(new PlanRequest
        {
            Model = ModelPresets.Llama2_70B,
            Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Bf16 },
            Catalog = catalog,
            Constraints = new PlacementConstraints { AllowedGpuTypes = ["mi300x"] },
        }));
        Assert.Equal(1, plan.Choice.Gpus);
    }

    [Fact]
    public void Does_replace_the_defaults_when_asked()
    {
        var catalog = CatalogJson.Parse("""{ "replaceDefaults": "true", "nodeTypes": [ { "name": "a100-80gb" } ] }""");
        var only = Assert.Single(catalog.NodeTypes);
        Assert.Equal(GpuCatalog.Default.Find("a100-80gb"), only);
    }

    [Theory]
    [InlineData("""{ "nodeTypes": [ { "name": "new-gpu", "gpuModel": "X" } ] }""", "catalog.nodeTypes[0].gpuMemoryGiB")]
    [InlineData("""{ "nodeTypes": [ { "name": "t4", "gpusPerNode": "many" } ] }""", "catalog.nodeTypes[0].gpusPerNode")]
    [InlineData("""{ "nodeTypes": [ { "name": "t4", "interconnect": "infiniband" } ] }""", "catalog.nodeTypes[0].interconnect")]
    [InlineData("""{ "nodeTypes": [ { "name": "t4", "usdPerHour": 1 } ] }""", "catalog.nodeTypes[0].priceSource")]
    [InlineData("""{ "nodes": [] }""", "catalog")]
    [InlineData("""{ "nodeTypes": [ { "gpuModel": "X" } ] }""", "catalog.nodeTypes[0].name")]
    public void Does_reject_bad_catalogs_naming_the_field(string json, string field)
    {
        var ex = Assert.Throws<PlanInputException>(() => CatalogJson.Parse(json));
        Assert.Equal(field, ex.Field);
    }
}
