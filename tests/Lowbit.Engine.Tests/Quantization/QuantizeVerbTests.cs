using System.Text;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Models;
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
            Assert.IsType<Lowbit.Engine.Quantization.QuantizedLinear>(loaded.Model.Layers[0].Projections().First().Layer);
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
}
