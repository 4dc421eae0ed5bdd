using System.Text;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Protocol;
using TorchSharp;

namespace Lowbit.Engine.Tests.Quantization;

public sealed class QuantizeVerbTests : IDisposable
{
    private const string Text = "In the beginning God created the heaven and the earth. And the earth was without form, and void; "
        + "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.\n";

    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private (int Exit, string Stdout, string Stderr, EngineResult? Result) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var resultFile = _dir.File("result.json");
        File.Delete(resultFile);
        var exit = EngineCli.Run([.. args, "--result-file", resultFile], stdout, stderr, TimeProvider.System);
        var json = File.Exists(resultFile) ? File.ReadAllText(resultFile) : null;
        if (json is not null)
        {
            Assert.True(Encoding.UTF8.GetByteCount(json) <= EngineResult.MaxBytes);
        }
        return (exit, stdout.ToString(), stderr.ToString(), json is null ? null : EngineResult.Parse(json));
    }

    [Fact]
    public void Does_quantize_export_and_report_when_given_hqq_and_an_eval_text()
    {
        var model = TinyModels.SaveWithByteTokenizer(_dir.File("model"));
        File.WriteAllText(_dir.File("eval.txt"), string.Concat(Enumerable.Repeat(Text, 4)));
        var (exit, stdout, stderr, result) = Run("quantize", "--model", model, "--method", "hqq", "--bits", "4", "--group-size", "32",
            "--format", "lowbit,gguf-q4_0", "--out", _dir.File("out"), "--eval-text", _dir.File("eval.txt"), "--device", "cpu");

        Assert.True(exit == 0, stderr);
        var progress = stdout.Split('\n').Select(EngineEvent.TryParse).OfType<ProgressEvent>().Where(e => e.Stage == "quantize").ToList();
        Assert.Equal([1, 2], progress.Select(p => p.Layer));
        Assert.All(progress, p => Assert.Equal(2, p.Layers));
        Assert.NotNull(result);
        Assert.True(result!.Ok);
        Assert.Equal("lowbit", result.Artifact!.Format);
        Assert.InRange(result.Artifact.BitsPerWeight!.Value, 4.9, 5.1);  // 4 bits + fp16 scale and zero per 32
        Assert.True(result.Artifact.CompressionRatio > 1, $"{result.Artifact.CompressionRatio}");  // fp32 embeddings stay dense in this tiny model
        Assert.Equal(14, result.Layers!.Count);
        Assert.True(result.Quality!.PerplexityBefore > 1 && result.Quality.PerplexityAfter > 1);
        Assert.InRange(result.Quality.MeanReconstructionError!.Value, 0.01, 0.2);

        // The lowbit folder loads through the engine's model loading (what eval and serve use).
        using (var loaded = ModelLoading.Load(result.Artifact.Uri, torch.ScalarType.Float32, torch.CPU))
        {
            // 4-bit codes stay packed two per byte, as the file holds them.
            Assert.Equal(4, Assert.IsType<Lowbit.Engine.Lora.PackedQuantizedLinear>(loaded.Model.Layers[0].Projections().First().Layer).Bits);
        }
        var gguf = GgufFile.Read(Path.Combine(_dir.File("out"), "gguf-q4_0", "model-q4_0.gguf"));
        Assert.Equal(GgmlType.Q4_0, gguf.Tensor("blk.1.ffn_down.weight").Type);
        Assert.Equal("gpt2", gguf.Metadata["tokenizer.ggml.model"].AsString());
    }

    [Theory]
    [InlineData("--calibration", "--method", "gptq", "--bits", "4", "--format", "lowbit")]
    [InlineData("--format", "--method", "rtn", "--bits", "4", "--format", "gguf-q8_0")]
    [InlineData("--format", "--method", "hqq", "--bits", "4", "--format", "gptq")]
    [InlineData("--format", "--method", "rtn", "--target-bpw", "3", "--format", "gptq")]
    [InlineData("--bits", "--method", "rtn", "--bits", "5", "--format", "lowbit")]
    public void Does_exit_42_naming_the_argument_when_input_is_bad(string named, params string[] args)
    {
        var model = TinyModels.SaveWithByteTokenizer(_dir.File("model"));
        var (exit, _, stderr, result) = Run(["quantize", "--model", model, "--out", _dir.File("out"), .. args]);
        Assert.Equal(EngineExitCodes.BadInput, exit);
        Assert.Contains(named, stderr);
        if (result is not null)
        {
            Assert.Equal(ErrorReasons.BadInput, result.Error!.Reason);
        }
    }

    [Fact]
    public void Does_run_gptq_with_a_calibration_file_and_write_an_autogptq_folder()
    {
        var model = TinyModels.SaveWithByteTokenizer(_dir.File("model"));
        File.WriteAllText(_dir.File("calib.jsonl"), string.Join("\n", Enumerable.Range(0, 6).Select(i => $"{{\"text\":\"{Text.Trim()} {i}\"}}")));
        var (exit, _, stderr, result) = Run("quantize", "--model", model, "--method", "gptq", "--bits", "4", "--group-size", "32",
            "--format", "gptq", "--out", _dir.File("out"), "--calibration", _dir.File("calib.jsonl"), "--calibration-samples", "4", "--calibration-length", "64");
        Assert.True(exit == 0, stderr);
        Assert.Equal("gptq", result!.Artifact!.Format);
        Assert.True(File.Exists(Path.Combine(result.Artifact.Uri, "quantize_config.json")));
        using var q = GptqCheckpoint.ReadLinear(result.Artifact.Uri, "model.layers.0.self_attn.q_proj");
        Assert.Equal(4, q.Bits);
    }

    /// <summary>A model whose first q_proj has only positive weights: every group's min-max zero-point would be 0.</summary>
    private string PositiveModel()
    {
        var model = TinyModels.SaveWithByteTokenizer(_dir.File("model"));
        var path = Path.Combine(model, "model.safetensors");
        Dictionary<string, torch.Tensor> tensors;
        using (var file = SafetensorsFile.Open(path))
        {
            tensors = file.Tensors.Keys.ToDictionary(n => n, n => file.Load(n, torch.ScalarType.Float32));
        }
        tensors["model.layers.0.self_attn.q_proj.weight"] = tensors["model.layers.0.self_attn.q_proj.weight"].abs();
        SafetensorsWriter.Write(path, tensors);
        return model;
    }

    [Theory]
    [InlineData("rtn")]
    [InlineData("gptq")]
    public void Does_export_gptq_with_zero_points_1_to_15_when_a_group_has_only_positive_weights(string method)
    {
        var model = PositiveModel();
        File.WriteAllText(_dir.File("calib.txt"), string.Concat(Enumerable.Repeat(Text, 4)));
        var (exit, _, stderr, result) = Run("quantize", "--model", model, "--method", method, "--bits", "4", "--group-size", "32",
            "--format", "gptq", "--out", _dir.File("out"), "--calibration", _dir.File("calib.txt"), "--calibration-samples", "4", "--calibration-length", "64");
        Assert.True(exit == 0, stderr);
        using var q = GptqCheckpoint.ReadLinear(result!.Artifact!.Uri, "model.layers.0.self_attn.q_proj");
        Assert.True(q.Zeros.ge(Scalars.Of(1)).all().item<bool>() && q.Zeros.le(Scalars.Of(15)).all().item<bool>(), "a zero-point outside 1..15");
        // Representable and accurate: the positive weights are not clipped at the top of the range.
        using var source = SafetensorsFile.Open(Path.Combine(model, "model.safetensors"));
        using var weight = source.Load("model.layers.0.self_attn.q_proj.weight", torch.ScalarType.Float32);
        using var restored = q.Dequantize();
        var relative = weight.sub(restored).norm().item<float>() / weight.norm().item<float>();
        Assert.True(relative < 0.1, $"relative error {relative}");
    }

    [Fact]
    public void Does_export_symmetric_gptq_with_every_zero_at_8_when_asked_for_scheme_sym()
    {
        var model = PositiveModel();
        var (exit, _, stderr, result) = Run("quantize", "--model", model, "--method", "rtn", "--bits", "4", "--group-size", "32",
            "--scheme", "sym", "--format", "gptq", "--out", _dir.File("out"));
        Assert.True(exit == 0, stderr);
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(result!.Artifact!.Uri, "quantize_config.json")))!;
        Assert.True(config["sym"]!.GetValue<bool>());
        using var q = GptqCheckpoint.ReadLinear(result.Artifact.Uri, "model.layers.0.self_attn.q_proj");
        Assert.True(q.Zeros.eq(Scalars.Of(8)).all().item<bool>());
        Assert.Equal("sym", result.Info!["scheme"]);
    }

    [Fact]
    public void Does_refuse_gptq_export_of_zero_point_0_with_a_named_error_and_no_folder()
    {
        var model = PositiveModel();
        using var checkpoint = Checkpoint.Open(model);
        using var quantized = Lowbit.Engine.Quantization.ModelQuantizer.Quantize(checkpoint, new Lowbit.Engine.Quantization.ModelQuantizeOptions
        {
            Method = QuantizationMethod.Rtn, Bits = 4, GroupSize = 32,
        });
        var outDir = _dir.File("gptq-out");
        var ex = Assert.Throws<EngineInputException>(() => GptqCheckpoint.Write(outDir, checkpoint, quantized));
        Assert.Contains("model.layers.0.self_attn.q_proj", ex.Message);
        Assert.Contains("--scheme sym", ex.Message);
        Assert.False(Directory.Exists(outDir));
    }
}
