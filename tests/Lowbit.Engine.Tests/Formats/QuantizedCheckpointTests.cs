using System.Text.Json.Nodes;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Tests.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Formats;

public sealed class QuantizedCheckpointTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("quant-ckpt").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private string Source() => TinyModels.Save(Path.Combine(_root, "source"));

    private static void AssertSameDequantized(QuantizedTensor expected, QuantizedTensor actual, string name)
    {
        using var scope = NewDisposeScope();
        Assert.True(expected.Dequantize().eq(actual.Dequantize()).all().item<bool>(), $"{name}: dequantized weights differ after the round trip");
    }

    [Theory]
    [InlineData(QuantizationMethod.Rtn, 3, 32)]
    [InlineData(QuantizationMethod.Hqq, 4, 32)]
    [InlineData(QuantizationMethod.Gptq, 4, 16)]
    public void Does_round_trip_lowbit_exports_and_load_a_model_that_predicts_like_the_source(QuantizationMethod method, int bits, int groupSize)
    {
        using var checkpoint = Checkpoint.Open(Source());
        using var calibration = TinyModels.Tokens(8, 32, 5);
        using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions
        {
            Method = method, Bits = bits, GroupSize = groupSize, Calibration = method == QuantizationMethod.Gptq ? calibration : null,
            Gptq = new GptqOptions { ActOrder = true },
        });
        Assert.Equal(14, quantized.Linears.Count);
        var outDir = Path.Combine(_root, "lowbit");
        var report = LowbitCheckpoint.Write(outDir, checkpoint, quantized);
        Assert.True(LowbitCheckpoint.IsLowbit(outDir));
        Assert.True(report.Bytes < new FileInfo(Path.Combine(checkpoint.Directory, "model.safetensors")).Length);

        var read = LowbitCheckpoint.ReadLinears(outDir);
        foreach (var (name, q) in quantized.Linears)
        {
            Assert.Equal(q.Bits, read[name].Bits);
            AssertSameDequantized(q, read[name], name);
        }

        // The loaded model computes exactly what the source model computes with the dequantized weights swapped in.
        using var loaded = LowbitCheckpoint.Load(outDir, ScalarType.Float32, CPU);
        AssertPredictsLikeTheDequantizedSource(checkpoint, quantized, loaded);
    }

    /// <summary>
    /// <paramref name="loaded"/>'s logits equal (to 1e-5 relative) the source model's with every quantized weight of
    /// <paramref name="quantized"/> dequantized and swapped in.
    /// </summary>
    private static void AssertPredictsLikeTheDequantizedSource(Checkpoint checkpoint, QuantizedModel quantized, LlamaForCausalLM loaded)
    {
        using var reference = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        var parameters = reference.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using var noGrad = no_grad();
        foreach (var (name, q) in quantized.Linears)
        {
            parameters[name + ".weight"].copy_(q.Dequantize());
        }
        using var tokens = TinyModels.Tokens(1, 16, 9);
        var expected = reference.forward(tokens, null);
        var actual = loaded.forward(tokens, null);
        var relative = expected.sub(actual).norm().item<float>() / expected.norm().item<float>();
        Assert.True(relative < 1e-5, $"logits differ by {relative:E2}");
    }

    [Theory]
    [InlineData(QuantizationMethod.Hqq, 2)]
    [InlineData(QuantizationMethod.Rtn, 4)]
    [InlineData(QuantizationMethod.Rtn, 8)]
    public void Does_load_packable_layers_as_the_files_packed_bytes_without_a_dense_projection(QuantizationMethod method, int bits)
    {
        using var checkpoint = Checkpoint.Open(Source());
        using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions { Method = method, Bits = bits, GroupSize = 32 });
        var outDir = Path.Combine(_root, "lowbit");
        LowbitCheckpoint.Write(outDir, checkpoint, quantized);

        using var loaded = LowbitCheckpoint.Load(outDir, ScalarType.Float32, CPU);

        using var file = SafetensorsFile.Open(Path.Combine(outDir, Checkpoint.SingleFile));
        var layers = loaded.Model.Layers.SelectMany((l, i) => l.Projections().Select(p => ($"model.layers.{i}.{p.Name}", p.Layer))).ToList();
        Assert.Equal(quantized.Linears.Count, layers.Count);
        foreach (var (name, layer) in layers)
        {
            // The file's bytes as they are: one copy at bits/8 bytes per weight, never one byte per code.
            var packed = Assert.IsType<PackedQuantizedLinear>(layer);
            Assert.Equal(bits, packed.Bits);
            Assert.Equal(file.GetBytes(name + ".qweight").ToArray(), packed.Packed.contiguous().data<byte>().ToArray());
            using var scope = NewDisposeScope();
            Assert.True(quantized.Linears[name].Dequantize().eq(packed.DenseWeight(ScalarType.Float32)).all().item<bool>(), $"{name}: dequantized weights differ");
        }
        // No projection weight exists as a parameter (nothing dense was built), and nothing is left on the meta device.
        var parameters = loaded.named_parameters().ToList();
        Assert.DoesNotContain(parameters, p => p.name.EndsWith("_proj.weight", StringComparison.Ordinal));
        Assert.All(parameters, p => Assert.Equal(DeviceType.CPU, p.parameter.device_type));
    }

    [Theory]
    [InlineData(QuantizationMethod.Rtn)]
    [InlineData(QuantizationMethod.Gptq)]
    public void Does_quantize_the_head_on_request_and_load_it_packed(QuantizationMethod method)
    {
        // quantize --quantize-head: lm_head joins the quantized layers (GPTQ's Hessian from the final-normed hidden
        // states), the export lists it, and the loader keeps it packed, computing what the source computes with every
        // dequantized weight, the head's too, swapped in.
        using var checkpoint = Checkpoint.Open(Source());
        Assert.False(checkpoint.Config.TieWordEmbeddings, "the fixture needs a head of its own");
        using var calibration = TinyModels.Tokens(8, 32, 5);
        using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions
        {
            Method = method, Bits = 4, GroupSize = 32, QuantizeHead = true, Calibration = method == QuantizationMethod.Gptq ? calibration : null,
        });
        Assert.Equal(15, quantized.Linears.Count);
        var head = quantized.Linears[ModelQuantizer.HeadName];
        Assert.Equal((checkpoint.Config.VocabSize, checkpoint.Config.HiddenSize), (head.OutFeatures, head.InFeatures));
        Assert.Contains(quantized.Layers, l => l.Name == ModelQuantizer.HeadName && l.Bits == 4 && l.RelativeError is > 0 and < 0.2);

        var outDir = Path.Combine(_root, "lowbit-head");
        LowbitCheckpoint.Write(outDir, checkpoint, quantized);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!;
        Assert.True(config["quantization_config"]!["lm_head"]!.GetValue<bool>());
        using var loaded = LowbitCheckpoint.Load(outDir, ScalarType.Float32, CPU);
        var packed = Assert.IsType<PackedQuantizedLinear>(loaded.LmHead);
        Assert.Equal(4, packed.Bits);
        Assert.DoesNotContain(loaded.named_parameters(), p => p.name == "lm_head.weight");
        AssertPredictsLikeTheDequantizedSource(checkpoint, quantized, loaded);
    }

    [Fact]
    public void Does_refuse_to_quantize_a_head_tied_to_the_embeddings()
    {
        using var checkpoint = Checkpoint.Open(TinyModels.SaveWithByteTokenizer(Path.Combine(_root, "tied"), tied: true));
        var error = Assert.Throws<EngineInputException>(() =>
            ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions { Method = QuantizationMethod.Rtn, Bits = 4, GroupSize = 32, QuantizeHead = true }).Dispose());
        Assert.StartsWith("--quantize-head:", error.Message, StringComparison.Ordinal);
        Assert.Contains("tie_word_embeddings", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(4, false)]
    [InlineData(4, true)]
    [InlineData(8, false)]
    public void Does_round_trip_gptq_exports_with_autogptq_tensor_layout(int bits, bool actOrder)
    {
        using var checkpoint = Checkpoint.Open(Source());
        using var calibration = TinyModels.Tokens(8, 32, 6);
        using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions
        {
            Method = QuantizationMethod.Gptq, Bits = bits, GroupSize = 32, Calibration = calibration, Gptq = new GptqOptions { ActOrder = actOrder },
        });
        var outDir = Path.Combine(_root, "gptq");
        GptqCheckpoint.Write(outDir, checkpoint, quantized, descAct: actOrder);

        using (var file = SafetensorsFile.Open(Path.Combine(outDir, "model.safetensors")))
        {
            var qweight = file.Get("model.layers.0.mlp.down_proj.qweight");
            Assert.Equal(SafetensorsDtype.I32, qweight.Dtype);
            Assert.Equal([128L * bits / 32, 64], qweight.Shape);
            Assert.Equal([4L, 64 * bits / 32], file.Get("model.layers.0.mlp.down_proj.qzeros").Shape);
            Assert.Equal([4L, 64], file.Get("model.layers.0.mlp.down_proj.scales").Shape);
            Assert.Equal(SafetensorsDtype.F16, file.Get("model.layers.0.mlp.down_proj.scales").Dtype);
            Assert.Equal([128L], file.Get("model.layers.0.mlp.down_proj.g_idx").Shape);
            Assert.Equal(SafetensorsDtype.F16, file.Get("model.norm.weight").Dtype);
            Assert.False(file.Tensors.ContainsKey("model.layers.0.mlp.down_proj.weight"));
        }
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!["quantization_config"]!;
        Assert.Equal("gptq", config["quant_method"]!.GetValue<string>());
        Assert.Equal(bits, config["bits"]!.GetValue<int>());
        Assert.Equal(32, config["group_size"]!.GetValue<int>());
        Assert.Equal(actOrder, config["desc_act"]!.GetValue<bool>());
        Assert.True(File.Exists(Path.Combine(outDir, "quantize_config.json")));

        foreach (var (name, q) in quantized.Linears)
        {
            using var read = GptqCheckpoint.ReadLinear(outDir, name);
            AssertSameDequantized(q, read, name);
        }
    }

    [Fact]
    public void Does_refuse_gptq_export_of_hqq_fractional_zero_points()
    {
        using var checkpoint = Checkpoint.Open(Source());
        using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions { Method = QuantizationMethod.Hqq, Bits = 4, GroupSize = 32 });
        var ex = Assert.Throws<EngineInputException>(() => GptqCheckpoint.Write(Path.Combine(_root, "gptq"), checkpoint, quantized));
        Assert.Contains("--format", ex.Message);
    }

    [Fact]
    public void Does_meet_a_target_bits_per_weight_with_a_mixed_layout()
    {
        using var checkpoint = Checkpoint.Open(Source());
        using var calibration = TinyModels.Tokens(4, 32, 7);
        using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions
        {
            Method = QuantizationMethod.Rtn, Bits = 8, GroupSize = 32, TargetBitsPerWeight = 3.5, Calibration = calibration,
        });
        Assert.NotNull(quantized.Allocation);
        Assert.True(quantized.BitsPerWeight <= 3.5 + 1e-9, $"{quantized.BitsPerWeight}");
        Assert.True(quantized.Layers.Select(l => l.Bits).Distinct().Count() > 1, quantized.Allocation!.Layout);
        var outDir = Path.Combine(_root, "mixed");
        LowbitCheckpoint.Write(outDir, checkpoint, quantized);
        var read = LowbitCheckpoint.ReadLinears(outDir);
        Assert.All(quantized.Linears, kv => Assert.Equal(kv.Value.Bits, read[kv.Key].Bits));
    }
}
