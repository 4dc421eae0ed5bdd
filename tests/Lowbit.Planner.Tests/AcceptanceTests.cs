using Lowbit.Engine.Protocol;

namespace Lowbit.Planner.Tests;

/// <summary>
/// The published figures of the seed documents (issue 2, Acceptance). Memory figures are in GB
/// (10^9 bytes) as published; tolerance ±20%. Placements must be no more expensive than the published
/// hardware at the catalog prices (T4 $0.35, A100-40GB $2.87, A100-80GB $3.85 per GPU-hour).
/// </summary>
public sealed class AcceptanceTests
{
    private static PlanResult Serve(ModelArchitecture model, string weights, int context, PlacementConstraints? constraints = null, ServingRuntime runtime = ServingRuntime.Lowbit) =>
        PlacementPlanner.Plan(new PlanRequest
        {
            Model = model,
            Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Parse(weights), ContextLength = context, Runtime = runtime },
            Constraints = constraints ?? PlacementConstraints.None,
        });

    private static PlanResult Train(ModelArchitecture model, WorkloadMode mode, string weights, GpuCatalog? catalog = null) =>
        PlacementPlanner.Plan(new PlanRequest
        {
            Model = model,
            Workload = new Workload { Mode = mode, Weights = WeightFormat.Parse(weights), SequenceLength = 2048, MicroBatch = 1, GradientCheckpointing = true },
            Catalog = catalog ?? GpuCatalog.Default,
        });

    private static void AssertWithin(double published, double estimate, double tolerance = 0.20) =>
        Assert.True(Math.Abs(estimate - published) / published <= tolerance, $"estimate {estimate:0.0} GB vs published {published} GB");

    private static Fits Chosen(PlanResult result) => Assert.IsType<Planned>(result).Choice;

    private static PlacementOption Option(PlanResult result, string nodeType, int gpus, int nodes = 1) =>
        result.Options.Single(o => o.NodeType.Name == nodeType && o.GpusPerNode == gpus && o.Nodes == nodes);

    private static readonly PlacementConstraints A100Only = new() { AllowedGpuTypes = ["a100-40gb", "a100-80gb"] };

    [Fact]
    public void Does_place_StarCoder_fp16_at_about_36_GB_no_dearer_than_one_A100_40GB()
    {
        var result = Serve(ModelPresets.StarCoder, "fp16", 8192);
        AssertWithin(36, result.Total.Total.GB);
        Assert.True(Chosen(result).HourlyUsd <= 2.87, Chosen(result).Label);
        Assert.IsType<Fits>(Option(result, "a100-40gb", 1));
    }

    [Fact]
    public void Does_place_StarCoder_int8_at_about_18_GB_no_dearer_than_two_T4()
    {
        var result = Serve(ModelPresets.StarCoder, "int8", 8192);
        AssertWithin(18, result.Total.Total.GB);
        Assert.True(Chosen(result).HourlyUsd <= 0.70, Chosen(result).Label);
        var twoT4 = Assert.IsType<Fits>(Option(result, "t4", 2));
        Assert.Equal(0.70, twoT4.HourlyUsd, 6);
    }

    [Fact]
    public void Does_place_StarCoder_int4_at_about_10_GB_on_one_T4()
    {
        var result = Serve(ModelPresets.StarCoder, "int4", 8192);
        AssertWithin(10, result.Total.Total.GB);
        var chosen = Chosen(result);
        Assert.True(chosen.HourlyUsd <= 0.35, chosen.Label);
        Assert.Equal(("t4", 1), (chosen.NodeType.Name, chosen.Gpus));
    }

    [Fact]
    public void Does_place_Llama2_70B_fp16_at_about_150_GB_on_two_A100_80GB_among_A100s()
    {
        var result = Serve(ModelPresets.Llama2_70B, "fp16", 4096);
        AssertWithin(150, result.Total.Total.GB);
        Assert.True(Chosen(result).HourlyUsd <= 7.70, Chosen(result).Label);
        Assert.IsType<DoesNotFit>(Option(result, "a100-80gb", 1));
        var seed = Chosen(Serve(ModelPresets.Llama2_70B, "fp16", 4096, A100Only));
        Assert.Equal(("a100-80gb", 2, 7.70), (seed.NodeType.Name, seed.Gpus, Math.Round(seed.HourlyUsd, 2)));
    }

    [Fact]
    public void Does_place_Llama2_70B_int8_at_about_80_GB_on_one_A100_80GB_among_A100s()
    {
        var result = Serve(ModelPresets.Llama2_70B, "int8", 4096);
        AssertWithin(80, result.Total.Total.GB);
        Assert.True(Chosen(result).HourlyUsd <= 3.85, Chosen(result).Label);
        var seed = Chosen(Serve(ModelPresets.Llama2_70B, "int8", 4096, A100Only));
        Assert.Equal(("a100-80gb", 1, 3.85), (seed.NodeType.Name, seed.Gpus, seed.HourlyUsd));
    }

    /// <summary>
    /// The seed figure (about 40 GB, one A100-40GB) holds for llama.cpp. Our engine measured more: 50.16 GiB for the 70B
    /// int4 g64 at 4,096 × 8 on the H100 (session 12; its context, packed-load reserve and prefill intermediates), which
    /// the planner carries to 39.5 GiB at 4,096 × 1 with 4.25-bit weights: over an A100-40GB's usable 38 GiB, so among
    /// A100s lowbit takes one A100-80GB rather than promise a fit that would not load.
    /// </summary>
    [Fact]
    public void Does_place_Llama2_70B_int4_at_about_40_GB_on_one_A100_40GB_with_llamacpp_and_one_A100_80GB_with_lowbit()
    {
        var result = Serve(ModelPresets.Llama2_70B, "int4", 4096);
        AssertWithin(40, result.Total.Total.GB);
        Assert.True(Chosen(result).HourlyUsd <= 2.87, Chosen(result).Label);
        var seed = Chosen(Serve(ModelPresets.Llama2_70B, "int4", 4096, A100Only, ServingRuntime.LlamaCpp));
        Assert.Equal(("a100-40gb", 1, 2.87), (seed.NodeType.Name, seed.Gpus, seed.HourlyUsd));
        var ours = Serve(ModelPresets.Llama2_70B, "int4", 4096, A100Only);
        Assert.IsType<DoesNotFit>(Option(ours, "a100-40gb", 1));
        Assert.Equal(("a100-80gb", 1, 3.85), (Chosen(ours).NodeType.Name, Chosen(ours).Gpus, Chosen(ours).HourlyUsd));
    }

    [Fact]
    public void Does_not_fit_Mixtral_fp16_on_one_80GB_GPU()
    {
        var result = Serve(ModelPresets.Mixtral8x7B, "fp16", 4096);
        AssertWithin(90, result.Total.Total.GB);
        foreach (var gpu in new[] { "a100-80gb", "h100-80gb" })
        {
            var single = Assert.IsType<DoesNotFit>(Option(result, gpu, 1));
            Assert.Equal(RejectionReason.InsufficientMemory, single.Reason);
            Assert.True(single.Shortfall.GiB > 5);
        }
    }

    [Fact]
    public void Does_fit_Mixtral_4_bit_on_one_A100_40GB()
    {
        var result = Serve(ModelPresets.Mixtral8x7B, "int4", 4096);
        Assert.IsType<Fits>(Option(result, "a100-40gb", 1));
        Assert.True(Chosen(result).HourlyUsd <= 2.87);
    }

    [Fact]
    public void Does_fit_LLaMA_65B_int4_on_one_A100_80GB_and_on_four_A10G()
    {
        var result = Serve(ModelPresets.Llama65B, "int4", 2048);
        Assert.IsType<Fits>(Option(result, "a100-80gb", 1));
        var a10g = Assert.IsType<Fits>(Option(result, "a10g", 4));
        Assert.True(a10g.PerDevice.Total.GiB < 22.3 * 0.95);
        Assert.True(Chosen(result).HourlyUsd <= 3.85);
    }

    [Fact]
    public void Does_charge_full_fine_tuning_12_to_16_bytes_per_parameter_and_find_no_one_node_placement_for_70B()
    {
        var result = Train(ModelPresets.Llama2_70B, WorkloadMode.Full, "bf16");
        var perParameter = (result.Total.Weights + result.Total.Gradients + result.Total.Optimizer).Bytes / (double)result.Parameters.Total;
        Assert.InRange(perParameter, 12, 16);
        foreach (var eightGpuNode in new[] { "a100-80gb", "h100-80gb", "h200-141gb" })
        {
            Assert.Equal(RejectionReason.InsufficientMemory, Assert.IsType<DoesNotFit>(Option(result, eightGpuNode, 8)).Reason);
        }
        // The seed's example placed it on two nodes of 8× A100-80GB ($61.60/h), which needs a multi-node (sharded)
        // trainer. Our engine trains in one pod (a pipeline split over its GPUs), so the planner offers no multi-node
        // training option and says nothing fits, naming the closest: one node of eight GPUs.
        Assert.All(result.Options, o => Assert.Equal(1, o.Nodes));
        var noFit = Assert.IsType<NoFit>(result);
        Assert.Equal(8, noFit.Closest.Gpus);
        Assert.Contains("nothing fits; closest: 8×", result.Summary, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_fit_QLoRA_of_Llama2_70B_on_one_80GB_GPU()
    {
        var result = Train(ModelPresets.Llama2_70B, WorkloadMode.Qlora, "nf4");
        Assert.IsType<Fits>(Option(result, "a100-80gb", 1));
        Assert.IsType<Fits>(Option(result, "h100-80gb", 1));
    }

    [Fact]
    public void Does_fit_Llama3_8B_low_bit_full_fine_tuning_in_24_GB()
    {
        var result = Train(ModelPresets.Llama3_8B, WorkloadMode.LowbitFull, "int8");
        var rtx3090 = Assert.IsType<Fits>(Option(result, "rtx-3090", 1));
        Assert.True(rtx3090.PerDevice.Total.GB < 24);
        // The same model in 16-bit with AdamW needs several times more.
        var full = Train(ModelPresets.Llama3_8B, WorkloadMode.Full, "bf16");
        Assert.IsType<DoesNotFit>(Option(full, "rtx-3090", 1));
    }

    [Fact]
    public void Does_fit_a_13B_model_at_2_65_bits_per_weight_in_8_GB()
    {
        var eightGb = CatalogJson.Parse("""
            { "replaceDefaults": true, "nodeTypes": [ { "name": "rtx-3070", "gpuModel": "RTX-3070-8GB", "gpuMemoryMiB": 8192,
              "memoryBandwidthGBps": 448, "bf16Tflops": 40, "gpusPerNode": 1, "usdPerHour": 0.10,
              "priceSource": "test fixture", "priceDate": "2026-11" } ] }
            """);
        var result = PlacementPlanner.Plan(new PlanRequest
        {
            Model = ModelPresets.Llama2_13B,
            // A llama.cpp-class figure (2.65 bits per weight, Q2_K): lowbit's CUDA context and packed-load reserve need 7.8 GiB.
            Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Parse("bpw-2.65"), ContextLength = 2048, Runtime = ServingRuntime.LlamaCpp },
            Catalog = eightGb,
        });
        var chosen = Chosen(result);
        Assert.Equal("rtx-3070", chosen.NodeType.Name);
        Assert.True(result.Total.Total.GB < 8, result.Total.Total.ToGBString());
    }

    [Fact]
    public void Does_fit_Llama2_70B_at_2_5_bits_per_weight_with_2048_context_in_24_GB()
    {
        // An ExLlamaV2/llama.cpp-class figure: with lowbit's measured overheads the same weights need 23.9 GiB (two GPUs).
        var result = Serve(ModelPresets.Llama2_70B, "bpw-2.5", 2048, runtime: ServingRuntime.LlamaCpp);
        Assert.IsType<Fits>(Option(result, "rtx-3090", 1));
        Assert.IsType<Fits>(Option(result, "rtx-4090", 1));
        var chosen = Chosen(result);
        Assert.Equal(1, chosen.Gpus);
        Assert.True(chosen.NodeType.MemoryPerDevice.GiB <= 24);
    }
}
