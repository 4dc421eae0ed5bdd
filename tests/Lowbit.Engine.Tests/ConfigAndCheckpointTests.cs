using Lowbit.Engine.Formats;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests;

public class ConfigAndCheckpointTests
{
    [Fact]
    public void Does_read_llama31_rope_scaling_and_an_eos_list()
    {
        var config = LlamaConfig.Parse("""
            {"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":128256,"hidden_size":4096,"intermediate_size":14336,
             "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"max_position_embeddings":131072,"rms_norm_eps":1e-05,
             "rope_theta":500000.0,"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},
             "bos_token_id":128000,"eos_token_id":[128001,128008,128009],"tie_word_embeddings":false,"torch_dtype":"bfloat16"}
            """);

        Assert.Equal(128, config.HeadDim);
        Assert.Equal(8, config.NumKeyValueHeads);
        Assert.Equal(500000, config.RopeTheta);
        Assert.Equal("llama3", config.RopeScaling!.Type);
        Assert.Equal(8, config.RopeScaling.Factor);
        Assert.Equal([128001, 128008, 128009], config.EosTokenIds);
        Assert.Equal(8_030_261_248L, config.ParameterCount);
    }

    [Fact]
    public void Does_read_transformers_v5_rope_parameters_head_dim_and_tied_embeddings()
    {
        var config = LlamaConfig.Parse("""
            {"vocab_size":128256,"hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":16,"num_attention_heads":32,
             "num_key_value_heads":8,"head_dim":64,"tie_word_embeddings":true,"dtype":"bfloat16",
             "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}
            """);

        Assert.Equal(500000, config.RopeTheta);
        Assert.Equal(32, config.RopeScaling!.Factor);
        Assert.True(config.TieWordEmbeddings);
        Assert.Equal("bfloat16", config.TorchDtype);
        Assert.Equal(1_235_814_400L, config.ParameterCount);
    }

    [Fact]
    public void Does_give_qwen2_biases_on_qkv_only()
    {
        var config = LlamaConfig.Parse("""{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":151936,"hidden_size":896,"intermediate_size":4864,"num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"tie_word_embeddings":true}""");

        using var model = new LlamaForCausalLM(config, ScalarType.BFloat16, new Device(DeviceType.META));
        var names = model.named_parameters().Select(p => p.name).ToHashSet();

        Assert.True(config.QkvBias);
        Assert.False(config.OutputBias);
        Assert.Contains("model.layers.0.self_attn.k_proj.bias", names);
        Assert.DoesNotContain("model.layers.0.self_attn.o_proj.bias", names);
        Assert.DoesNotContain("lm_head.weight", names);
        Assert.Equal(494_032_768L, model.parameters().Sum(p => p.NumberOfElements));
    }

    [Theory]
    [InlineData("""{"architectures":["GPT2LMHeadModel"]}""", "architectures: 'GPT2LMHeadModel' is not supported; supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM")]
    [InlineData("""{"hidden_act":"gelu"}""", "hidden_act: 'gelu' is not supported; supported: silu")]
    [InlineData("""{"rope_scaling":{"rope_type":"yarn","factor":4}}""", "rope_scaling.rope_type: 'yarn' is not supported; supported: default, llama3, linear")]
    [InlineData("""{"num_attention_heads":32,"num_key_value_heads":5}""", "num_key_value_heads (5) must divide num_attention_heads (32)")]
    // Found by the config.json fuzzer: a zero divisor was a DivideByZeroException, not a named input error.
    [InlineData("""{"num_attention_heads":4,"num_key_value_heads":0}""", "num_key_value_heads must be positive, not 0")]
    [InlineData("""{"num_hidden_layers":-1}""", "num_hidden_layers must be positive, not -1")]
    [InlineData("""{"head_dim":0}""", "head_dim must be positive, not 0")]
    [InlineData("""{"hidden_size":"big"}""", "hidden_size: expected an integer")]
    public void Does_reject_unsupported_configs_naming_the_field(string json, string message)
    {
        var ex = Assert.Throws<EngineInputException>(() => LlamaConfig.Parse(json));

        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_round_trip_config_json_when_saved()
    {
        var config = LlamaModelTests.TinyLlama3 with { EosTokenIds = [2, 3], BosTokenId = 1 };

        var parsed = LlamaConfig.Parse(config.ToJson());

        Assert.Equal(config with { TorchDtype = "float32" }, parsed with { EosTokenIds = config.EosTokenIds });
        Assert.Equal(config.EosTokenIds, parsed.EosTokenIds);
    }

    [Fact]
    public void Does_load_sharded_checkpoints_layer_by_layer()
    {
        using var dir = new TempDir();
        var config = LlamaModelTests.TinyLlama3;
        using var source = new LlamaForCausalLM(config, ScalarType.Float32, CPU);
        ModelIo.InitializeRandom(source, 21, std: 0.1);
        File.WriteAllText(dir.File("config.json"), config.ToJson());
        var parameters = source.named_parameters().ToList();
        var first = parameters.Where(p => !p.name.StartsWith("model.layers.1.", StringComparison.Ordinal)).ToList();
        var second = parameters.Where(p => p.name.StartsWith("model.layers.1.", StringComparison.Ordinal)).ToList();
        SafetensorsWriter.Write(dir.File("model-00001-of-00002.safetensors"), first.Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter.detach())));
        SafetensorsWriter.Write(dir.File("model-00002-of-00002.safetensors"), second.Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter.detach())));
        var map = string.Join(",", first.Select(p => $"\"{p.name}\":\"model-00001-of-00002.safetensors\"").Concat(second.Select(p => $"\"{p.name}\":\"model-00002-of-00002.safetensors\"")));
        File.WriteAllText(dir.File("model.safetensors.index.json"), $"{{\"metadata\":{{\"total_size\":1}},\"weight_map\":{{{map}}}}}");

        using var checkpoint = Checkpoint.Open(dir.Path);
        var layer1 = checkpoint.LayerTensors(1);
        using var layer = new LlamaDecoderLayer(config, ScalarType.Float32, CPU);
        ModelIo.LoadLayer(layer, checkpoint, 1);
        using var loaded = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);

        Assert.Equal(2, checkpoint.Files.Count());
        Assert.Equal(9, layer1.Count);
        Assert.True(layer1["mlp.up_proj.weight"].allclose(second.Single(p => p.name == "model.layers.1.mlp.up_proj.weight").parameter, 0, 0));
        Assert.True(layer.named_parameters().Single(p => p.name == "self_attn.q_proj.weight").parameter
            .allclose(second.Single(p => p.name == "model.layers.1.self_attn.q_proj.weight").parameter, 0, 0));
        using var ids = tensor(new long[] { 1, 2, 3 }, [1, 3]);
        using var a = source.forward(ids, null);
        using var b = loaded.forward(ids, null);
        Assert.True(a.allclose(b, 0, 0));
    }

    [Fact]
    public void Does_name_missing_tensors_when_a_checkpoint_is_incomplete()
    {
        using var dir = new TempDir();
        var config = LlamaModelTests.TinyLlama3;
        File.WriteAllText(dir.File("config.json"), config.ToJson());
        SafetensorsWriter.Write(dir.File("model.safetensors"), [new KeyValuePair<string, Tensor>("model.norm.weight", ones(32))]);

        using var checkpoint = Checkpoint.Open(dir.Path);
        var ex = Assert.Throws<EngineInputException>(() => ModelIo.Load(checkpoint, ScalarType.Float32, CPU));

        Assert.Contains("checkpoint lacks", ex.Message, StringComparison.Ordinal);
        Assert.Contains("model.embed_tokens.weight", ex.Message, StringComparison.Ordinal);
    }
}
