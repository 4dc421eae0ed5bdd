using Lowbit.Operator.Telemetry;

namespace Lowbit.Operator.Tests.Metrics;

public sealed class EngineRatesTests
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 22, 12, 0, 0, TimeSpan.Zero);

    private static PodSample At(double seconds, double tokens, double? ttftSum = null, double? ttftCount = null) =>
        new(T0.AddSeconds(seconds), new EngineReading(tokens, ttftSum is { } s ? new HistogramTotals(s, ttftCount!.Value) : null));

    [Fact]
    public void Does_sum_tokens_per_second_over_pods_each_over_its_own_interval()
    {
        var rates = EngineRates.Compute(
        [
            (At(0, 1000), At(15, 4000)),
            (At(5, 200), At(15, 700)),
        ]);

        // 3000 tokens over 15 s + 500 over 10 s.
        Assert.Equal(200 + 50, rates!.TokensPerSecond, 9);
        Assert.Null(rates.TimeToFirstTokenSeconds);
    }

    [Fact]
    public void Does_count_the_whole_new_value_after_a_counter_reset()
    {
        // The pod restarted: 9000 → 0, then it generated 600.
        var rates = EngineRates.Compute([(At(0, 9000, 40, 100), At(15, 600, 1.5, 3))]);

        Assert.Equal(600 / 15.0, rates!.TokensPerSecond, 9);
        Assert.Equal(0.5, rates.TimeToFirstTokenSeconds!.Value, 9);
        Assert.Equal(600, EngineRates.Increase(9000, 600));
        Assert.Equal(400, EngineRates.Increase(600, 1000));
    }

    [Fact]
    public void Does_average_ttft_over_the_requests_of_the_interval_across_pods()
    {
        var rates = EngineRates.Compute(
        [
            (At(0, 0, 10, 50), At(15, 100, 11.2, 54)),
            (At(0, 0, 2, 10), At(15, 100, 2.8, 11)),
        ]);

        // (1.2 + 0.8) s over (4 + 1) requests.
        Assert.Equal(0.4, rates!.TimeToFirstTokenSeconds!.Value, 9);
    }

    [Fact]
    public void Does_treat_a_histogram_whose_sum_went_down_as_reset()
    {
        var grown = EngineRates.Increase(new HistogramTotals(4.8, 21), new HistogramTotals(0.3, 21));

        Assert.Equal(new HistogramTotals(0.3, 21), grown);
    }

    [Fact]
    public void Does_leave_ttft_unknown_when_no_request_got_a_first_token()
    {
        var rates = EngineRates.Compute([(At(0, 500, 3, 9), At(15, 500, 3, 9))]);

        Assert.Equal(0, rates!.TokensPerSecond);
        Assert.Null(rates.TimeToFirstTokenSeconds);
        Assert.Null(rates.UsdPerMillionTokens(4.5));
    }

    [Fact]
    public void Does_not_know_a_rate_without_an_interval()
    {
        Assert.Null(EngineRates.Compute([]));
        Assert.Null(EngineRates.Compute([(At(15, 0), At(15, 100))]));
    }

    [Fact]
    public void Does_price_a_million_tokens_from_the_hourly_cost()
    {
        var rates = new EndpointRates(TokensPerSecond: 500, TimeToFirstTokenSeconds: null);

        // 1.8 M tokens per hour at 3.6 USD/h: 2 USD per million.
        Assert.Equal(2.0, rates.UsdPerMillionTokens(3.6)!.Value, 12);
        Assert.Null(rates.UsdPerMillionTokens(null));
    }
}
