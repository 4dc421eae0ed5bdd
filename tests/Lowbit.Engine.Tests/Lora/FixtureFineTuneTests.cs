using Xunit.Abstractions;
using Lowbit.Engine.Evaluation;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Tokenization;
using Lowbit.Engine.Training;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>
/// Fine-tuning quality on the trained tiny-llama fixture (CPU). The held-out text is the second half of the
/// fixture's eval.txt (Ruth), scored as in <see cref="Quantization.FixtureQualityTests"/> (disjoint windows of 256, BOS
/// first); training sees only the first half. Numbers measured when these tests were written are in docs/finetune.md.
/// </summary>
public sealed class FixtureFineTuneTests(ITestOutputHelper output)
{
    /// <summary>The first half of eval.txt as a .txt dataset, and the second half's tokens (BOS first) for scoring.</summary>
    private static (string TrainText, IReadOnlyList<int> Held) Halves(string fixture, TempDir dir)
    {
        var text = File.ReadAllText(Path.Combine(fixture, "eval.txt"));
        var cut = text.IndexOf('\n', text.Length / 2) + 1;
        var path = dir.File("train.txt");
        File.WriteAllText(path, text[..cut]);
        var held = new List<int> { ByteTokenizer.Bos };
        held.AddRange(new ByteTokenizer().Encode(text[cut..]));
        return (path, held);
    }

    private static double Perplexity(string model, string? adapter, IReadOnlyList<int> tokens)
    {
        using var loaded = ModelLoading.Load(model, ScalarType.Float32, CPU);
        if (adapter is not null)
        {
            using var read = PeftAdapter.Read(adapter);
            LoraModel.Apply(loaded, read, CPU);
        }
        return PerplexityEvaluator.Evaluate(loaded, tokens, 256, 256, CPU).Perplexity;
    }

    private static FineTuneRequest Request(string baseModel, string dataset, string output, FineTuneMethod method) => new()
    {
        BaseModel = baseModel,
        Method = method,
        Dataset = dataset,
        DatasetFormat = DatasetFormat.Text,
        Out = output,
        R = 8,
        Alpha = 16,
        Dropout = 0,
        TargetModules = LoraSettings.AllTargets,
        SeqLength = 128,
        MicroBatch = 4,
        MaxSteps = 30,
        LearningRate = 3e-3,
        WarmupSteps = 3,
        EvalSplit = 0,
        Seed = 1,
        Device = ComputeDevice.Cpu,
    };

    [Fact]
    public void Does_lower_the_training_loss_of_lora_on_the_fixture()
    {
        using var dir = new TempDir();
        var fixture = TokenizerTests.FixtureDirectory;
        var (train, _) = Halves(fixture, dir);
        var losses = new List<double>();

        new FineTuner(Request(fixture, train, dir.File("adapter"), FineTuneMethod.Lora), fixture, e =>
        {
            if (e is TrainEvent t)
            {
                losses.Add(t.Loss);
            }
        }).Run();

        var first = losses.Take(3).Average();
        var last = losses.TakeLast(3).Average();
        output.WriteLine($"lora on the fixture: loss {first:F4} -> {last:F4} over {losses.Count} steps");
        Assert.True(last < 0.85 * first, $"loss {first:F4} -> {last:F4}");
    }

    [Fact]
    public void Does_recover_held_out_perplexity_of_the_2_bit_hqq_fixture_with_qlora()
    {
        using var dir = new TempDir();
        var fixture = TokenizerTests.FixtureDirectory;
        var (train, held) = Halves(fixture, dir);
        using (var checkpoint = Checkpoint.Open(fixture))
        {
            using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions { Method = QuantizationMethod.Hqq, Bits = 2, GroupSize = 64 });
            LowbitCheckpoint.Write(dir.File("hqq2"), checkpoint, quantized);
        }
        var fp = Perplexity(fixture, null, held);
        var before = Perplexity(dir.File("hqq2"), null, held);

        new FineTuner(Request(dir.File("hqq2"), train, dir.File("adapter"), FineTuneMethod.Qlora), dir.File("hqq2"), _ => { }).Run();
        var after = Perplexity(dir.File("hqq2"), dir.File("adapter"), held);

        var recovered = (before - after) / (before - fp);
        output.WriteLine($"fp {fp:F4}, 2-bit HQQ {before:F4}, + QLoRA {after:F4}: recovered {recovered:P1} of the gap");
        // Measured (docs/finetune.md): fp 3.3676, 2-bit HQQ 3.7006, + QLoRA 3.2617 (-11.9 %, 132 % of the gap: the
        // adapter also adapts to the held-out book's domain). Asserted with slack: at least 7 % lower and 80 % of the gap.
        Assert.True(after <= 0.93 * before && recovered >= 0.80, $"fp {fp:F4}, 2-bit HQQ {before:F4}, + QLoRA {after:F4}: recovered {recovered:P1} of the gap");
    }
}
