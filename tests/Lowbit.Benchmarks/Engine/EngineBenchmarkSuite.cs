using System.Diagnostics;
using System.Globalization;
using System.Text;
using Lowbit.Engine.Evaluation;
using Lowbit.Engine.Generation;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Benchmarks.Engine;

/// <summary>
/// <c>make bench</c> suite <c>engine</c> (CPU): on the trained tiny-llama fixture, checkpoint load time, perplexity
/// throughput (tokens/s through the model) and greedy decode tokens/s at batch 1 with the KV cache. Writes engine.md.
/// GPU numbers come from src/Lowbit.Engine/gpu/bench.sh (see the README).
/// </summary>
public sealed class EngineBenchmarkSuite : IBenchmarkSuite
{
    public string Name => "engine";

    public Task RunAsync(string reportDir, string[] args)
    {
        var fixture = FindFixture();
        var report = new StringBuilder();
        report.AppendLine("# engine (CPU, tiny-llama fixture, 3.28M parameters)").AppendLine();
        report.AppendLine($"threads: {get_num_threads()}, {Environment.ProcessorCount} logical CPUs").AppendLine();
        report.AppendLine("| measurement | value |").AppendLine("|---|---|");

        var load = Stopwatch.StartNew();
        using var checkpoint = Checkpoint.Open(fixture);
        using var model = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        report.AppendLine(Row("checkpoint load (F16 → F32)", $"{load.Elapsed.TotalMilliseconds:F0} ms"));

        var tokenizer = new ByteTokenizer();
        var tokens = new List<int> { ByteTokenizer.Bos };
        tokens.AddRange(tokenizer.Encode(File.ReadAllText(Path.Combine(fixture, "eval.txt"))).Take(2047));
        var eval = PerplexityEvaluator.Evaluate(model, tokens, 256, 256, CPU);
        report.AppendLine(Row("perplexity, first 2048 tokens of eval.txt (context 256, stride 256)", $"{eval.Perplexity:F4}"));
        report.AppendLine(Row("prefill throughput (eval)", $"{eval.TokensPerSecond:F0} tokens/s"));

        var prompt = tokens.Take(64).ToArray();
        var best = 0.0;
        for (var run = 0; run < 3; run++)
        {
            var watch = Stopwatch.StartNew();
            var count = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 64 }, CPU).Count();
            best = Math.Max(best, count / watch.Elapsed.TotalSeconds);
        }
        report.AppendLine(Row("greedy decode, batch 1, 64-token prompt, 64 new tokens (best of 3)", $"{best:F0} tokens/s"));

        var path = Path.Combine(reportDir, "engine.md");
        File.WriteAllText(path, report.ToString());
        Console.Write(report);
        return Task.CompletedTask;
    }

    private static string Row(string name, string value) => string.Create(CultureInfo.InvariantCulture, $"| {name} | {value} |");

    private static string FindFixture()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Operator.sln")))
        {
            dir = dir.Parent;
        }
        return Path.Combine(dir?.FullName ?? Directory.GetCurrentDirectory(), "tests", "fixtures", "tiny-llama");
    }
}
