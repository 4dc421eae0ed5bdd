using Lowbit.Engine.Protocol;

namespace Lowbit.Planner.Tests;

/// <summary>
/// Training on several GPUs of one pod is our engine's <c>finetune --shards N</c>: a pipeline split of the layers
/// (<see cref="PipelineSplit.Balance"/> over per-layer training bytes), the GPUs working one after another. The expected
/// figures here are computed from the model's dimensions, not from the estimator's own parts.
/// </summary>
public sealed class TrainingSplitTests
{
    private static readonly Workload Lora70B = new()
    {
        Mode = WorkloadMode.Lora, Weights = WeightFormat.Bf16, SequenceLength = 2048, MicroBatch = 1, GradientCheckpointing = true,
    };

    private static void Near(double expected, ByteSize actual) => Assert.Equal(expected, actual.Bytes, (expected * 1e-9) + 1);

    [Fact]
    public void Does_place_a_70B_LoRA_on_one_node_of_several_GPUs_sized_by_its_heaviest_pipeline_stage()
    {
        var model = ModelPresets.Llama2_70B;
        var result = PlacementPlanner.Plan(new PlanRequest { Model = model, Workload = Lora70B });

        var choice = Assert.IsType<Planned>(result).Choice;
        Assert.True(choice.Gpus > 1 && choice.Nodes == 1, choice.Label);
        Assert.Equal((choice.Gpus, 1), (choice.PipelineStages, choice.TensorParallel));
        Assert.Contains($"(pipeline split over {choice.Gpus} GPUs)", result.Summary, StringComparison.Ordinal);
        // 138 GiB of bf16 weights: no single GPU of the catalog holds them.
        Assert.All(result.Options.Where(o => o.Gpus == 1), o => Assert.Equal(RejectionReason.InsufficientMemory, Assert.IsType<DoesNotFit>(o).Reason));

        // Independently, the engine's split (finetune --shards: TrainingShards.Plan): 80 equal layers, each its bf16
        // weights and its rank-16 adapters on all seven projections (fp32 value, fp32 gradient, two fp32 AdamW moments);
        // the bf16 embedding on stage 0, the bf16 head on the last. Then each stage's memory: its layers' checkpointed
        // 16-bit inputs, the 1.8 layers its backward recomputes (34 × hidden + 8 × intermediate per token), and on the
        // last the chunked loss (one 112 MiB vocabulary chunk + the fp32 head-input gradient). Per GPU: the largest.
        double h = 8192, i = 28672, kv = 1024, vocab = 32000, tokens = 2048;
        var adapters = 16 * ((h + h) + (2 * (h + kv)) + (h + h) + (2 * (h + i)) + (i + h));
        var end = vocab * h * 2;
        var layerWeights = ((model.Parameters.Total - (2 * vocab * h)) * 2.0) / 80;
        var saved = tokens * h * 2;
        var recomputed = 1.8 * tokens * ((34 * h) + (8 * i));
        var loss = (112.0 * (1 << 20)) + (tokens * h * 4);
        var split = PipelineSplit.Balance(Enumerable.Repeat((long)(layerWeights + (adapters * 16)), 80).ToList(), (long)end, (long)end, choice.Gpus);
        double Need(PipelineStage s) => (s.LayerCount * (layerWeights + (adapters * 16) + saved)) + recomputed
                                        + (s.HoldsEmbedding ? end : 0) + (s.HoldsHead ? end + loss : 0);
        var heaviest = split.MaxBy(Need)!;
        var k = heaviest.LayerCount;
        var perGpu = choice.PerDevice;
        Near((k * layerWeights) + (k * adapters * 4) + (heaviest.HoldsEmbedding ? end : 0) + (heaviest.HoldsHead ? end : 0), perGpu.Weights);
        Near(k * adapters * 8, perGpu.Optimizer);
        Near(k * adapters * 4, perGpu.Gradients);
        Near((k * saved) + recomputed + (heaviest.HoldsHead ? loss : 0), perGpu.Activations);
        Assert.Equal(MemoryEstimator.TorchTrainingContext, perGpu.Context);
        Assert.True(perGpu.Total <= choice.UsablePerDevice, $"{perGpu.Total} of {choice.UsablePerDevice}");
        // Nothing is sharded (no FSDP all-gather buffer): the stages together hold the one-GPU weights, no less.
        Assert.InRange(perGpu.Weights.Bytes * (double)choice.Gpus / result.Total.Weights.Bytes, 1.0, 1.1);
    }

    [Fact]
    public void Does_keep_a_full_fine_tunes_embedding_state_on_the_first_stage_and_its_head_and_loss_on_the_last()
    {
        var model = ModelPresets.Llama2_13B;
        var w = new Workload { Mode = WorkloadMode.Full, Weights = WeightFormat.Bf16, SequenceLength = 2048, MicroBatch = 1, GradientCheckpointing = true };

        var eight = MemoryEstimator.Estimate(model, w, 8, DeviceKind.Gpu, ByteSize.FromGiB(80), pipelineStages: 8);

        // Independently: every parameter 2 B of bf16 weight, 2 B of gradient, 12 B of fp32 master and AdamW moments,
        // split as the engine splits it (the embedding's and head's state at the ends). Each stage then keeps its layers'
        // 16-bit inputs, 1.5 recomputed layers of PEFT-shaped autograd (2 RMSNorms × 8 × hidden + 10 × q width + 8 ×
        // intermediate per token), and on the last the loss (14 B per token per vocabulary entry + 8 × hidden).
        double h = 5120, i = 13824, vocab = 32000, tokens = 2048;
        var layerParameters = (model.Parameters.Total - (2 * vocab * h)) / 40.0;
        var end = vocab * h * 16;
        var loss = (tokens * vocab * 14) + (tokens * h * 8);
        var saved = tokens * h * 2;
        var recomputed = 1.5 * tokens * ((2 * 8 * h) + (10 * h) + (8 * i));
        var split = PipelineSplit.Balance(Enumerable.Repeat((long)(layerParameters * 16), 40).ToList(), (long)end, (long)end, 8);
        double Need(PipelineStage s) => (s.LayerCount * ((layerParameters * 16) + saved)) + recomputed + (s.HoldsEmbedding ? end : 0) + (s.HoldsHead ? end + loss : 0);
        var heaviest = split.MaxBy(Need)!;
        var parameters = (heaviest.LayerCount * layerParameters) + (heaviest.HoldsEmbedding ? vocab * h : 0) + (heaviest.HoldsHead ? vocab * h : 0);
        Near(parameters * 2, eight.Weights);
        Near(parameters * 2, eight.Gradients);
        Near(parameters * 12, eight.Optimizer);
        Near((heaviest.LayerCount * saved) + recomputed + (heaviest.HoldsHead ? loss : 0), eight.Activations);
        // Training has no tensor parallelism: any other stage count is a caller's mistake.
        Assert.Throws<ArgumentOutOfRangeException>(() => MemoryEstimator.Estimate(model, w, 8, DeviceKind.Gpu, ByteSize.FromGiB(80), pipelineStages: 2));
        Assert.Equal(eight, MemoryEstimator.Estimate(model, w, 8, DeviceKind.Gpu, ByteSize.FromGiB(80)));
    }

    [Fact]
    public void Does_keep_a_tied_head_and_its_loss_with_the_embedding_on_the_first_stage()
    {
        // The engine leaves a tied head with the embedding on stage 0 and computes the logits there; the last stage
        // holds no copy of it. A 256k vocabulary makes the embedding weigh about five layers, so where it sits moves the split.
        var model = ModelPresets.Llama2_7B with { TiedEmbeddings = true, VocabSize = 256000 };
        var w = Lora70B with { LoraTargets = LoraTargets.QV };

        var four = MemoryEstimator.Estimate(model, w, 4, DeviceKind.Gpu, ByteSize.FromGiB(24));

        double h = 4096, i = 11008, vocab = 256000, tokens = 2048;
        var adapters = 16 * ((h + h) + (h + h));
        var embedding = vocab * h * 2;
        var layerWeights = ((model.Parameters.Total - (vocab * h)) * 2.0) / 32;
        var saved = tokens * h * 2;
        var recomputed = 1.8 * tokens * ((34 * h) + (8 * i));
        var loss = (112.0 * (1 << 20)) + (tokens * h * 4);
        var split = PipelineSplit.Balance(Enumerable.Repeat((long)(layerWeights + (adapters * 16)), 32).ToList(), (long)embedding, 0, 4);
        double Need(PipelineStage s) => (s.LayerCount * (layerWeights + (adapters * 16) + saved)) + recomputed + (s.HoldsEmbedding ? embedding + loss : 0);
        var heaviest = split.MaxBy(Need)!;
        var k = heaviest.LayerCount;
        Near((k * layerWeights) + (k * adapters * 4) + (heaviest.HoldsEmbedding ? embedding : 0), four.Weights);
        Near((k * saved) + recomputed + (heaviest.HoldsEmbedding ? loss : 0), four.Activations);
        // The first stage carries the embedding, so it takes fewer layers than the last, which has nothing at its end.
        Assert.True(split[0].LayerCount < split[^1].LayerCount, string.Join(",", split.Select(s => s.LayerCount)));
    }

    [Fact]
    public void Does_give_training_on_several_GPUs_no_speed_up_and_two_boundary_crossings_per_micro_step()
    {
        var model = ModelPresets.Llama2_70B;
        var p = model.Parameters;
        var node = GpuCatalog.Default.Find("h100-80gb")!;
        foreach (var w in new[] { Lora70B, Lora70B with { Mode = WorkloadMode.Qlora, Weights = WeightFormat.Nf4 } })
        {
            var one = ThroughputModel.Estimate(model, p, w, node, 1, node.UsdPerHour);
            var four = ThroughputModel.Estimate(model, p, w, node, 4, node.UsdPerHour * 4, pipelineStages: 4);
            // The stages run one after another: one GPU's step, plus the hidden states forward and their gradient
            // backward over each of the 3 boundaries.
            Assert.Equal((2048 / one.TokensPerSecond) + (6 * ThroughputModel.PipelineBoundary(acrossNodes: false)), 2048 / four.TokensPerSecond, 9);
            // Four GPUs at four times the price: four times the cost per training token, and a little more.
            Assert.InRange(four.UsdPerMillionTokens / one.UsdPerMillionTokens, 4.0, 4.01);
        }
    }

    [Theory]
    [InlineData(WorkloadMode.Lora, "bf16")]
    [InlineData(WorkloadMode.Qlora, "nf4")]
    [InlineData(WorkloadMode.Full, "bf16")]
    [InlineData(WorkloadMode.LowbitFull, "int8")]
    public void Does_offer_no_multi_node_option_for_training(WorkloadMode mode, string weights)
    {
        foreach (var model in new[] { ModelPresets.Llama2_70B, ModelPresets.Llama31_405B })
        {
            var result = PlacementPlanner.Plan(new PlanRequest
            {
                Model = model,
                Workload = new Workload { Mode = mode, Weights = WeightFormat.Parse(weights), SequenceLength = 2048, GradientCheckpointing = true },
            });
            Assert.All(result.Options, o => Assert.Equal(1, o.Nodes));
            // Every GPU option is the engine's pipeline split over the pod's GPUs.
            Assert.All(result.Options.Where(o => o.Gpus > 0), o => Assert.Equal((o.Gpus, 1), (o.PipelineStages, o.TensorParallel)));
        }
    }
}
