using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;

namespace Lowbit.Operator.Telemetry;

/// <summary>A histogram's running totals (its <c>_sum</c> and <c>_count</c> series).</summary>
public sealed record HistogramTotals(double Sum, double Count);

/// <summary>The counters read from one pod's <c>/metrics</c>: generated tokens and, where the runtime has it, the TTFT histogram totals.</summary>
public sealed record EngineReading(double GenerationTokens, HistogramTotals? TimeToFirstToken);

/// <summary>
/// Which series a serving runtime exposes for generated tokens and time to first token: our engine's
/// <see cref="EngineMetricNames"/>, vLLM's <c>vllm:</c> names, llama.cpp's <c>llamacpp:</c> names (no TTFT histogram).
/// </summary>
public sealed record EngineMetricDialect(string Runtime, string GenerationTokens, string? TimeToFirstToken)
{
    public static readonly EngineMetricDialect Lowbit = new("lowbit", EngineMetricNames.GenerationTokensTotal, EngineMetricNames.TimeToFirstTokenSeconds);

    public static readonly EngineMetricDialect Vllm = new("vllm", "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds");

    public static readonly EngineMetricDialect LlamaCpp = new("llamacpp", "llamacpp:tokens_predicted_total", null);

    public static EngineMetricDialect For(ServingRuntime runtime) => runtime switch
    {
        ServingRuntime.Vllm => Vllm,
        ServingRuntime.LlamaCpp => LlamaCpp,
        _ => Lowbit,
    };

    private string? TtftSum => TimeToFirstToken is null ? null : TimeToFirstToken + EngineMetricNames.SumSuffix;

    private string? TtftCount => TimeToFirstToken is null ? null : TimeToFirstToken + EngineMetricNames.CountSuffix;

    /// <summary>True for the series this dialect reads (the parser skips the rest without parsing their labels).</summary>
    public bool Wants(string name) => name == GenerationTokens || name == TtftSum || name == TtftCount;

    /// <summary>
    /// The reading in <paramref name="parsed"/>: each series summed over its label sets (vLLM labels by model and
    /// engine). Null, with <paramref name="error"/> saying why, when the token counter is missing or not finite.
    /// TTFT is null when the dialect has none or the page lacks its <c>_sum</c>/<c>_count</c>.
    /// </summary>
    public EngineReading? Read(PrometheusParseResult parsed, out string? error)
    {
        ArgumentNullException.ThrowIfNull(parsed);
        double? tokens = null, sum = null, count = null;
        foreach (var sample in parsed.Samples)
        {
            if (sample.Name == GenerationTokens)
            {
                tokens = (tokens ?? 0) + sample.Value;
            }
            else if (sample.Name == TtftSum)
            {
                sum = (sum ?? 0) + sample.Value;
            }
            else if (sample.Name == TtftCount)
            {
                count = (count ?? 0) + sample.Value;
            }
        }

        if (tokens is not { } generated)
        {
            error = $"no {GenerationTokens} series ({parsed.Samples.Count} wanted samples, {parsed.MalformedLines} malformed lines)";
            return null;
        }

        if (!double.IsFinite(generated) || generated < 0)
        {
            error = $"{GenerationTokens} is {generated}, not a counter value";
            return null;
        }

        error = null;
        var ttft = sum is { } s && count is { } c && double.IsFinite(s) && double.IsFinite(c) && s >= 0 && c >= 0 ? new HistogramTotals(s, c) : null;
        return new EngineReading(generated, ttft);
    }
}

/// <summary>One pod's reading and when it was taken (the scraper's clock).</summary>
public sealed record PodSample(DateTimeOffset At, EngineReading Reading);

/// <summary>
/// An endpoint's observed rates over one scrape interval: generated tokens per second summed over its pods, and the
/// mean time to first token of the requests that got their first token in the interval (null when there were none
/// or the runtime has no TTFT histogram).
/// </summary>
public sealed record EndpointRates(double TokensPerSecond, double? TimeToFirstTokenSeconds)
{
    /// <summary>USD per million generated tokens at <paramref name="hourlyUsd"/>; null when nothing was generated or the cost is unknown.</summary>
    public double? UsdPerMillionTokens(double? hourlyUsd) =>
        hourlyUsd is { } usd && TokensPerSecond > 0 ? usd / (TokensPerSecond * 3600) * 1e6 : null;
}

/// <summary>Rate maths over counter samples, with Prometheus's counter-reset rule (a value below the previous one means the process restarted from 0).</summary>
public static class EngineRates
{
    /// <summary>How much a counter grew from <paramref name="previous"/> to <paramref name="current"/>; after a reset, the whole current value.</summary>
    public static double Increase(double previous, double current) => current >= previous ? current - previous : current;

    /// <summary>The histogram's growth; a reset (count or sum going down) counts the current totals whole.</summary>
    public static HistogramTotals Increase(HistogramTotals previous, HistogramTotals current)
    {
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(current);
        return current.Count < previous.Count || current.Sum < previous.Sum
            ? current
            : new HistogramTotals(current.Sum - previous.Sum, current.Count - previous.Count);
    }

    /// <summary>
    /// The endpoint's rates from each pod's previous and current sample (pods seen for the first time have no
    /// interval yet and are not passed). Null when no pod has an interval: the rate is not known yet.
    /// </summary>
    public static EndpointRates? Compute(IEnumerable<(PodSample Previous, PodSample Current)> intervals)
    {
        ArgumentNullException.ThrowIfNull(intervals);
        var any = false;
        double tokensPerSecond = 0, ttftSum = 0, ttftCount = 0;
        foreach (var (previous, current) in intervals)
        {
            var seconds = (current.At - previous.At).TotalSeconds;
            if (seconds <= 0)
            {
                continue;
            }

            any = true;
            tokensPerSecond += Increase(previous.Reading.GenerationTokens, current.Reading.GenerationTokens) / seconds;
            if (previous.Reading.TimeToFirstToken is { } before && current.Reading.TimeToFirstToken is { } now)
            {
                var grown = Increase(before, now);
                ttftSum += grown.Sum;
                ttftCount += grown.Count;
            }
        }

        return any ? new EndpointRates(tokensPerSecond, ttftCount > 0 ? ttftSum / ttftCount : null) : null;
    }
}
