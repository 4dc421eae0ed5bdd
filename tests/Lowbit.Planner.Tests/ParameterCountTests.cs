namespace Lowbit.Planner.Tests;

/// <summary>Parameter counts computed from each preset's architecture against published counts (±1%).</summary>
public sealed class ParameterCountTests
{
    [Fact]
    public void Does_count_TinyLlama_exactly()
    {
        // Sum of the safetensors shapes of TinyLlama-1.1B (an exact oracle).
        Assert.Equal(1_100_048_384L, ModelPresets.TinyLlama11B.Parameters.Total);
    }

    [Theory]
    [InlineData("Llama-2-7B", 6.74e9)]         // HF model card / safetensors: 6.74B
    [InlineData("Llama-2-13B", 13.0e9)]        // 13.0B
    [InlineData("Llama-2-70B", 68.98e9)]       // safetensors total 68.98B (marketed "70B")
    [InlineData("LLaMA-65B", 65.2e9)]          // LLaMA paper, Table 2: 65.2B
    [InlineData("Llama-3-8B", 8.03e9)]         // 8.03B
    [InlineData("Llama-3-70B", 70.6e9)]        // 70.6B
    [InlineData("Mistral-7B", 7.24e9)]         // 7.24B
    [InlineData("Mixtral-8x7B", 46.7e9)]       // 46.7B total (12.9B active)
    [InlineData("StarCoder-15.5B", 15.5e9)]    // 15.5B
    [InlineData("Phi-2", 2.78e9)]              // 2.78B ("2.7B")
    [InlineData("Phi-3-mini", 3.82e9)]         // 3.82B ("3.8B")
    [InlineData("Qwen1.5-14B", 14.2e9)]        // 14.2B
    [InlineData("Qwen1.5-110B", 111e9)]        // 111B
    [InlineData("Gemma-2B", 2.51e9)]           // 2.51B
    [InlineData("TinyLlama-1.1B", 1.1e9)]
    public void Does_match_the_published_parameter_count_within_one_percent(string preset, double published)
    {
        var counted = ModelPresets.Get(preset).Parameters.Total;
        var error = Math.Abs(counted - published) / published;
        Assert.True(error < 0.01, $"{preset}: counted {counted:N0}, published {published:N0} ({error:P2} off)");
    }

    [Fact]
    public void Does_count_Mixtral_active_parameters_as_two_of_eight_experts()
    {
        var p = ModelPresets.Mixtral8x7B.Parameters;
        // Mistral AI: 12.9B active parameters per token.
        Assert.InRange(p.Active / 1e9, 12.8, 13.0);
        Assert.Equal(8 * 3L * 4096 * 14336 * 32, p.ExpertLinear);
    }

    [Fact]
    public void Does_count_StarCoder_with_tied_head_and_learned_positions()
    {
        var p = ModelPresets.StarCoder.Parameters;
        Assert.Equal(0, p.Head);
        Assert.Equal((49152L + 8192) * 6144, p.Embedding);
        Assert.Equal(15_517_456_384L, p.Total);
    }

    [Fact]
    public void Does_count_Gemma_query_width_from_head_dim_not_hidden_size()
    {
        var gemma7B = ModelPresets.Gemma2B with { HiddenSize = 3072, IntermediateSize = 24576, Layers = 28, AttentionHeads = 16, KvHeads = 16 };
        // Gemma-7B: q is 16 × 256 = 4096 wide while hidden is 3072; published 8.54B.
        Assert.Equal(4096, gemma7B.QueryDim);
        Assert.InRange(gemma7B.Parameters.Total / 1e9, 8.45, 8.62);
    }

    [Fact]
    public void Does_count_LoRA_parameters_per_rank_over_every_block_linear()
    {
        var p = ModelPresets.Llama2_7B.Parameters;
        // r × (in + out) for q, k, v, o (4096+4096 each) and gate, up, down (4096+11008 each), 32 layers.
        Assert.Equal(32L * ((4 * 8192) + (3 * 15104)), p.LoraParametersPerRank);
    }
}
