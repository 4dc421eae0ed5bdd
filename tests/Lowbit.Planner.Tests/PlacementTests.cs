using Lowbit.Engine.Protocol;

namespace Lowbit.Planner.Tests;

public sealed class PlacementTests
{
    private static PlanRequest Request(ModelArchitecture model, string weights, PlacementConstraints? constraints = null, int context = 4096) => new()
    {
        Model = model,
        Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Parse(weights), ContextLength = context },
        Constraints = constraints ?? PlacementConstraints.None,
    };

    [Fact]
    public void Does_rank_options_by_hourly_price_and_choose_the_cheapest_that_fits()
    {
        var result = PlacementPlanner.Plan(Request(ModelPresets.Llama2_13B, "int4"));
        for (var i = 1; i < result.Options.Count; i++)
        {
            Assert.True(result.Options[i - 1].HourlyUsd <= result.Options[i].HourlyUsd);
        }
        var planned = Assert.IsType<Planned>(result);
        Assert.Equal(planned.Choice, result.Options.OfType<Fits>().First());
        Assert.All(result.Options.TakeWhile(o => o != planned.Choice), o => Assert.IsType<DoesNotFit>(o));
    }

    [Fact]
    public void Does_explain_each_cheaper_option_with_its_shortfall()
    {
        var result = PlacementPlanner.Plan(Request(ModelPresets.Llama2_70B, "int4", new PlacementConstraints { AllowedGpuTypes = ["l4", "a100-40gb"] }));
        var planned = Assert.IsType<Planned>(result);
        // Two L4s ($1.12/h) hold the 4-bit 70B model sharded; one L4 and one A100-40GB would also do, at other prices.
        Assert.Equal("2× L4-24GB", planned.Choice.Label);
        var l4 = (DoesNotFit)result.Options.Single(o => o.NodeType.Name == "l4" && o.Gpus == 1);
        Assert.Equal(RejectionReason.InsufficientMemory, l4.Reason);
        Assert.Equal(l4.PerDevice.Total - l4.UsablePerDevice, l4.Shortfall);
        Assert.InRange(l4.Shortfall.GiB, 14, 19);
        // 34.9 GiB of weights + 1.3 GiB KV + lowbit's context 0.85 GiB + allocator reserve 0.5 GiB + packed-load reserve
        // 1.1 GiB (80 layers × 14 MiB) + decode graphs 0.05 GiB + a 2,048-token prefill's layer intermediates 0.7 GiB + logits.
        Assert.Matches(@"^Llama-2-70B int4 needs 39\.\d GiB", result.Summary);
        Assert.Contains("2× L4-24GB at $1.12/h", result.Summary, StringComparison.Ordinal);
        Assert.Contains("1× L4-24GB short by", result.Summary, StringComparison.Ordinal);
        Assert.DoesNotContain("T4", result.Summary, StringComparison.Ordinal); // excluded types are not explained
    }

    [Fact]
    public void Does_write_the_issue_style_sentence_for_single_gpu_node_types()
    {
        var catalog = CatalogJson.Parse("""{ "replaceDefaults": true, "nodeTypes": [ { "name": "l4", "gpusPerNode": 1 }, { "name": "a100-40gb", "gpusPerNode": 1 } ] }""");
        // llama.cpp (36.2 GiB) fits one A100-40GB; lowbit's measured overheads (39.5 GiB) do not (AcceptanceTests).
        var request = Request(ModelPresets.Llama2_70B, "int4") with { Catalog = catalog };
        var result = PlacementPlanner.Plan(request with { Workload = request.Workload with { Runtime = ServingRuntime.LlamaCpp } });
        Assert.Matches(@"^Llama-2-70B int4 needs 3\d\.\d GiB: 1× A100-40GB at \$2\.87/h; 1× L4-24GB short by 1\d\.\d GiB$", result.Summary);
    }

    [Theory]
    [InlineData(1, true)]
    [InlineData(2, true)]
    [InlineData(4, true)]
    [InlineData(8, true)]
    [InlineData(3, false)]
    [InlineData(16, true)]  // 64 % 16 == 0 and 16 is a multiple of the 8 KV heads: each KV head is replicated twice
    [InlineData(32, true)]
    [InlineData(6, false)]  // 64 % 6 != 0
    public void Does_apply_the_tensor_parallel_head_rule_to_Llama2_70B(int shards, bool expected)
    {
        var actual = PlacementPlanner.DividesHeads(ModelPresets.Llama2_70B, shards);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void Does_reject_shard_counts_that_do_not_divide_the_heads()
    {
        // Phi-2 has 32 heads, fine for 8; a 12-head model is not divisible by 8.
        var odd = ModelPresets.TinyLlama11B with { Name = "odd", AttentionHeads = 12, KvHeads = 12, HeadDim = 2048 / 12 };
        Assert.False(PlacementPlanner.DividesHeads(odd, 8));
        Assert.True(PlacementPlanner.DividesHeads(odd, 4));
        var vllm = Request(odd, "bf16");
        var result = PlacementPlanner.Plan(vllm with { Workload = vllm.Workload with { Runtime = ServingRuntime.Vllm } });
        var eight = (DoesNotFit)result.Options.First(o => o.Gpus == 8);
        Assert.Equal(RejectionReason.ShardsDoNotDivideHeads, eight.Reason);
        Assert.Contains("12 attention heads", eight.Explanation, StringComparison.Ordinal);
        // The lowbit runtime splits layers, not heads (serve --shards): no heads rule for it.
        var lowbit = PlacementPlanner.Plan(Request(odd, "bf16"));
        Assert.All(lowbit.Options, o => Assert.NotEqual(RejectionReason.ShardsDoNotDivideHeads, (o as DoesNotFit)?.Reason));
        Assert.Equal(8, lowbit.Options.First(o => o.Gpus == 8).PipelineStages);
        // Multi-query StarCoder (1 KV head, 48 heads) shards 2, 4, 8 ways with a replicated KV head.
        Assert.True(PlacementPlanner.DividesHeads(ModelPresets.StarCoder, 8));
    }

    [Fact]
    public void Does_honour_allowed_gpu_types_by_name_or_model()
    {
        var result = PlacementPlanner.Plan(Request(ModelPresets.Llama2_7B, "bf16", new PlacementConstraints { AllowedGpuTypes = ["H100 80GB"] }));
        var chosen = Assert.IsType<Planned>(result).Choice;
        Assert.Equal("h100-80gb", chosen.NodeType.Name);
        Assert.Contains(result.Options, o => o is DoesNotFit { Reason: RejectionReason.GpuTypeNotAllowed });
    }

    [Fact]
    public void Does_report_no_fit_with_the_smallest_shortfall_and_what_fits_without_constraints()
    {
        var result = PlacementPlanner.Plan(Request(ModelPresets.Llama2_70B, "fp16", new PlacementConstraints { MaxUsdPerHour = 3.0 }));
        var noFit = Assert.IsType<NoFit>(result);
        var memoryRejected = result.Options.OfType<DoesNotFit>().Where(o => o.Reason == RejectionReason.InsufficientMemory).ToList();
        Assert.Equal(memoryRejected.Min(o => o.Shortfall), noFit.Closest.Shortfall);
        Assert.NotEmpty(noFit.FitsWithoutConstraints);
        Assert.All(noFit.FitsWithoutConstraints, o => Assert.True(o.HourlyUsd > 3.0));
        Assert.Contains("nothing fits", result.Summary, StringComparison.Ordinal);
        Assert.Contains("without constraints", result.Summary, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_reject_options_below_the_minimum_tokens_per_second()
    {
        var result = PlacementPlanner.Plan(Request(ModelPresets.Llama2_7B, "int4", new PlacementConstraints { MinTokensPerSecond = 60 }));
        var chosen = Assert.IsType<Planned>(result).Choice;
        Assert.True(chosen.Throughput.TokensPerSecond >= 60);
        Assert.Contains(result.Options, o => o is DoesNotFit { Reason: RejectionReason.TooSlow });
    }

    [Fact]
    public void Does_use_CPU_nodes_only_when_named()
    {
        var tiny = Request(ModelPresets.TinyLlama11B, "gguf-q4_k_m") with { Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Parse("gguf-q4_k_m"), Runtime = ServingRuntime.LlamaCpp } };
        var byDefault = Assert.IsType<Planned>(PlacementPlanner.Plan(tiny));
        Assert.Equal(DeviceKind.Gpu, byDefault.Choice.NodeType.Kind);
        var cpu = Assert.IsType<Planned>(PlacementPlanner.Plan(tiny with { Constraints = new PlacementConstraints { AllowedGpuTypes = ["cpu-highmem-16"] } }));
        Assert.Equal(DeviceKind.Cpu, cpu.Choice.NodeType.Kind);
        Assert.Equal(0, cpu.Choice.Gpus);
    }

    [Fact]
    public void Does_accept_cpu_as_the_name_of_any_CPU_node_type_for_every_mode()
    {
        // examples/local run the tiny model with allowedGpuTypes [cpu]: quantize, QLoRA and serving.
        foreach (var mode in new[] { WorkloadMode.Quantize, WorkloadMode.Qlora, WorkloadMode.Inference })
        {
            var request = new PlanRequest
            {
                Model = ModelPresets.TinyLlama11B,
                Workload = new Workload { Mode = mode, Weights = WeightFormat.Parse(PlannerNames.DefaultWeights(mode)) },
                Constraints = new PlacementConstraints { AllowedGpuTypes = ["cpu"] },
            };
            var chosen = Assert.IsType<Planned>(PlacementPlanner.Plan(request)).Choice;
            Assert.Equal("cpu-highmem-16", chosen.NodeType.Name);
        }
        var vllm = new PlanRequest
        {
            Model = ModelPresets.TinyLlama11B,
            Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Bf16, Runtime = ServingRuntime.Vllm },
            Constraints = new PlacementConstraints { AllowedGpuTypes = ["cpu"] },
        };
        Assert.DoesNotContain(PlacementPlanner.Plan(vllm).Options, o => o.NodeType.Kind == DeviceKind.Cpu);
    }

    [Fact]
    public void Does_share_weight_reads_across_a_decode_batch()
    {
        var model = ModelPresets.Llama2_7B;
        var node = GpuCatalog.Default.Find("a100-80gb")!;
        var p = model.Parameters;
        var one = ThroughputModel.Estimate(model, p, new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Bf16, ContextLength = 1024, Concurrency = 1 }, node, 1, 3.85);
        var many = ThroughputModel.Estimate(model, p, new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Bf16, ContextLength = 1024, Concurrency = 16 }, node, 1, 3.85);
        // Batch 1: 13.5 GB of weights per token at 65% of 2039 GB/s = 10.2 ms, plus 13.5 GFLOP at 15% of 312 TFLOP/s
        // = 0.29 ms and the engine's graph-replay overhead (32 layers × 2.5 µs, fitted on an H200) ≈ 10.5 ms ≈ 95 tokens/s.
        Assert.InRange(one.TokensPerSecond, 88, 100);
        Assert.True(many.TokensPerSecond > 8 * one.TokensPerSecond);
        Assert.True(many.UsdPerMillionTokens < one.UsdPerMillionTokens / 8);
        Assert.Equal(3.85 / (one.TokensPerSecond * 3600) * 1e6, one.UsdPerMillionTokens, 9);
    }

    [Fact]
    public void Does_cap_the_lowbit_engines_packed_weight_reads_where_memory_is_faster_than_its_int4_kernel()
    {
        var model = ModelPresets.Llama2_7B;
        double Speed(string gpu, ServingRuntime runtime, string weights)
        {
            var w = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Parse(weights), ContextLength = 256, Runtime = runtime };
            return ThroughputModel.Estimate(model, model.Parameters, w, GpuCatalog.Default.Find(gpu)!, 1, 1).TokensPerSecond;
        }
        // H200: 4.8 TB/s × 65% = 3.1 TB/s, above the int4 GEMVs' 2.25 TB/s: going from the H100 (3.35 TB/s × 65% = 2.2,
        // about the cap) to the H200 speeds bf16 up by about the bandwidths' ratio but int4 hardly at all (its one-row
        // GEMVs are instruction-bound: docs/gpu.md, run 50). vLLM's Marlin kernels are taken at the bandwidth.
        var bf16Gain = Speed("h200-141gb", ServingRuntime.Lowbit, "bf16") / Speed("h100-80gb", ServingRuntime.Lowbit, "bf16");
        var int4Gain = Speed("h200-141gb", ServingRuntime.Lowbit, "int4") / Speed("h100-80gb", ServingRuntime.Lowbit, "int4");
        Assert.True(bf16Gain > 1.3 && int4Gain < 1.15, $"H200 over H100: bf16 {bf16Gain:F2}x, int4 {int4Gain:F2}x");
        var vllmGain = Speed("h200-141gb", ServingRuntime.Vllm, "int4") / Speed("h100-80gb", ServingRuntime.Vllm, "int4");
        Assert.True(vllmGain > int4Gain + 0.1, $"vLLM int4 H200 over H100 {vllmGain:F2}x vs lowbit int4 {int4Gain:F2}x");
        // RTX 3090: 936 GB/s × 65% = 0.61 TB/s, below the cap: int4 reads a third of the bytes, about 3× bf16's speed.
        var int4 = Speed("rtx-3090", ServingRuntime.Lowbit, "int4");
        var bf16 = Speed("rtx-3090", ServingRuntime.Lowbit, "bf16");
        Assert.True(int4 > 2.5 * bf16, $"RTX 3090 lowbit int4 {int4:F0} vs bf16 {bf16:F0} tokens/s");
    }

    [Fact]
    public void Does_read_fewer_expert_weights_per_step_at_batch_one_for_MoE()
    {
        var model = ModelPresets.Mixtral8x7B;
        var node = GpuCatalog.Default.Find("h100-80gb")!;
        // vLLM (CUDA graphs): the step is bound by the weight bytes it reads, not by per-layer launch overhead.
        var w = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Parse("int4"), ContextLength = 1024, Runtime = ServingRuntime.Vllm };
        var moe = ThroughputModel.Estimate(model, model.Parameters, w, node, 1, 4.29);
        var dense = ThroughputModel.Estimate(model with { Experts = 1, ExpertsPerToken = 1, IntermediateSize = 14336 * 8 }, (model with { Experts = 1, ExpertsPerToken = 1, IntermediateSize = 14336 * 8 }).Parameters, w, node, 1, 4.29);
        Assert.True(moe.TokensPerSecond > 2.5 * dense.TokensPerSecond, $"{moe.TokensPerSecond} vs {dense.TokensPerSecond}");
    }

    [Fact]
    public void Does_reject_invalid_workload_numbers_naming_the_field()
    {
        var request = Request(ModelPresets.Llama2_7B, "bf16") with { Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Bf16, Concurrency = 0 } };
        var ex = Assert.Throws<PlanInputException>(() => PlacementPlanner.Plan(request));
        Assert.Equal("batch", ex.Field);
    }

    [Fact]
    public void Does_parse_names_and_list_accepted_values_on_error()
    {
        Assert.Equal(WorkloadMode.LowbitFull, PlannerNames.ParseMode("lowbit-full"));
        Assert.Equal(ServingRuntime.LlamaCpp, PlannerNames.ParseRuntime("llamacpp"));
        var mode = Assert.Throws<PlanInputException>(() => PlannerNames.ParseMode("pretrain"));
        Assert.Contains("inference, quantize, lora, qlora, full, lowbit-full", mode.Message, StringComparison.Ordinal);
        var runtime = Assert.Throws<PlanInputException>(() => PlannerNames.ParseRuntime("tgi"));
        Assert.Contains("lowbit, vllm, llamacpp", runtime.Message, StringComparison.Ordinal);
        var model = Assert.Throws<PlanInputException>(() => ModelPresets.Get("gpt-5"));
        Assert.Contains("llama-2-70b", model.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_default_weights_and_optimizer_per_mode()
    {
        Assert.Equal("nf4", PlannerNames.DefaultWeights(WorkloadMode.Qlora));
        Assert.Equal("int8", PlannerNames.DefaultWeights(WorkloadMode.LowbitFull));
        Assert.Equal("int4", PlannerNames.DefaultWeights(WorkloadMode.Quantize));
        Assert.Equal("bf16", PlannerNames.DefaultWeights(WorkloadMode.Full));
        Assert.Equal(OptimizerKind.AdamW8Bit, new Workload { Mode = WorkloadMode.LowbitFull, Weights = WeightFormat.Parse("int8") }.EffectiveOptimizer);
        Assert.Equal(OptimizerKind.AdamW, new Workload { Mode = WorkloadMode.Full, Weights = WeightFormat.Bf16 }.EffectiveOptimizer);
    }

    [Fact]
    public void Does_estimate_training_throughput_from_flops_and_price_per_million_training_tokens()
    {
        var result = Assert.IsType<Planned>(PlacementPlanner.Plan(new PlanRequest
        {
            Model = ModelPresets.Llama2_7B,
            Workload = new Workload { Mode = WorkloadMode.Qlora, Weights = WeightFormat.Nf4, GradientCheckpointing = true },
            Constraints = new PlacementConstraints { AllowedGpuTypes = ["a100-80gb"] },
        }));
        var throughput = result.Choice.Throughput;
        Assert.Equal(ThroughputKind.Training, throughput.Kind);
        // Per micro-step of 2,048 tokens: 6 FLOPs per active parameter per token (LoRA 4 + recompute 2) plus causal
        // attention (2·T·hidden per layer, ×4 with the recompute) at the lowbit engine's 58% of 312 TFLOP/s, its host
        // cost (32 layers × 3.8 ms × 1.25 with checkpointing) and the QLoRA dequantization (3 passes × 2 bytes per
        // block-linear parameter at 5% of the A100's 2,039 GB/s).
        var p = result.Parameters;
        var compute = 2048 * ((6.0 * p.Active) + (2.0 * 2048 * 4096 * 32 * 4)) / (312e12 * 0.58);
        var seconds = compute + (32 * 3.8e-3 * 1.25) + (3 * p.ActiveBlockLinear * 2.0 / (2039e9 * 0.05));
        Assert.Equal(2048 / seconds, throughput.TokensPerSecond, 6);
        Assert.InRange(throughput.TokensPerSecond, 1_800, 2_200);   // ~2,000: two thirds of what 40% MFU alone claimed (3,086)
        Assert.Equal(3.85 / (throughput.TokensPerSecond * 3600) * 1e6, throughput.UsdPerMillionTokens, 9);
    }

    [Fact]
    public void Does_plan_multi_node_serving_only_for_vllm_and_never_training()
    {
        // A FineTuneJob is one pod and the engine has no multi-node trainer (TrainingSplitTests covers every mode).
        var training = PlacementPlanner.Plan(new PlanRequest
        {
            Model = ModelPresets.Llama2_13B,
            Workload = new Workload { Mode = WorkloadMode.Full, Weights = WeightFormat.Bf16, GradientCheckpointing = true },
        });
        Assert.All(training.Options, o => Assert.Equal(1, o.Nodes));
        var serving = PlacementPlanner.Plan(new PlanRequest
        {
            Model = ModelPresets.Llama2_13B,
            Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Bf16 },
        });
        Assert.All(serving.Options, o => Assert.Equal(1, o.Nodes));
        var vllm = PlacementPlanner.Plan(new PlanRequest
        {
            Model = ModelPresets.Llama2_13B,
            Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Bf16, Runtime = ServingRuntime.Vllm },
        });
        var vllmMultiNode = vllm.Options.Where(o => o.Nodes > 1).ToList();
        Assert.Equal(3 * GpuCatalog.Default.NodeTypes.Count(n => n.Interconnect == Interconnect.NvLink), vllmMultiNode.Count);
        Assert.All(vllmMultiNode, o => Assert.Equal((Interconnect.NvLink, o.NodeType.GpusPerNode, o.Nodes), (o.NodeType.Interconnect, o.GpusPerNode, o.PipelineStages)));
        // A 13B model fits one GPU: several nodes are never the choice.
        Assert.Equal(1, Assert.IsType<Planned>(vllm).Choice.Nodes);
    }

    [Fact]
    public void Does_size_a_lowbit_pipeline_split_by_its_heaviest_stage()
    {
        var model = ModelPresets.Llama2_70B;
        var w = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Parse("int4"), ContextLength = 4096, Concurrency = 8 };
        var p = model.Parameters;
        var two = MemoryEstimator.Estimate(model, w, 2, DeviceKind.Gpu, ByteSize.FromGiB(24), pipelineStages: 2);
        var one = MemoryEstimator.Estimate(model, w, 1, DeviceKind.Gpu, ByteSize.FromGiB(24));
        // Independently: 80 equal layers (weights + KV slab), the embedding on stage 0 and the head on stage 1.
        var embedding = (long)(p.Embedding * (double)w.Weights.EmbeddingBitsPerWeight / 8);
        var head = (long)(p.Head * (double)w.Weights.EmbeddingBitsPerWeight / 8);
        var layerWeights = (MemoryEstimator.WeightBytes(p, w.Weights).Bytes - embedding - head) / 80.0;
        var layerKv = one.KvCache.Bytes / 80.0;
        var stages = PipelineSplit.Balance(Enumerable.Repeat((long)(layerWeights + layerKv), 80).ToList(), embedding, head, 2);
        var heaviest = stages.MaxBy(s => s.Bytes)!;
        Assert.Equal(heaviest.LayerCount * layerKv, two.KvCache.Bytes, 0);
        Assert.Equal((heaviest.LayerCount * layerWeights) + (heaviest.HoldsEmbedding ? embedding : 0) + (heaviest.HoldsHead ? head : 0), two.Weights.Bytes, 0);
        // Half the model and a little more (the larger end), never less than half.
        Assert.InRange((two.Weights + two.KvCache).Bytes / (double)(one.Weights + one.KvCache).Bytes, 0.5, 0.55);
        // No tensor-parallel narrowing of the activations: each stage runs whole layers.
        Assert.Equal(one.Activations, two.Activations);

        var node = GpuCatalog.Default.Find("l4")!;
        var b1 = w with { Concurrency = 1 };
        var single = ThroughputModel.Estimate(model, p, b1, node, 1, 1);
        var split = ThroughputModel.Estimate(model, p, b1, node, 2, 1, pipelineStages: 2);
        // Stages run one after the other at batch 1: no bandwidth speed-up, one boundary more.
        Assert.Equal((1 / single.TokensPerSecond) + ThroughputModel.PipelineBoundary(acrossNodes: false), 1 / split.TokensPerSecond, 9);
    }

    private static PlanRequest Vllm405B(params string[] allowed) => new()
    {
        Model = ModelPresets.Llama31_405B,
        Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Bf16, Runtime = ServingRuntime.Vllm, ContextLength = 4096, Concurrency = 8 },
        Constraints = new PlacementConstraints { AllowedGpuTypes = allowed },
    };

    [Fact]
    public void Does_serve_a_model_larger_than_one_node_with_vllm_over_two_nodes_of_eight_gpus()
    {
        var planned = Assert.IsType<Planned>(PlacementPlanner.Plan(Vllm405B("a100-80gb", "h100-80gb")));
        var choice = planned.Choice;
        // 810 GB of bf16 weights: 8× A100-80GB hold 590 GB at 90% (short); 2 nodes × 8 hold 1,180 GB.
        Assert.Equal("2 nodes × 8× A100-80GB", choice.Label);
        Assert.Equal((8, 2, 2, 8), (choice.GpusPerNode, choice.Nodes, choice.PipelineStages, choice.TensorParallel));
        Assert.Equal(16 * 3.85, choice.HourlyUsd, 6);
        var oneNode = (DoesNotFit)planned.Options.Single(o => o.NodeType.Name == "a100-80gb" && o.Gpus == 8 && o.Nodes == 1);
        Assert.Equal(RejectionReason.InsufficientMemory, oneNode.Reason);
        Assert.Contains("2 nodes × 8× A100-80GB at $61.60/h", planned.Summary, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_divide_weights_and_kv_by_all_gpus_but_widths_by_the_tensor_parallel_size_over_nodes()
    {
        var request = Vllm405B("a100-80gb");
        var w = request.Workload;
        var model = request.Model;
        var sixteen = MemoryEstimator.Estimate(model, w, 16, DeviceKind.Gpu, ByteSize.FromGiB(80), pipelineStages: 2);
        var tensor16 = MemoryEstimator.Estimate(model, w, 16, DeviceKind.Gpu, ByteSize.FromGiB(80));
        var eight = MemoryEstimator.Estimate(model, w, 8, DeviceKind.Gpu, ByteSize.FromGiB(80));
        Assert.Equal(MemoryEstimator.WeightBytes(model.Parameters, w.Weights).Bytes / 16.0, sixteen.Weights.Bytes, 0);
        // KV heads over the 8 tensor-parallel shards (one each), layers over the 2 stages: half the 8-GPU cache.
        Assert.Equal(eight.KvCache.Bytes / 2.0, sixteen.KvCache.Bytes, 0);
        // 16-way tensor parallelism would replicate the 8 KV heads: no saving on the cache.
        Assert.Equal(eight.KvCache, tensor16.KvCache);
        // The activation widths are those of 8 shards, not 16.
        Assert.Equal(eight.Activations, sixteen.Activations);
    }

    [Fact]
    public void Does_apply_the_heads_rule_to_the_tensor_parallel_size_only()
    {
        // 12 attention heads and 12 KV heads: 8 shards do not divide them, so no 8-GPU node serves this model, and
        // the multi-node options (tensor parallel 8 over 2-8 nodes) fail the same rule.
        var odd = ModelPresets.Llama2_7B with { Name = "odd", AttentionHeads = 12, KvHeads = 12, HeadDim = 4096 / 12 };
        var result = PlacementPlanner.Plan(new PlanRequest
        {
            Model = odd,
            Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Bf16, Runtime = ServingRuntime.Vllm },
            Constraints = new PlacementConstraints { AllowedGpuTypes = ["a100-80gb"] },
        });
        Assert.All(result.Options.Where(o => o.Nodes > 1 && o.NodeType.Name == "a100-80gb"), o => Assert.Equal(RejectionReason.ShardsDoNotDivideHeads, Assert.IsType<DoesNotFit>(o).Reason));
        var nodesOfTwo = CatalogJson.Parse("""{ "replaceDefaults": true, "nodeTypes": [ { "name": "a100-80gb", "gpusPerNode": 2 } ] }""");
        var small = PlacementPlanner.Plan(new PlanRequest
        {
            Model = odd,
            Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Bf16, Runtime = ServingRuntime.Vllm },
            Catalog = nodesOfTwo,
        });
        // Tensor parallel 2 divides 12 heads: 8 nodes × 2 GPUs is a valid shape although 16 does not divide 12.
        var eightNodes = small.Options.Single(o => o.Nodes == 8);
        Assert.NotEqual(RejectionReason.ShardsDoNotDivideHeads, (eightNodes as DoesNotFit)?.Reason);
        Assert.Equal(2, eightNodes.TensorParallel);
    }

    [Fact]
    public void Does_price_a_pipeline_over_nodes_at_no_batch_one_speed_up_plus_the_boundaries()
    {
        var request = Vllm405B("a100-80gb");
        var w = request.Workload with { Concurrency = 1 };
        var model = request.Model;
        var node = GpuCatalog.Default.Find("a100-80gb")!;
        var p = model.Parameters;
        var eight = ThroughputModel.Estimate(model, p, w, node, 8, 1);
        var twoNodes = ThroughputModel.Estimate(model, p, w, node, 16, 1, pipelineStages: 2, nodes: 2);
        // The same tensor-parallel shard's reads per step; one inter-node boundary on top.
        Assert.Equal((1 / eight.TokensPerSecond) + ThroughputModel.PipelineBoundary(acrossNodes: true), 1 / twoNodes.TokensPerSecond, 9);
    }
}
