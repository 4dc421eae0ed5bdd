using Lowbit.Engine.Protocol;

namespace Lowbit.Planner.Tests;

public sealed class MemoryEstimatorTests
{
    private static Workload Serve(string weights, int context = 4096, int batch = 1) => new()
    {
        Mode = WorkloadMode.Inference,
        Weights = WeightFormat.Parse(weights),
        ContextLength = context,
        Concurrency = batch,
    };

    [Fact]
    public void Does_size_the_KV_cache_as_2_x_layers_x_kv_heads_x_head_dim_x_bytes_x_tokens()
    {
        var m = MemoryEstimator.Estimate(ModelPresets.Llama2_70B, Serve("int4", context: 4096, batch: 8));
        Assert.Equal(2L * 80 * 8 * 128 * 2 * 4096 * 8, m.KvCache.Bytes);
    }

    [Fact]
    public void Does_halve_the_KV_cache_with_an_8_bit_cache()
    {
        var fp16 = MemoryEstimator.Estimate(ModelPresets.Llama3_8B, Serve("bf16", 8192, 4));
        var fp8 = MemoryEstimator.Estimate(ModelPresets.Llama3_8B, Serve("bf16", 8192, 4) with { KvCache = KvCacheFormat.Fp8 });
        Assert.Equal(fp16.KvCache.Bytes / 2, fp8.KvCache.Bytes);
    }

    [Fact]
    public void Does_split_weights_and_kv_heads_across_tensor_parallel_shards()
    {
        var one = MemoryEstimator.Estimate(ModelPresets.Llama2_70B, Serve("bf16"), devices: 1);
        var four = MemoryEstimator.Estimate(ModelPresets.Llama2_70B, Serve("bf16"), devices: 4);
        Assert.Equal(one.Weights.Bytes / 4.0, four.Weights.Bytes, 0);
        Assert.Equal(one.KvCache.Bytes / 4, four.KvCache.Bytes);
    }

    [Fact]
    public void Does_replicate_the_single_KV_head_of_multi_query_models_on_every_shard()
    {
        var one = MemoryEstimator.Estimate(ModelPresets.StarCoder, Serve("bf16", 8192), devices: 1);
        var four = MemoryEstimator.Estimate(ModelPresets.StarCoder, Serve("bf16", 8192), devices: 4);
        Assert.Equal(one.KvCache, four.KvCache);
        Assert.Equal(2L * 40 * 1 * 128 * 2 * 8192, one.KvCache.Bytes);
    }

    [Fact]
    public void Does_let_vllm_fill_only_its_gpu_memory_utilization()
    {
        var vllm = Serve("bf16") with { Runtime = ServingRuntime.Vllm };
        Assert.Equal(0.90, MemoryEstimator.UsableFraction(vllm, DeviceKind.Gpu));
        Assert.Equal(0.95, MemoryEstimator.UsableFraction(Serve("bf16"), DeviceKind.Gpu));
        Assert.Equal(0.95, MemoryEstimator.UsableFraction(Serve("bf16") with { Runtime = ServingRuntime.LlamaCpp }, DeviceKind.Gpu));
    }

    [Fact]
    public void Does_grow_activations_with_the_prefill_chunk_of_the_runtime()
    {
        var lowbit = MemoryEstimator.Estimate(ModelPresets.Llama2_7B, Serve("bf16", 4096, 4));
        var lowbitSmall = MemoryEstimator.Estimate(ModelPresets.Llama2_7B, Serve("bf16", 4096, 4) with { PrefillChunk = 256 });
        // vLLM on a GPU of 70 GiB or more prefills 8,192 tokens per step; lowbit-engine serve 2,048 on any GPU.
        var vllm = MemoryEstimator.Estimate(ModelPresets.Llama2_7B, Serve("bf16", 4096, 4) with { Runtime = ServingRuntime.Vllm }, 1, DeviceKind.Gpu, ByteSize.FromGiB(80));
        Assert.Equal(2048, MemoryEstimator.PrefillTokens(Serve("bf16", 4096, 4)));
        Assert.Equal(512, MemoryEstimator.PrefillTokens(Serve("bf16", 4096, 4), default, DeviceKind.Cpu));
        Assert.True(lowbit.Activations > lowbitSmall.Activations);
        Assert.True(vllm.Activations > lowbit.Activations);
    }

    [Fact]
    public void Does_charge_16_bytes_per_parameter_for_AdamW_mixed_precision_and_10_for_8_bit_Adam()
    {
        var model = ModelPresets.Llama2_7B;
        var full = new Workload { Mode = WorkloadMode.Full, Weights = WeightFormat.Bf16 };
        var m = MemoryEstimator.Estimate(model, full);
        var states = (m.Weights + m.Gradients + m.Optimizer).Bytes / (double)model.Parameters.Total;
        Assert.Equal(16.0, states, 3);
        var adam8 = MemoryEstimator.Estimate(model, full with { Optimizer = OptimizerKind.AdamW8Bit });
        Assert.Equal(10.0, (adam8.Weights + adam8.Gradients + adam8.Optimizer).Bytes / (double)model.Parameters.Total, 3);
    }

    [Fact]
    public void Does_shrink_activations_with_gradient_checkpointing_and_grow_them_with_seq_and_micro_batch()
    {
        var model = ModelPresets.Llama2_7B;
        var lora = new Workload { Mode = WorkloadMode.Lora, Weights = WeightFormat.Bf16, SequenceLength = 2048, Runtime = ServingRuntime.Transformers };
        var plain = MemoryEstimator.Estimate(model, lora).Activations;
        var checkpointed = MemoryEstimator.Estimate(model, lora with { GradientCheckpointing = true }).Activations;
        var longer = MemoryEstimator.Estimate(model, lora with { SequenceLength = 4096 }).Activations;
        var bigger = MemoryEstimator.Estimate(model, lora with { MicroBatch = 4 }).Activations;
        Assert.True(checkpointed.GiB < plain.GiB / 4, $"checkpointed {checkpointed} vs {plain}");
        Assert.Equal(plain.Bytes * 2.0, longer.Bytes, plain.Bytes * 0.001);
        Assert.Equal(plain.Bytes * 4.0, bigger.Bytes, plain.Bytes * 0.001);
    }

    [Fact]
    public void Does_size_our_engines_fine_tune_without_whole_logits_and_with_its_own_saved_activations()
    {
        var model = ModelPresets.Llama2_7B;
        var ours = new Workload { Mode = WorkloadMode.Lora, Weights = WeightFormat.Bf16, SequenceLength = 2048, Runtime = ServingRuntime.Lowbit };
        var peft = ours with { Runtime = ServingRuntime.Transformers };
        var plain = MemoryEstimator.Estimate(model, ours).Activations;
        // 32 layers × 2,048 tokens × (34 × 4,096 + 8 × 11,008) B, the loss chunk and the float32 head-input gradient.
        var expected = (32.0 * 2048 * ((34 * 4096) + (8 * 11008))) + MemoryEstimator.LowbitLossChunkBytes + (2048.0 * 4096 * 4);
        Assert.Equal(expected, plain.Bytes, expected * 1e-9);
        // PEFT keeps the whole logits in float32 (14 B per token per vocabulary entry) and a float32 copy per adapted input.
        var peftActivations = MemoryEstimator.Estimate(model, peft).Activations;
        Assert.True((peftActivations - plain).Bytes > 2048.0 * 32000 * 14, $"{peftActivations} vs {plain}");
        // Checkpointing keeps each layer's 16-bit input and 1.8 layers' worth during the backward.
        var checkpointed = MemoryEstimator.Estimate(model, ours with { GradientCheckpointing = true }).Activations;
        var layer = 2048.0 * ((34 * 4096) + (8 * 11008));
        var expectedCheckpointed = (32.0 * 2048 * 4096 * 2) + (1.8 * layer) + MemoryEstimator.LowbitLossChunkBytes + (2048.0 * 4096 * 4);
        Assert.Equal(expectedCheckpointed, checkpointed.Bytes, expectedCheckpointed * 1e-9);
    }

    [Fact]
    public void Does_keep_only_adapters_trainable_in_LoRA()
    {
        var model = ModelPresets.Llama2_7B;
        var m = MemoryEstimator.Estimate(model, new Workload { Mode = WorkloadMode.Lora, Weights = WeightFormat.Bf16, LoraRank = 16 });
        var adapters = 16L * model.Parameters.LoraParametersPerRank;
        Assert.Equal(adapters * 4, m.Gradients.Bytes);
        Assert.Equal(adapters * 8, m.Optimizer.Bytes);
    }

    [Fact]
    public void Does_reject_a_quantized_base_for_LoRA_and_full_fine_tuning()
    {
        var lora = Assert.Throws<PlanInputException>(() => MemoryEstimator.Estimate(ModelPresets.Llama2_7B, new Workload { Mode = WorkloadMode.Lora, Weights = WeightFormat.Nf4 }));
        Assert.Contains("qlora", lora.Message, StringComparison.Ordinal);
        var full = Assert.Throws<PlanInputException>(() => MemoryEstimator.Estimate(ModelPresets.Llama2_7B, new Workload { Mode = WorkloadMode.Full, Weights = WeightFormat.Parse("int4") }));
        Assert.Contains("lowbit-full", full.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_size_quantization_as_one_16_bit_layer_plus_output_plus_calibration()
    {
        var model = ModelPresets.Llama2_70B;
        var rtn = new Workload { Mode = WorkloadMode.Quantize, Weights = WeightFormat.Parse("int4"), CalibrationSamples = 0 };
        var m = MemoryEstimator.Estimate(model, rtn);
        var expectedWeights = MemoryEstimator.WeightBytes(model.Parameters, rtn.Weights).Bytes + (model.Parameters.LinearPerLayer * 2);
        Assert.Equal(expectedWeights, m.Weights.Bytes);
        Assert.Equal(0, m.Activations.Bytes);
        var gptq = MemoryEstimator.Estimate(model, rtn with { CalibrationSamples = 128 });
        Assert.True(gptq.Activations.GiB > 8, gptq.Activations.ToString());
        Assert.True(m.Total.GiB < 45, "quantizing 70B to int4 must not need the 16-bit model: " + m.Total);
    }

    [Fact]
    public void Does_save_attention_scores_for_backward_only_with_eager_attention()
    {
        var lora = new Workload { Mode = WorkloadMode.Lora, Weights = WeightFormat.Bf16, SequenceLength = 2048, Runtime = ServingRuntime.Transformers };
        var sdpa = MemoryEstimator.Estimate(ModelPresets.Llama2_7B, lora).Activations;
        var eager = MemoryEstimator.Estimate(ModelPresets.Llama2_7B, lora with { Attention = AttentionKind.Eager }).Activations;
        // 32 layers × 32 heads × 2048² scores × 6 B (fp32 softmax + its 16-bit cast) + the 16-bit causal mask.
        var scores = (32.0 * 32 * 2048 * 2048 * 6) + (2048.0 * 2048 * 2);
        Assert.Equal(scores, (eager - sdpa).Bytes, scores * 1e-6);
    }

    [Fact]
    public void Does_keep_only_the_fp32_copies_of_adapted_inputs_for_a_frozen_base()
    {
        var lora = new Workload { Mode = WorkloadMode.Lora, Weights = WeightFormat.Bf16, SequenceLength = 1024, LoraTargets = LoraTargets.QV, Runtime = ServingRuntime.Transformers };
        var qv = MemoryEstimator.Estimate(ModelPresets.Llama2_7B, lora);
        var all = MemoryEstimator.Estimate(ModelPresets.Llama2_7B, lora with { LoraTargets = LoraTargets.All });
        // q, k, v, gate, up read the hidden state, o the attention output, down the intermediate: 4 B each per token per layer.
        var extra = 1024.0 * 32 * 4 * ((5 * 4096) + 4096 + 11008 - (2 * 4096));
        Assert.Equal(extra, (all.Activations - qv.Activations).Bytes, extra * 1e-6);
        Assert.Equal(16L * 32 * 2 * (4096 + 4096) * 4, qv.Gradients.Bytes);
    }

    [Fact]
    public void Does_give_vllm_what_its_pool_leaves_after_weights_activations_and_buffers()
    {
        var w = Serve("bf16", context: 8192, batch: 16) with { Runtime = ServingRuntime.Vllm };
        var h100 = ByteSize.FromGiB(79.22);
        var need = MemoryEstimator.Estimate(ModelPresets.Llama3_8B, w, 1, DeviceKind.Gpu, h100);
        var tokens = MemoryEstimator.VllmKvCapacityTokens(ModelPresets.Llama3_8B, w, h100);
        var perToken = MemoryEstimator.KvBytesPerToken(ModelPresets.Llama3_8B, KvCacheFormat.Fp16).Bytes;
        Assert.Equal((long)(((h100 * 0.9) - (need.Total - need.KvCache)).Bytes / perToken), tokens);
        // vLLM logs about 53 GiB of KV for this model on an H100 (vllm-project/vllm#10511): ~436k tokens.
        Assert.InRange(tokens, 400_000, 450_000);
    }

    [Fact]
    public void Does_leave_llamacpp_token_embeddings_in_host_memory()
    {
        var w = Serve("gguf-q4_k_m") with { Runtime = ServingRuntime.LlamaCpp };
        var gpu = MemoryEstimator.Estimate(ModelPresets.Llama3_8B, w, 1, DeviceKind.Gpu);
        var cpu = MemoryEstimator.Estimate(ModelPresets.Llama3_8B, w, 1, DeviceKind.Cpu);
        Assert.InRange((cpu.Weights - gpu.Weights).Bytes, (128256.0 * 4096 * 4.84 / 8) - 2, (128256.0 * 4096 * 4.84 / 8) + 2);
    }
}
