namespace Lowbit.Engine.Protocol;

/// <summary>
/// What <c>lowbit-engine serve</c> exposes on <c>GET /metrics</c> (Prometheus text exposition format 0.0.4,
/// content type <c>text/plain; version=0.0.4; charset=utf-8</c>), and what the operator scrapes from serving pods.
/// The names are vLLM's with the prefix <c>lowbit:</c> instead of <c>vllm:</c>, so vLLM dashboards work with a
/// prefix swap. Every series carries the label <c>model_name</c> (the served name, <c>--served-name</c>); no
/// other labels (no request ids, no pod names). The serve verb must emit exactly these, with these types, units
/// and buckets:
/// <list type="table">
/// <item><term><see cref="GenerationTokensTotal"/></term><description>counter: decode (output) tokens generated since the process started.</description></item>
/// <item><term><see cref="PromptTokensTotal"/></term><description>counter: prompt (prefill) tokens processed since the process started.</description></item>
/// <item><term><see cref="TimeToFirstTokenSeconds"/></term><description>histogram (<c>_bucket{le}</c>, <c>_sum</c>, <c>_count</c>): seconds from a request's arrival to its first output token, buckets <see cref="TimeToFirstTokenBuckets"/>; one observation per request that produced a token.</description></item>
/// <item><term><see cref="E2eRequestLatencySeconds"/></term><description>histogram: seconds from a request's arrival to its last token, buckets <see cref="E2eRequestLatencyBuckets"/>; one observation per finished request.</description></item>
/// <item><term><see cref="NumRequestsRunning"/></term><description>gauge: requests being decoded now.</description></item>
/// <item><term><see cref="NumRequestsWaiting"/></term><description>gauge: requests queued (over <c>--max-concurrency</c>).</description></item>
/// <item><term><see cref="KvCacheUsagePerc"/></term><description>gauge: KV cache in use, 0..1 (1 means 100 percent).</description></item>
/// </list>
/// Counters only increase while the process lives (a restart resets them to 0; the scraper handles resets).
/// The names given here are the full series names: counters already end in <c>_total</c>; a histogram's series are
/// <c>&lt;name&gt;_bucket</c>, <c>&lt;name&gt;_sum</c> and <c>&lt;name&gt;_count</c>.
/// </summary>
public static class EngineMetricNames
{
    public const string Prefix = "lowbit:";

    /// <summary>The one label every series carries: the served model name.</summary>
    public const string ModelNameLabel = "model_name";

    public const string GenerationTokensTotal = Prefix + "generation_tokens_total";

    public const string PromptTokensTotal = Prefix + "prompt_tokens_total";

    public const string TimeToFirstTokenSeconds = Prefix + "time_to_first_token_seconds";

    public const string E2eRequestLatencySeconds = Prefix + "e2e_request_latency_seconds";

    public const string NumRequestsRunning = Prefix + "num_requests_running";

    public const string NumRequestsWaiting = Prefix + "num_requests_waiting";

    public const string KvCacheUsagePerc = Prefix + "kv_cache_usage_perc";

    /// <summary>Suffix of a histogram's sum series.</summary>
    public const string SumSuffix = "_sum";

    /// <summary>Suffix of a histogram's count series.</summary>
    public const string CountSuffix = "_count";

    /// <summary>Suffix of a histogram's cumulative bucket series (label <c>le</c>, the last one <c>+Inf</c>).</summary>
    public const string BucketSuffix = "_bucket";

    /// <summary>vLLM's time-to-first-token buckets (seconds), upper bounds before <c>+Inf</c>.</summary>
    public static IReadOnlyList<double> TimeToFirstTokenBuckets { get; } =
        [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0];

    /// <summary>vLLM's end-to-end request latency buckets (seconds), upper bounds before <c>+Inf</c>.</summary>
    public static IReadOnlyList<double> E2eRequestLatencyBuckets { get; } =
        [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0];

    /// <summary>Every series family the serve verb emits (histograms by base name).</summary>
    public static IReadOnlyList<string> All { get; } =
    [
        GenerationTokensTotal, PromptTokensTotal, TimeToFirstTokenSeconds, E2eRequestLatencySeconds,
        NumRequestsRunning, NumRequestsWaiting, KvCacheUsagePerc,
    ];
}
