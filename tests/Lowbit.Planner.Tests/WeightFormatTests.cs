using Lowbit.Engine.Protocol;

namespace Lowbit.Planner.Tests;

public sealed class WeightFormatTests
{
    [Theory]
    [InlineData("fp32", 32.0)]
    [InlineData("bf16", 16.0)]
    [InlineData("fp16", 16.0)]
    [InlineData("fp8", 8.0)]
    [InlineData("int8", 8.0)]
    [InlineData("int4", 4.25)]      // 4 + (16 + 16) / 128
    [InlineData("int3", 3.25)]
    [InlineData("int2", 2.25)]
    [InlineData("gguf-q8_0", 8.5)]  // 34 bytes / 32 weights
    [InlineData("gguf-q6_k", 6.5625)] // 210 bytes / 256 weights
    [InlineData("gguf-q5_k_m", 5.68)]
    [InlineData("gguf-q4_k_m", 4.84)]
    [InlineData("gguf-q4_0", 4.5)]  // 18 bytes / 32 weights
    [InlineData("gguf-q3_k_m", 3.91)]
    [InlineData("gguf-q2_k", 3.35)]
    [InlineData("bpw-2.5", 2.5)]
    [InlineData("BPW-2.65", 2.65)]
    public void Does_store_block_linears_at_the_format_bits(string name, double bits)
    {
        Assert.Equal(bits, WeightFormat.Parse(name).LinearBitsPerWeight, 6);
    }

    [Fact]
    public void Does_count_nf4_double_quantization_overhead()
    {
        // 4 bits + 8-bit absmax per 64 + fp32 absmax per 256 blocks.
        Assert.Equal(4.127, WeightFormat.Nf4.LinearBitsPerWeight, 3);
    }

    [Theory]
    [InlineData(32, 5.0)]
    [InlineData(64, 4.5)]
    [InlineData(1024, 4.03125)]
    public void Does_charge_scale_and_zero_per_group(int group, double bits)
    {
        var format = WeightFormat.Parse("int4", group);
        Assert.Equal(bits, format.LinearBitsPerWeight, 6);
        Assert.Equal(group, format.GroupSize);
    }

    [Fact]
    public void Does_keep_embeddings_at_16_bit_for_integer_formats_but_not_for_gguf()
    {
        Assert.Equal(16, WeightFormat.Parse("int4").EmbeddingBitsPerWeight);
        Assert.Equal(16, WeightFormat.Parse("nf4").EmbeddingBitsPerWeight);
        Assert.Equal(16, WeightFormat.Parse("fp8").EmbeddingBitsPerWeight);
        Assert.Equal(4.84, WeightFormat.Parse("gguf-q4_k_m").EmbeddingBitsPerWeight);
        Assert.Equal(2.5, WeightFormat.Parse("bpw-2.5").EmbeddingBitsPerWeight);
    }

    [Fact]
    public void Does_charge_int8_per_channel_one_fp16_scale_per_output_row()
    {
        var p = ModelPresets.Llama2_7B.Parameters;
        var int8 = MemoryEstimator.WeightBytes(p, WeightFormat.Parse("int8")).Bytes;
        var expected = p.BlockLinear + (p.BlockLinearRows * 2) + ((p.Embedding + p.Head + p.Other) * 2);
        Assert.Equal(expected, int8);
    }

    [Fact]
    public void Does_store_an_untied_quantized_head_at_the_linear_bits_instead_of_16()
    {
        var p = ModelPresets.Llama2_7B.Parameters;
        var int4 = WeightFormat.Parse("int4", 64);
        var quantizedHead = int4.WithQuantizedHead();

        var saved = MemoryEstimator.WeightBytes(p, int4).Bytes - MemoryEstimator.WeightBytes(p, quantizedHead).Bytes;

        Assert.Equal(16, int4.HeadBitsPerWeight);
        Assert.Equal(4.5, quantizedHead.HeadBitsPerWeight, 6);
        Assert.Equal(16, quantizedHead.EmbeddingBitsPerWeight);
        Assert.EndsWith("embeddings 16-bit; head quantized too (4.5 bpw)", quantizedHead.Description, StringComparison.Ordinal);
        // lm_head 32,000 × 4,096: 262 MB at 16 bits, 74 MB at 4 + 32/64 bits.
        Assert.Equal(32000L * 4096 * (16 - 4.5) / 8, saved, 0);
    }

    [Fact]
    public void Does_leave_a_tied_head_at_the_embedding_width_when_the_head_is_quantized()
    {
        var gemma = ModelPresets.Gemma2B;
        var int4 = WeightFormat.Parse("int4", 64);
        Workload Serve(WeightFormat weights) => new()
        {
            Mode = WorkloadMode.Inference,
            Weights = weights,
            ContextLength = 4096,
            Concurrency = 1,
            Runtime = ServingRuntime.Lowbit,
        };

        // The pipeline split puts a copy of a tied embedding on the last stage as its head: still 16-bit.
        var plain = MemoryEstimator.Estimate(gemma, Serve(int4), devices: 2, pipelineStages: 2);
        var headQuantized = MemoryEstimator.Estimate(gemma, Serve(int4.WithQuantizedHead()), devices: 2, pipelineStages: 2);

        Assert.True(gemma.TiedEmbeddings);
        Assert.Equal(MemoryEstimator.WeightBytes(gemma.Parameters, int4), MemoryEstimator.WeightBytes(gemma.Parameters, int4.WithQuantizedHead()));
        Assert.Equal(plain.Weights, headQuantized.Weights);
    }

    [Fact]
    public void Does_size_Llama2_7B_Q4_K_M_like_llama_cpp()
    {
        // llama.cpp quantize README: Llama-2-7B Q4_K_M is 3.80 GiB (4.08 GB).
        var bytes = MemoryEstimator.WeightBytes(ModelPresets.Llama2_7B.Parameters, WeightFormat.Parse("gguf-q4_k_m"));
        Assert.InRange(bytes.GB, 4.0, 4.1);
    }

    [Theory]
    [InlineData("int5")]
    [InlineData("q4")]
    [InlineData("bpw-")]
    [InlineData("bpw-0.5")]
    [InlineData("bpw-17")]
    public void Does_reject_unknown_formats_listing_accepted_names(string name)
    {
        var ex = Assert.Throws<PlanInputException>(() => WeightFormat.Parse(name));
        Assert.Equal("weights", ex.Field);
        Assert.Contains("gguf-q4_k_m", ex.Message, StringComparison.Ordinal);
        Assert.Contains("bpw-<X>", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(100)]
    [InlineData(4)]
    public void Does_reject_bad_group_sizes(int group)
    {
        var ex = Assert.Throws<PlanInputException>(() => WeightFormat.Parse("int4", group));
        Assert.Equal("group-size", ex.Field);
    }
}
