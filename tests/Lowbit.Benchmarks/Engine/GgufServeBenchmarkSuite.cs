using System.Diagnostics;
using System.Globalization;
using System.Text;
using LLama;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Benchmarks.Engine;

/// <summary>
/// <c>make bench</c> suite <c>engine-gguf</c> (CPU): the serve verb's two decode backends on the tiny-llama fixture,
/// same prompts, same greedy driver loop (prefill every prompt, then one batched decode step per token):
/// TorchSharp (<see cref="DecodeBatch"/>, the 16-bit weights in float32) against llama.cpp
/// (<see cref="LlamaCppBackend"/>) on our Q8_0 and Q4_K GGUF exports, at 1 and 4 concurrent sequences.
/// Writes engine-gguf.md.
/// </summary>
public sealed class GgufServeBenchmarkSuite : IBenchmarkSuite
{
    private const int MaxContext = 256;
    private const int NewTokens = 64;

    public string Name => "engine-gguf";

    public Task RunAsync(string reportDir, string[] args)
    {
        var fixture = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "fixtures", "tiny-llama"));
        if (!Directory.Exists(fixture))
        {
            fixture = Path.Combine(Directory.GetCurrentDirectory(), "tests", "fixtures", "tiny-llama");
        }
        var work = Directory.CreateTempSubdirectory("lowbit-gguf-bench");
        try
        {
            var tokenizer = new ByteTokenizer();
            var text = File.ReadAllText(Path.Combine(fixture, "eval.txt"));
            // Four 48-token prompts from eval.txt (BOS + 47 bytes), the same for every backend.
            var prompts = Enumerable.Range(0, 4).Select(i => new[] { ByteTokenizer.Bos }.Concat(tokenizer.Encode(text.Substring(i * 500, 200)).Take(47)).ToArray()).ToArray();
            var report = new StringBuilder();
            report.AppendLine("# serve backends on CPU (tiny-llama fixture, 3.28M parameters)").AppendLine();
            report.AppendLine(string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessorCount} logical CPUs, torch threads {get_num_threads()}, llama.cpp threads {Environment.ProcessorCount}; 48-token prompts, {NewTokens} new tokens greedy, best of 3. Machine load average at start: {LoadAverage()}.")).AppendLine();
            report.AppendLine("| backend | weights | streams | prefill (ms, all prompts) | decode tokens/s |").AppendLine("|---|---|---|---|---|");

            using (var checkpoint = Checkpoint.Open(fixture))
            using (var model = ModelIo.Load(checkpoint, ScalarType.Float32, CPU))
            {
                foreach (var streams in new[] { 1, 4 })
                {
                    using var batch = new DecodeBatch(model, streams, MaxContext, CPU);
                    report.AppendLine(Row("TorchSharp", "F16 → F32", streams, Best(batch, prompts[..streams])));
                }
            }
            foreach (var type in new[] { GgmlType.Q8_0, GgmlType.Q4_K })
            {
                var path = Export(fixture, work.FullName, type);
                foreach (var streams in new[] { 1, 4 })
                {
                    using var weights = LLamaWeights.LoadFromFile(LlamaCppBackend.ContextParameters(path, streams, MaxContext, 256));
                    using var backend = new LlamaCppBackend(weights, path, streams, MaxContext, 256);
                    report.AppendLine(Row("llama.cpp (LLamaSharp 0.30)", $"GGUF {type}", streams, Best(backend, prompts[..streams])));
                }
            }
            File.WriteAllText(Path.Combine(reportDir, "engine-gguf.md"), report.ToString());
            Console.Write(report);
        }
        finally
        {
            work.Delete(recursive: true);
        }
        return Task.CompletedTask;
    }

    private static string Export(string fixture, string dir, GgmlType type)
    {
        using var checkpoint = Checkpoint.Open(fixture);
        string Read(string file) => File.ReadAllText(Path.Combine(fixture, file));
        var tensors = checkpoint.TensorNames.Order(StringComparer.Ordinal)
            .Select(n => new KeyValuePair<string, Func<Tensor>>(n, () => checkpoint.Load(n, ScalarType.Float32)));
        var path = Path.Combine(dir, $"model-{type}.gguf");
        GgufLlamaExport.Write(path, Read("config.json"), Read("tokenizer.json"), Read("tokenizer_config.json"), QuantizeVerb.Ordered(tensors), type);
        return path;
    }

    private static (double PrefillMs, double TokensPerSecond) Best(IDecodeBackend backend, int[][] prompts)
    {
        var best = (PrefillMs: double.MaxValue, TokensPerSecond: 0.0);
        for (var run = 0; run < 3; run++)
        {
            var (prefill, tps) = Once(backend, prompts);
            best = (Math.Min(best.PrefillMs, prefill), Math.Max(best.TokensPerSecond, tps));
        }
        return best;
    }

    private static (double PrefillMs, double TokensPerSecond) Once(IDecodeBackend backend, int[][] prompts)
    {
        var rows = prompts.Length;
        var next = new long[rows];
        var positions = new long[rows];
        var watch = Stopwatch.StartNew();
        for (var r = 0; r < rows; r++)
        {
            using var scope = NewDisposeScope();
            next[r] = backend.Prefill(r, prompts[r], 0).argmax(-1).item<long>();
            positions[r] = prompts[r].Length;
        }
        var prefill = watch.Elapsed.TotalMilliseconds;
        watch.Restart();
        for (var step = 1; step < NewTokens; step++)
        {
            using var scope = NewDisposeScope();
            var attend = (int)Math.Min(MaxContext, (positions.Max() + 1 + 63) / 64 * 64);
            var picked = backend.Step(next, positions, rows, attend).argmax(-1).data<long>().ToArray();
            for (var r = 0; r < rows; r++)
            {
                next[r] = picked[r];
                positions[r]++;
            }
        }
        return (prefill, rows * (NewTokens - 1) / watch.Elapsed.TotalSeconds);
    }

    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";

    private static string Row(string backend, string weights, int streams, (double PrefillMs, double TokensPerSecond) result) =>
        string.Create(CultureInfo.InvariantCulture, $"| {backend} | {weights} | {streams} | {result.PrefillMs:F1} | {result.TokensPerSecond:F0} |");
}
