using System.Globalization;
using System.Text;
using Lowbit.Engine.Protocol;

namespace Lowbit.Engine.Serving;

/// <summary>
/// The serve verb's Prometheus series, exactly <see cref="EngineMetricNames"/> (vLLM's names with the
/// <c>lowbit:</c> prefix and vLLM's buckets), each with the one label <c>model_name</c>; rendered in the text
/// exposition format 0.0.4.
/// </summary>
public sealed class ServeMetrics
{
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    private readonly Lock _gate = new();
    private readonly string _label;
    private readonly Histogram _ttft = new(EngineMetricNames.TimeToFirstTokenBuckets);
    private readonly Histogram _e2e = new(EngineMetricNames.E2eRequestLatencyBuckets);
    private long _generationTokens;
    private long _promptTokens;

    public ServeMetrics(string servedName)
    {
        _label = "{" + EngineMetricNames.ModelNameLabel + "=\"" + Escape(servedName) + "\"";
    }

    public int Running { get; set; }

    public int Waiting { get; set; }

    public double KvCacheUsage { get; set; }

    public long GenerationTokens => Interlocked.Read(ref _generationTokens);

    public long PromptTokens => Interlocked.Read(ref _promptTokens);

    public void AddGenerationTokens(long count) => Interlocked.Add(ref _generationTokens, count);

    public void AddPromptTokens(long count) => Interlocked.Add(ref _promptTokens, count);

    public void ObserveTimeToFirstToken(double seconds)
    {
        lock (_gate)
        {
            _ttft.Observe(seconds);
        }
    }

    public void ObserveE2eLatency(double seconds)
    {
        lock (_gate)
        {
            _e2e.Observe(seconds);
        }
    }

    public string Render()
    {
        var text = new StringBuilder();
        Family(text, EngineMetricNames.GenerationTokensTotal, "counter", "Number of generation tokens processed.");
        Sample(text, EngineMetricNames.GenerationTokensTotal, "", GenerationTokens);
        Family(text, EngineMetricNames.PromptTokensTotal, "counter", "Number of prefill tokens processed.");
        Sample(text, EngineMetricNames.PromptTokensTotal, "", PromptTokens);
        lock (_gate)
        {
            Family(text, EngineMetricNames.TimeToFirstTokenSeconds, "histogram", "Histogram of time to first token in seconds.");
            _ttft.Render(text, EngineMetricNames.TimeToFirstTokenSeconds, this);
            Family(text, EngineMetricNames.E2eRequestLatencySeconds, "histogram", "Histogram of e2e request latency in seconds.");
            _e2e.Render(text, EngineMetricNames.E2eRequestLatencySeconds, this);
        }
        Family(text, EngineMetricNames.NumRequestsRunning, "gauge", "Number of requests in model execution batches.");
        Sample(text, EngineMetricNames.NumRequestsRunning, "", Running);
        Family(text, EngineMetricNames.NumRequestsWaiting, "gauge", "Number of requests waiting to be processed.");
        Sample(text, EngineMetricNames.NumRequestsWaiting, "", Waiting);
        Family(text, EngineMetricNames.KvCacheUsagePerc, "gauge", "KV-cache usage. 1 means 100 percent usage.");
        Sample(text, EngineMetricNames.KvCacheUsagePerc, "", KvCacheUsage);
        return text.ToString();
    }

    private static void Family(StringBuilder text, string name, string type, string help) =>
        text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n')
            .Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');

    private void Sample(StringBuilder text, string name, string extraLabels, double value) =>
        text.Append(name).Append(_label).Append(extraLabels).Append("} ").Append(Format(value)).Append('\n');

    private static string Format(double value) => double.IsPositiveInfinity(value) ? "+Inf" : value.ToString("R", CultureInfo.InvariantCulture);

    private static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal)
        .Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private sealed class Histogram(IReadOnlyList<double> bounds)
    {
        private readonly long[] _counts = new long[bounds.Count];
        private long _count;
        private double _sum;

        public void Observe(double value)
        {
            for (var i = 0; i < bounds.Count; i++)
            {
                if (value <= bounds[i])
                {
                    _counts[i]++;
                }
            }
            _count++;
            _sum += value;
        }

        public void Render(StringBuilder text, string name, ServeMetrics owner)
        {
            for (var i = 0; i < bounds.Count; i++)
            {
                owner.Sample(text, name + EngineMetricNames.BucketSuffix, ",le=\"" + Format(bounds[i]) + "\"", _counts[i]);
            }
            owner.Sample(text, name + EngineMetricNames.BucketSuffix, ",le=\"+Inf\"", _count);
            owner.Sample(text, name + EngineMetricNames.SumSuffix, "", _sum);
            owner.Sample(text, name + EngineMetricNames.CountSuffix, "", _count);
        }
    }
}
