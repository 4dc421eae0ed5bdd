using System.Diagnostics;
using System.Globalization;
using System.Text;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Benchmarks.Engine;

/// <summary>
/// <c>make bench</c> suite <c>engine-serve</c> (CPU): 16 requests arriving at once at the serve scheduler (no HTTP)
/// on the tiny-llama fixture, greedy, through three backends: the old server (<see cref="DecodeBatch"/>, one request's
/// prefill chunk at a time), <see cref="FastDecodeBackend"/> with one-at-a-time prefill, and
/// <see cref="FastDecodeBackend"/> with batched prefill (the server's path). Reports time to first token (p50, p99,
/// max), the time until every request has finished and the output tokens per second, each the median of 5 runs.
/// Writes engine-serve.md.
/// </summary>
public sealed class ServeSchedulerBenchmarkSuite : IBenchmarkSuite
{
    private const int Requests = 16;
    private const int PromptTokens = 96;
    private const int NewTokens = 16;
    private const int MaxContext = 256;

    public string Name => "engine-serve";

    public Task RunAsync(string reportDir, string[] args)
    {
        var fixture = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "fixtures", "tiny-llama"));
        if (!Directory.Exists(fixture))
        {
            fixture = Path.Combine(Directory.GetCurrentDirectory(), "tests", "fixtures", "tiny-llama");
        }
        var text = File.ReadAllText(Path.Combine(fixture, "eval.txt"));
        var bytes = new ByteTokenizer();
        var prompts = Enumerable.Range(0, Requests)
            .Select(i => new[] { ByteTokenizer.Bos }.Concat(bytes.Encode(text.Substring(i * 300, 200)).Take(PromptTokens - 1)).ToArray()).ToArray();
        var report = new StringBuilder();
        report.AppendLine("# serve scheduler on CPU: 16 simultaneous arrivals (tiny-llama fixture)").AppendLine();
        report.AppendLine(string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessorCount} logical CPUs, torch threads {get_num_threads()}; {Requests} requests submitted at once, {PromptTokens}-token prompts, {NewTokens} new tokens greedy, --max-concurrency {Requests}, prefill budget 256 tokens per iteration; each figure the median of 5 runs after a warm-up. Machine load average at start: {LoadAverage()}.")).AppendLine();
        report.AppendLine("| backend | prefill | TTFT p50 ms | TTFT p99 ms | TTFT max ms | all done ms | output tokens/s |").AppendLine("|---|---|---|---|---|---|---|");
        using var checkpoint = Checkpoint.Open(fixture);
        (string Backend, string Prefill, Func<Lowbit.Engine.Network.LlamaForCausalLM, IDecodeBackend> Make)[] configs =
        [
            ("DecodeBatch (before)", "one request at a time", m => new DecodeBatch(m, Requests, MaxContext, CPU)),
            ("FastDecodeBackend", "one request at a time", m => new OneAtATime(new FastDecodeBackend(m, Requests, MaxContext, CPU, null))),
            ("FastDecodeBackend", "batched across requests", m => new FastDecodeBackend(m, Requests, MaxContext, CPU, null)),
        ];
        foreach (var (backend, prefill, make) in configs)
        {
            using var model = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
            model.eval();
            using var batch = make(model);
            Run(batch, prompts);
            var runs = Enumerable.Range(0, 5).Select(_ => Run(batch, prompts)).ToArray();
            double Median(Func<Timing, double> field) => runs.Select(field).Order().ElementAt(runs.Length / 2);
            var best = new Timing(Median(r => r.TtftP50), Median(r => r.TtftP99), Median(r => r.TtftMax), Median(r => r.AllDoneMs));
            report.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {backend} | {prefill} | {best.TtftP50:F0} | {best.TtftP99:F0} | {best.TtftMax:F0} | {best.AllDoneMs:F0} | {Requests * NewTokens / (best.AllDoneMs / 1000):F0} |"));
        }
        File.WriteAllText(Path.Combine(reportDir, "engine-serve.md"), report.ToString());
        Console.Write(report);
        return Task.CompletedTask;
    }

    private sealed record Timing(double TtftP50, double TtftP99, double TtftMax, double AllDoneMs);

    private static Timing Run(IDecodeBackend batch, int[][] prompts)
    {
        var metrics = new ServeMetrics("bench");
        using var scheduler = new ServeScheduler(batch, new TokenIdTokenizer(260, ByteTokenizer.Bos, ByteTokenizer.Eos),
            new SchedulerOptions { MaxConcurrency = Requests, MaxContext = MaxContext, PrefillChunk = 256 }, metrics, TimeProvider.System, ex => Console.Error.WriteLine(ex));
        var watch = Stopwatch.StartNew();
        var requests = prompts.Select(p => scheduler.Submit(new RequestOptions
        {
            Prompt = p,
            MaxTokens = NewTokens,
            Sampling = new SamplingParams { Temperature = 0 },
            IgnoreEos = true,
        })).ToArray();
        var firsts = requests.Select(async r =>
        {
            double? first = null;
            await foreach (var e in r.Events.ReadAllAsync())
            {
                first ??= e.CompletionTokens > 0 ? watch.Elapsed.TotalMilliseconds : null;
            }
            return first ?? double.NaN;
        }).ToArray();
        var ttft = Task.WhenAll(firsts).GetAwaiter().GetResult().Order().ToArray();
        var done = watch.Elapsed.TotalMilliseconds;
        return new Timing(ttft[ttft.Length / 2], ttft[(int)Math.Ceiling(0.99 * ttft.Length) - 1], ttft[^1], done);
    }

    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";

    /// <summary>A backend whose prefill the scheduler runs one request's chunk at a time (the server before batched prefill).</summary>
    private sealed class OneAtATime(IDecodeBackend inner) : IDecodeBackend
    {
        public int Slots => inner.Slots;

        public int MaxContext => inner.MaxContext;

        public long CacheBytes => inner.CacheBytes;

        public int ScratchPosition => inner.ScratchPosition;

        public Tensor Prefill(int slot, IReadOnlyList<int> tokens, int start) => inner.Prefill(slot, tokens, start);

        public Tensor Step(long[] tokens, long[] positions, int rows, int attend) => inner.Step(tokens, positions, rows, attend);

        public void Dispose() => inner.Dispose();
    }
}
