namespace Lowbit.Planner.Tests;

/// <summary>config.json of every supported model_type parses to the preset built from the published values.</summary>
public sealed class HfConfigParserTests
{
    [Theory]
    [InlineData("tinyllama-1.1b.json", "TinyLlama-1.1B")]
    [InlineData("llama-2-70b.json", "Llama-2-70B")]
    [InlineData("mistral-7b.json", "Mistral-7B")]
    [InlineData("mixtral-8x7b.json", "Mixtral-8x7B")]
    [InlineData("qwen1.5-14b.json", "Qwen1.5-14B")]
    [InlineData("gemma-2b.json", "Gemma-2B")]
    [InlineData("phi-2.json", "Phi-2")]
    [InlineData("phi-3-mini.json", "Phi-3-mini")]
    [InlineData("starcoder.json", "StarCoder-15.5B")]
    public void Does_parse_a_config_to_the_matching_preset(string file, string preset)
    {
        var expected = ModelPresets.Get(preset);
        var parsed = HfConfigParser.Parse(Fixtures.HfConfig(file), expected.Name);
        Assert.Equal(expected, parsed);
        Assert.Equal(expected.Parameters.Total, parsed.Parameters.Total);
    }

    [Fact]
    public void Does_read_mixtral_expert_counts()
    {
        var m = HfConfigParser.Parse(Fixtures.HfConfig("mixtral-8x7b.json"));
        Assert.Equal((8, 2), (m.Experts, m.ExpertsPerToken));
        Assert.True(m.IsMixtureOfExperts);
    }

    [Fact]
    public void Does_read_gpt_bigcode_multi_query_as_one_kv_head()
    {
        var m = HfConfigParser.Parse(Fixtures.HfConfig("starcoder.json"));
        Assert.Equal(1, m.KvHeads);
        Assert.Equal(8192, m.LearnedPositions);
        Assert.True(m.TiedEmbeddings);
        var multiHead = HfConfigParser.Parse(Fixtures.HfConfig("starcoder.json").Replace("\"multi_query\": true", "\"multi_query\": false", StringComparison.Ordinal));
        Assert.Equal(48, multiHead.KvHeads);
        Assert.True(multiHead.Parameters.Total > m.Parameters.Total);
    }

    [Fact]
    public void Does_read_phi2_partial_rotary_and_dense_mlp_with_biases()
    {
        var m = HfConfigParser.Parse(Fixtures.HfConfig("phi-2.json"));
        Assert.Equal(0.4, m.PartialRotaryFactor);
        Assert.Equal(MlpKind.Dense, m.Mlp);
        Assert.Equal(NormKind.LayerNorm, m.Norm);
        Assert.True(m.LmHeadBias && m.QkvBias && m.MlpBias && m.ParallelBlock);
        Assert.Equal("phi-2", m.Name);
    }

    [Fact]
    public void Does_default_gemma_to_tied_embeddings_and_read_head_dim()
    {
        var m = HfConfigParser.Parse(Fixtures.HfConfig("gemma-2b.json"));
        Assert.True(m.TiedEmbeddings);
        Assert.Equal(256, m.HeadDim);
        Assert.Equal(0, m.Parameters.Head);
    }

    [Fact]
    public void Does_give_qwen2_qkv_biases()
    {
        var m = HfConfigParser.Parse(Fixtures.HfConfig("qwen1.5-14b.json"));
        Assert.True(m.QkvBias);
        Assert.False(m.OutputBias);
    }

    [Fact]
    public void Does_default_kv_heads_to_attention_heads_when_absent()
    {
        var json = """{"model_type":"llama","hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"vocab_size":32000}""";
        var m = HfConfigParser.Parse(json);
        Assert.Equal(32, m.KvHeads);
        Assert.Equal(ModelPresets.Llama2_7B.Parameters.Total, m.Parameters.Total);
    }

    [Fact]
    public void Does_reject_an_unsupported_model_type_listing_the_supported_ones()
    {
        var ex = Assert.Throws<PlanInputException>(() => HfConfigParser.Parse("""{"model_type":"t5","d_model":512}"""));
        Assert.Equal("config.json: model_type", ex.Field);
        Assert.Contains("'t5'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("gpt_bigcode", ex.Message, StringComparison.Ordinal);
        Assert.Equal(HfConfigParser.SupportedModelTypes, ex.Accepted);
    }

    [Fact]
    public void Does_name_the_missing_field()
    {
        var ex = Assert.Throws<PlanInputException>(() => HfConfigParser.Parse("""{"model_type":"llama","hidden_size":4096}"""));
        Assert.Equal("config.json: num_attention_heads", ex.Field);
        Assert.Contains("missing", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_reject_kv_heads_that_do_not_divide_attention_heads()
    {
        var json = """{"model_type":"llama","hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":5,"vocab_size":32000}""";
        var ex = Assert.Throws<PlanInputException>(() => HfConfigParser.Parse(json));
        Assert.Equal("config.json: num_key_value_heads", ex.Field);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("[1,2]")]
    [InlineData("""{"model_type":"llama","hidden_size":"big"}""")]
    public void Does_reject_malformed_configs(string json)
    {
        var ex = Assert.Throws<PlanInputException>(() => HfConfigParser.Parse(json));
        Assert.StartsWith("config.json", ex.Field, StringComparison.Ordinal);
    }
}
