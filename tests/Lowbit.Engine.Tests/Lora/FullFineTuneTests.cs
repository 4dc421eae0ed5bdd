using System.Text;
using System.Text.Json.Nodes;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Generation;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using Lowbit.Engine.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

/// <summary><c>finetune --method full</c> on the trained fixture: every weight trains, the output is a whole model.</summary>
public sealed class FullFineTuneTests(ITestOutputHelper output)
{
    private static string Fixture => TokenizerTests.FixtureDirectory;

    private static FineTuneRequest Request(string baseModel, string dataset, string output) => new()
    {
        BaseModel = baseModel,
        Method = FineTuneMethod.Full,
        Dataset = dataset,
        DatasetFormat = DatasetFormat.Text,
        Out = output,
        SeqLength = 128,
        MicroBatch = 4,
        MaxSteps = 16,
        LearningRate = 3e-4,
        WarmupSteps = 2,
        EvalSplit = 0,
        Seed = 1,
        Device = ComputeDevice.Cpu,
    };

    [Fact]
    public async Task Does_lower_the_loss_and_write_a_full_checkpoint_that_eval_and_serve_load()
    {
        TorchRuntime.Initialize();
        using var dir = new TempDir();
        var text = File.ReadAllText(Path.Combine(Fixture, "eval.txt"));
        var cut = text.IndexOf('\n', text.Length / 2) + 1;
        File.WriteAllText(dir.File("train.txt"), text[..cut]);
        File.WriteAllText(dir.File("held.txt"), text[cut..]);
        var losses = new List<double>();

        var outcome = new FineTuner(Request(Fixture, dir.File("train.txt"), dir.File("full")), Fixture, e =>
        {
            if (e is TrainEvent t)
            {
                losses.Add(t.Loss);
            }
        }).Run();

        // Loss: mean of the last 3 steps against the first 3.
        var (first, last) = (losses.Take(3).Average(), losses.TakeLast(3).Average());
        output.WriteLine($"full on the fixture: loss {first:F4} -> {last:F4} over {losses.Count} steps, {outcome.TrainableParameters} trainable");
        Assert.True(last < 0.9 * first, $"loss {first:F4} -> {last:F4}");

        // A whole Hugging Face checkpoint in the base's dtype, every tensor of the base, tokenizer copied.
        using (var fixture = Checkpoint.Open(Fixture))
        using (var trained = Checkpoint.Open(dir.File("full")))
        {
            Assert.Equal(fixture.TensorNames.Order(StringComparer.Ordinal), trained.TensorNames.Order(StringComparer.Ordinal));
            Assert.Equal(fixture.Config.ParameterCount, outcome.TrainableParameters);
            using var file = SafetensorsFile.Open(Path.Combine(dir.File("full"), Checkpoint.SingleFile));
            Assert.All(file.Tensors.Values, t => Assert.Equal(SafetensorsDtype.F16, t.Dtype));
            using var before = fixture.Load("model.layers.0.mlp.down_proj.weight", ScalarType.Float32);
            using var after = trained.Load("model.layers.0.mlp.down_proj.weight", ScalarType.Float32);
            Assert.False(before.allclose(after), "the layer weights moved");
        }
        Assert.True(File.Exists(Path.Combine(dir.File("full"), "tokenizer.json")));

        // eval scores it (held-out half of the same book: lower perplexity than the base).
        double Perplexity(string model)
        {
            var args = new EvalRequest { Model = model, Text = dir.File("held.txt"), Context = 256, Device = ComputeDevice.Cpu, ResultFile = dir.File("eval.json") }.ToArgs();
            Assert.Equal(0, EngineCli.Run([.. args], new StringWriter(), new StringWriter(), TimeProvider.System));
            return EngineResult.Parse(File.ReadAllText(dir.File("eval.json")))!.Metrics!["perplexity"];
        }
        var (basePpl, fullPpl) = (Perplexity(Fixture), Perplexity(dir.File("full")));
        output.WriteLine($"held-out perplexity: base {basePpl:F4}, full fine-tune {fullPpl:F4}");
        Assert.True(fullPpl < basePpl, $"base {basePpl:F4}, full {fullPpl:F4}");

        // serve loads it and answers greedily as the engine's reference generator does on the same weights.
        const string Prompt = "Then Naomi said";
        string expected;
        using (var model = ModelLoading.Load(dir.File("full"), ScalarType.Float32, CPU))
        {
            var ids = new List<int> { ByteTokenizer.Bos };
            ids.AddRange(new ByteTokenizer().Encode(Prompt));
            var tokens = TextGenerator.Generate(model, ids, new GenerationOptions { MaxNewTokens = 12, StopTokenIds = [ByteTokenizer.Eos] }, CPU)
                .TakeWhile(t => t != ByteTokenizer.Eos);
            expected = new ByteTokenizer().Decode(tokens);
        }
        await using var host = await ServeHost.StartAsync(new ServeOptions
        {
            ModelDirectory = dir.File("full"), ServedName = "full", Host = "127.0.0.1", Port = 0, MaxConcurrency = 1, MaxContext = 128, Device = CPU,
        }, TimeProvider.System, _ => { });
        using var http = new HttpClient { BaseAddress = host.Address, Timeout = TimeSpan.FromSeconds(60) };
        using var response = await http.PostAsync("/v1/completions",
            new StringContent($$"""{"model":"full","prompt":"{{Prompt}}","max_tokens":12,"temperature":0}""", Encoding.UTF8, "application/json"));
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.True(response.IsSuccessStatusCode, body.ToJsonString());
        Assert.Equal(expected, (string?)body["choices"]![0]!["text"]);
    }

    [Fact]
    public void Does_exit_42_naming_method_for_full_on_a_quantized_base()
    {
        using var dir = new TempDir();
        using (var checkpoint = Checkpoint.Open(Fixture))
        {
            using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions { Method = QuantizationMethod.Rtn, Bits = 4, GroupSize = 64 });
            LowbitCheckpoint.Write(dir.File("q"), checkpoint, quantized);
        }
        File.WriteAllText(dir.File("train.txt"), "In the days when the judges ruled.\n");
        var request = Request(dir.File("q"), dir.File("train.txt"), dir.File("out")) with { ResultFile = dir.File("result.json") };

        var exit = EngineCli.Run([.. request.ToArgs()], new StringWriter(), new StringWriter(), TimeProvider.System);

        Assert.Equal(EngineExitCodes.BadInput, exit);
        var message = EngineResult.Parse(File.ReadAllText(dir.File("result.json")))!.Error!.Message;
        Assert.StartsWith("--method", message, StringComparison.Ordinal);
        Assert.Contains("qlora", message, StringComparison.Ordinal);
    }
}
