using Lowbit.Engine.Formats;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests;

public class LlamaModelTests
{
    internal static LlamaConfig TinyLlama3 => new()
    {
        VocabSize = 61, HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        HeadDim = 8, RmsNormEps = 1e-5, RopeTheta = 500000, MaxPositionEmbeddings = 64,
        RopeScaling = new RopeScaling { Type = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 4 },
    };

    internal static LlamaConfig TinyQwen2 => TinyLlama3 with
    {
        Architecture = "Qwen2ForCausalLM", ModelType = "qwen2", RopeScaling = null, RopeTheta = 10000, QkvBias = true,
        TieWordEmbeddings = true, NumKeyValueHeads = 1, HeadDim = 16, NumAttentionHeads = 2,
    };

    private static (LlamaForCausalLM Model, TempDir Dir) SaveRandom(LlamaConfig config, long seed)
    {
        var dir = new TempDir();
        using (var model = new LlamaForCausalLM(config, ScalarType.Float32, CPU))
        {
            ModelIo.InitializeRandom(model, seed, std: 0.2);
            ModelIo.Save(model, dir.Path);
        }
        using var checkpoint = Checkpoint.Open(dir.Path);
        return (ModelIo.Load(checkpoint, ScalarType.Float32, CPU), dir);
    }

    public static TheoryData<string> Configs() => ["llama3-gqa-scaled-rope", "qwen2-bias-tied"];

    private static LlamaConfig ConfigNamed(string name) => name == "qwen2-bias-tied" ? TinyQwen2 : TinyLlama3;

    [Theory]
    [MemberData(nameof(Configs))]
    public void Does_match_the_float64_reference_when_reloaded_from_safetensors(string configName)
    {
        var config = ConfigNamed(configName);
        var (model, dir) = SaveRandom(config, seed: 7);
        using var _ = dir;
        using var __ = model;
        int[] ids = [1, 5, 9, 60, 3, 3, 17, 42, 0, 11];
        using var file = SafetensorsFile.Open(dir.File("model.safetensors"));
        var expected = new ReferenceLlama(Checkpoint.Open(dir.Path).Config, file).Logits(ids);

        using var scope = NewDisposeScope();
        var logits = model.forward(tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]), null).to(ScalarType.Float64);
        var actual = logits.reshape(ids.Length, config.VocabSize).data<double>().ToArray();

        var flat = expected.SelectMany(r => r).ToArray();
        var diff = Math.Sqrt(flat.Select((e, i) => (e - actual[i]) * (e - actual[i])).Sum());
        var norm = Math.Sqrt(flat.Sum(e => e * e));
        Assert.True(diff / norm < 1e-5, $"relative error {diff / norm:E3}");
        Assert.True(norm > 1, "logits are not trivially small");
    }

    [Fact]
    public void Does_match_the_float64_reference_to_1e10_when_computing_in_float64()
    {
        using var dir = new TempDir();
        using (var model32 = new LlamaForCausalLM(TinyLlama3, ScalarType.Float64, CPU))
        {
            ModelIo.InitializeRandom(model32, 3, std: 0.2);
            ModelIo.Save(model32, dir.Path);
        }
        using var checkpoint = Checkpoint.Open(dir.Path);
        using var model = ModelIo.Load(checkpoint, ScalarType.Float64, CPU);
        int[] ids = [4, 8, 15, 16, 23, 42];
        using var file = SafetensorsFile.Open(dir.File("model.safetensors"));
        var expected = new ReferenceLlama(checkpoint.Config, file).Logits(ids).SelectMany(r => r).ToArray();

        using var scope = NewDisposeScope();
        var actual = model.forward(tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]), null).data<double>().ToArray();

        var maxRelative = expected.Select((e, i) => Math.Abs(e - actual[i]) / Math.Max(1e-3, Math.Abs(e))).Max();
        Assert.True(maxRelative < 1e-10, $"max relative error {maxRelative:E3}");
    }

    [Fact]
    public void Does_give_the_same_logits_when_decoding_with_the_kv_cache()
    {
        var (model, dir) = SaveRandom(TinyLlama3, seed: 11);
        using var _ = dir;
        using var __ = model;
        using var scope = NewDisposeScope();
        long[] ids = [3, 1, 4, 1, 5, 9, 2, 6];
        var full = model.forward(tensor(ids, [1, ids.Length]), null);

        using var cache = new KvCache(model.Config, 1, 16, ScalarType.Float32, CPU);
        var prefill = model.forward(tensor(ids[..5], [1, 5]), cache);
        var steps = ids[5..].Select(id => model.forward(tensor(new[] { id }, [1, 1]), cache)).ToList();
        var chunked = cat([prefill, .. steps], 1);

        Assert.Equal(8, cache.Length);
        Assert.True(allclose(full, chunked, rtol: 1e-5, atol: 1e-5), $"max diff {(full - chunked).abs().max().item<float>()}");
    }

    [Fact]
    public void Does_continue_with_a_multi_token_chunk_when_the_cache_is_not_empty()
    {
        var (model, dir) = SaveRandom(TinyLlama3, seed: 12);
        using var _ = dir;
        using var __ = model;
        using var scope = NewDisposeScope();
        long[] ids = [7, 7, 8, 9, 10, 11];
        var full = model.forward(tensor(ids, [1, ids.Length]), null);
        using var cache = new KvCache(model.Config, 1, 8, ScalarType.Float32, CPU);
        var first = model.forward(tensor(ids[..2], [1, 2]), cache);
        var second = model.forward(tensor(ids[2..], [1, 4]), cache);

        Assert.True(allclose(full, cat([first, second], 1), rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void Does_build_llama2_7b_on_the_meta_device_with_the_checkpoint_names_and_shapes()
    {
        var config = new LlamaConfig
        {
            VocabSize = 32000, HiddenSize = 4096, IntermediateSize = 11008, NumHiddenLayers = 32, NumAttentionHeads = 32,
            NumKeyValueHeads = 32, HeadDim = 128, RmsNormEps = 1e-5,
        };

        using var model = new LlamaForCausalLM(config, ScalarType.BFloat16, new Device(DeviceType.META));
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);

        Assert.Equal(6_738_415_616L, parameters.Values.Sum(s => s.Aggregate(1L, (a, b) => a * b)));
        Assert.Equal(6_738_415_616L, config.ParameterCount);
        Assert.Equal(32 * 9 + 3, parameters.Count);
        Assert.Equal([32000L, 4096], parameters["model.embed_tokens.weight"]);
        Assert.Equal([4096L, 4096], parameters["model.layers.31.self_attn.k_proj.weight"]);
        Assert.Equal([11008L, 4096], parameters["model.layers.0.mlp.gate_proj.weight"]);
        Assert.Equal([4096L, 11008], parameters["model.layers.0.mlp.down_proj.weight"]);
        Assert.Equal([4096L], parameters["model.layers.5.post_attention_layernorm.weight"]);
        Assert.Equal([32000L, 4096], parameters["lm_head.weight"]);
        Assert.Equal([4096L], parameters["model.norm.weight"]);
    }

    [Fact]
    public void Does_count_tinyllama_parameters_like_the_reference_oracle()
    {
        var config = new LlamaConfig
        {
            VocabSize = 32000, HiddenSize = 2048, IntermediateSize = 5632, NumHiddenLayers = 22, NumAttentionHeads = 32,
            NumKeyValueHeads = 4, HeadDim = 64,
        };

        using var model = new LlamaForCausalLM(config, ScalarType.BFloat16, new Device(DeviceType.META));

        Assert.Equal(1_100_048_384L, model.parameters().Sum(p => p.NumberOfElements));
        Assert.Equal([256L, 2048], model.named_parameters().First(p => p.name == "model.layers.0.self_attn.v_proj.weight").parameter.shape);
    }

    [Fact]
    public void Does_use_a_replacement_projection_when_linears_are_swapped()
    {
        var (model, dir) = SaveRandom(TinyLlama3, seed: 5);
        using var _ = dir;
        using var __ = model;
        using var scope = NewDisposeScope();
        var ids = tensor(new long[] { 1, 2, 3 }, [1, 3]);
        var before = model.forward(ids, null);
        var replaced = new List<string>();

        model.ReplaceLinears((name, layer) =>
        {
            replaced.Add(name);
            return name.EndsWith("mlp.down_proj", StringComparison.Ordinal) ? new ScaledLinear(layer, 0) : null;
        });
        var after = model.forward(ids, null);

        Assert.Equal(14, replaced.Count);
        Assert.Contains("model.layers.1.self_attn.o_proj", replaced);
        Assert.False(allclose(before, after));
        Assert.Contains(model.named_modules(), m => m.name == "model.layers.0.mlp.down_proj" && m.module is ScaledLinear);
    }

    /// <summary>A stand-in for a quantized layer: the wrapped weight times a factor, materialized in forward.</summary>
    private sealed class ScaledLinear(LinearLayer inner, double factor) : LinearLayer("ScaledLinear", inner.InFeatures, inner.OutFeatures)
    {
        private readonly Tensor _weight = inner.DenseWeight(ScalarType.Float32).detach().clone() * Scalars.Of(factor);

        public override Tensor forward(Tensor input) => nn.functional.linear(input, _weight);

        public override Tensor DenseWeight(ScalarType dtype) => _weight.to(dtype);

        public override Tensor? DenseBias(ScalarType dtype) => null;
    }
}
