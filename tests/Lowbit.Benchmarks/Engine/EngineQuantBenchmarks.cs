using System.Diagnostics;
using System.Globalization;
using System.Text;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Benchmarks.Engine;

/// <summary>
/// <c>engine-quant</c>: CPU quantization throughput (parameters/s) of RTN, HQQ and GPTQ on a 4096×4096 weight-like
/// matrix and on the trained tiny-llama fixture, and the fixture's perplexity per method and width. Report:
/// engine-quant.md. Args: <c>--quick</c> uses a 1024×1024 matrix and widths 4 and 8 only.
/// </summary>
public sealed class EngineQuantBenchmarks : IBenchmarkSuite
{
    public string Name => "engine-quant";

    public Task RunAsync(string reportDir, string[] args)
    {
        var quick = args.Contains("--quick");
        var report = new StringBuilder();
        report.AppendLine("# engine-quant (CPU)");
        report.AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture, $"Machine: {Environment.ProcessorCount} logical CPUs, torch threads {torch.get_num_threads()}. Times are wall-clock, one run each.");
        report.AppendLine();
        MatrixThroughput(report, quick ? 1024 : 4096);
        var fixture = FindFixture();
        if (fixture is null)
        {
            report.AppendLine("Fixture tests/fixtures/tiny-llama not found (no model.safetensors): fixture rows skipped.");
        }
        else
        {
            FixtureTable(report, fixture, quick ? [8, 4] : [8, 4, 3, 2]);
        }
        var path = Path.Combine(reportDir, "engine-quant.md");
        File.WriteAllText(path, report.ToString());
        Console.WriteLine(report.ToString());
        return Task.CompletedTask;
    }

    private static void MatrixThroughput(StringBuilder report, int n)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(1);
        var w = torch.randn(n, n, generator: generator).mul(0.02);
        var mix = torch.randn(n, n, generator: generator).div(Math.Sqrt(n)).add(torch.eye(n));
        var x = torch.randn(2048, n, generator: generator).matmul(mix);
        report.AppendLine(CultureInfo.InvariantCulture, $"## {n}×{n} matrix, 4-bit, group 64");
        report.AppendLine();
        report.AppendLine("| method | seconds | parameters/s | relative weight error | relative output error |");
        report.AppendLine("|---|---:|---:|---:|---:|");
        var watch = Stopwatch.StartNew();
        using var hessian = new HessianAccumulator(n);
        hessian.Add(x.unsqueeze(0));
        var hessianSeconds = watch.Elapsed.TotalSeconds;
        var runs = new (string Name, Func<QuantizedTensor> Run)[]
        {
            ("rtn", () => Rtn.Quantize(w, new RtnOptions { Bits = 4, GroupSize = 64 })),
            ("hqq", () => Hqq.Quantize(w, new HqqOptions { Bits = 4, GroupSize = 64 })),
            ("gptq (+ Hessian of 2048 tokens)", () => Gptq.Quantize(w, hessian.Hessian, new GptqOptions { Bits = 4, GroupSize = 64 })),
        };
        foreach (var (name, run) in runs)
        {
            watch.Restart();
            using var q = run();
            var seconds = watch.Elapsed.TotalSeconds + (name.StartsWith("gptq", StringComparison.Ordinal) ? hessianSeconds : 0);
            using var inner = NewDisposeScope();
            var deq = q.Dequantize();
            var weightError = w.sub(deq).norm().item<float>() / w.norm().item<float>();
            var y = x.matmul(w.t());
            var outputError = y.sub(x.matmul(deq.t())).norm().item<float>() / y.norm().item<float>();
            report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {seconds:F2} | {(double)n * n / seconds:N0} | {weightError:F4} | {outputError:F4} |");
        }
        report.AppendLine();
    }

    private static void FixtureTable(StringBuilder report, string fixture, int[] widths)
    {
        using var checkpoint = Checkpoint.Open(fixture);
        var tokenizer = TokenizerLoader.Load(fixture);
        var (calibration, evaluation) = QuantizedEvaluation.Split(tokenizer, File.ReadAllText(Path.Combine(fixture, "eval.txt")), 16, 256);
        using (calibration)
        {
            var context = Math.Min(256, checkpoint.Config.MaxPositionEmbeddings);
            var baseline = QuantizedEvaluation.Perplexity(checkpoint, null, evaluation, context);
            report.AppendLine(CultureInfo.InvariantCulture, $"## tiny-llama fixture ({checkpoint.Config.ParameterCount:N0} parameters), group 64");
            report.AppendLine();
            report.AppendLine(CultureInfo.InvariantCulture,
                $"Perplexity on the second half of eval.txt ({evaluation.Count} tokens, disjoint windows of {context}, BOS first); GPTQ calibrates on the first half (16×{calibration.shape[1]} tokens). fp32: **{baseline:F4}**.");
            report.AppendLine();
            report.AppendLine("| method | bits | bits/weight | perplexity | vs fp32 | mean rel. error | quantize s | parameters/s |");
            report.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var method in new[] { QuantMethod.Rtn, QuantMethod.Hqq, QuantMethod.Gptq })
            {
                foreach (var bits in widths)
                {
                    var watch = Stopwatch.StartNew();
                    using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions
                    {
                        Method = method, Bits = bits, GroupSize = 64, Calibration = method == QuantMethod.Gptq ? calibration : null,
                    });
                    var seconds = watch.Elapsed.TotalSeconds;
                    var perplexity = QuantizedEvaluation.Perplexity(checkpoint, quantized, evaluation, context);
                    var parameters = quantized.Layers.Sum(l => l.Parameters);
                    report.AppendLine(CultureInfo.InvariantCulture,
                        $"| {method.ToString().ToLowerInvariant()} | {bits} | {quantized.BitsPerWeight:F3} | {perplexity:F4} | {(perplexity / baseline - 1) * 100:+0.00;-0.00}% | {quantized.MeanRelativeError:F4} | {seconds:F2} | {parameters / seconds:N0} |");
                }
            }
            report.AppendLine();
        }
    }

    private static string? FindFixture()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "tests", "fixtures", "tiny-llama");
            if (File.Exists(Path.Combine(candidate, "model.safetensors")))
            {
                return candidate;
            }
        }
        return null;
    }
}
