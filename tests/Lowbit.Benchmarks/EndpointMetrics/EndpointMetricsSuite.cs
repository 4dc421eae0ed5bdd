using System.Diagnostics;
using System.Globalization;
using System.Text;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Telemetry;

namespace Lowbit.Benchmarks.EndpointMetrics;

/// <summary>
/// What one pod scrape costs the operator besides the network: parsing a vLLM-sized /metrics page (every family of
/// engine-formats.md section 8, two served models) in full and filtered to the two series the scraper reads, then
/// reading the counters. Stopwatch scenario, one run on the machine at hand.
/// </summary>
public sealed class EndpointMetricsSuite : IBenchmarkSuite
{
    private static readonly double[] TtftBuckets = [.001, .005, .01, .02, .04, .06, .08, .1, .25, .5, .75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
    private static readonly double[] LatencyBuckets = [.3, .5, .8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];
    private static readonly double[] TokenBuckets = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

    public string Name => "endpoint-metrics";

    public async Task RunAsync(string reportDir, string[] args)
    {
        var page = VllmPage();
        var dialect = EngineMetricDialect.For(ServingRuntime.Vllm);
        var lines = page.Count(c => c == '\n');
        var full = Measure(() => PrometheusText.Parse(page).Samples.Count);
        var filtered = Measure(() => dialect.Read(PrometheusText.Parse(page, dialect.Wants), out _)!.GenerationTokens > 0 ? 1 : 0);

        var report = new StringBuilder()
            .AppendLine("# Endpoint metrics scrape: parsing")
            .AppendLine()
            .AppendLine(CultureInfo.InvariantCulture, $"Machine: {Environment.ProcessorCount} cores, .NET {Environment.Version}. One run each.")
            .AppendLine(CultureInfo.InvariantCulture, $"Page: vLLM-shaped, {page.Length / 1024.0:0.0} KiB, {lines:N0} lines.")
            .AppendLine()
            .AppendLine("| scenario | per page | throughput |")
            .AppendLine("|---|---|---|")
            .AppendLine(CultureInfo.InvariantCulture, $"| parse every sample | {full.TotalMicroseconds:0} µs | {page.Length / full.TotalSeconds / 1048576:0} MiB/s |")
            .AppendLine(CultureInfo.InvariantCulture, $"| parse the scraper's series + read counters | {filtered.TotalMicroseconds:0} µs | {page.Length / filtered.TotalSeconds / 1048576:0} MiB/s |");
        var path = Path.Combine(reportDir, "endpoint-metrics.md");
        await File.WriteAllTextAsync(path, report.ToString());
        Console.WriteLine(report.ToString());
        Console.WriteLine($"report: {path}");
    }

    /// <summary>Median time of one call over 9 batches, after a warm-up.</summary>
    private static TimeSpan Measure(Func<int> parse)
    {
        const int PerBatch = 200;
        var sink = 0;
        for (var i = 0; i < PerBatch; i++)
        {
            sink += parse();
        }

        var batches = new List<double>();
        for (var b = 0; b < 9; b++)
        {
            var watch = Stopwatch.StartNew();
            for (var i = 0; i < PerBatch; i++)
            {
                sink += parse();
            }

            batches.Add(watch.Elapsed.TotalSeconds / PerBatch);
        }

        GC.KeepAlive(sink);
        batches.Sort();
        return TimeSpan.FromSeconds(batches[batches.Count / 2]);
    }

    private static string VllmPage()
    {
        var page = new StringBuilder();
        string[] models = ["chat", "chat-lora"];
        void Family(string name, string type, Func<string, double> value, string extraLabels = "")
        {
            page.Append(CultureInfo.InvariantCulture, $"# HELP {name} {name} help text.\n# TYPE {name} {type}\n");
            foreach (var model in models)
            {
                page.Append(CultureInfo.InvariantCulture, $"{name}{{{extraLabels}model_name=\"{model}\"}} {value(model).ToString("0.0###", CultureInfo.InvariantCulture)}\n");
            }
        }

        void Histogram(string name, double[] buckets)
        {
            page.Append(CultureInfo.InvariantCulture, $"# HELP {name} {name} help text.\n# TYPE {name} histogram\n");
            foreach (var model in models)
            {
                for (var i = 0; i < buckets.Length; i++)
                {
                    page.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{le=\"{buckets[i].ToString(CultureInfo.InvariantCulture)}\",model_name=\"{model}\"}} {i * 3}.0\n");
                }

                page.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{le=\"+Inf\",model_name=\"{model}\"}} {buckets.Length * 3}.0\n");
                page.Append(CultureInfo.InvariantCulture, $"{name}_count{{model_name=\"{model}\"}} {buckets.Length * 3}.0\n");
                page.Append(CultureInfo.InvariantCulture, $"{name}_sum{{model_name=\"{model}\"}} 1234.5678\n");
            }
        }

        foreach (var gauge in new[] { "num_requests_running", "num_requests_waiting", "gpu_cache_usage_perc", "kv_cache_usage_perc" })
        {
            Family("vllm:" + gauge, "gauge", _ => 0.25);
        }

        foreach (var counter in new[] { "prompt_tokens_total", "generation_tokens_total", "num_preemptions_total", "prefix_cache_queries_total", "prefix_cache_hits_total" })
        {
            Family("vllm:" + counter, "counter", m => m.Length * 1000.0);
        }

        foreach (var reason in new[] { "stop", "length", "abort" })
        {
            Family("vllm:request_success_total", "counter", _ => 7, $"finished_reason=\"{reason}\",");
        }

        Histogram("vllm:time_to_first_token_seconds", TtftBuckets);
        foreach (var latency in new[] { "e2e_request_latency_seconds", "request_queue_time_seconds", "request_inference_time_seconds", "request_prefill_time_seconds", "request_decode_time_seconds" })
        {
            Histogram("vllm:" + latency, LatencyBuckets);
        }

        foreach (var perToken in new[] { "time_per_output_token_seconds", "inter_token_latency_seconds", "request_time_per_output_token_seconds" })
        {
            Histogram("vllm:" + perToken, LatencyBuckets);
        }

        foreach (var tokens in new[] { "request_prompt_tokens", "request_generation_tokens", "request_max_num_generation_tokens", "request_params_max_tokens", "iteration_tokens_total" })
        {
            Histogram("vllm:" + tokens, TokenBuckets);
        }

        return page.ToString();
    }
}
