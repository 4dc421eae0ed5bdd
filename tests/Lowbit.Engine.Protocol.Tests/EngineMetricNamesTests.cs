using System.Text.RegularExpressions;
using Lowbit.Engine.Protocol;

namespace Lowbit.Engine.Protocol.Tests;

public partial class EngineMetricNamesTests
{
    [Fact]
    public void Does_name_every_series_like_vllm_with_the_lowbit_prefix()
    {
        Assert.Equal(
            ["generation_tokens_total", "prompt_tokens_total", "time_to_first_token_seconds", "e2e_request_latency_seconds", "num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"],
            EngineMetricNames.All.Select(n => n[EngineMetricNames.Prefix.Length..]));
        Assert.All(EngineMetricNames.All, n =>
        {
            Assert.StartsWith("lowbit:", n, StringComparison.Ordinal);
            Assert.Matches(MetricName(), n);
        });
    }

    [Fact]
    public void Does_use_vllms_histogram_buckets()
    {
        // engine-formats.md section 8 (vLLM loggers.py).
        Assert.Equal([.001, .005, .01, .02, .04, .06, .08, .1, .25, .5, .75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560], EngineMetricNames.TimeToFirstTokenBuckets);
        Assert.Equal([.3, .5, .8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680], EngineMetricNames.E2eRequestLatencyBuckets);
    }

    [GeneratedRegex("^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
    private static partial Regex MetricName();
}
