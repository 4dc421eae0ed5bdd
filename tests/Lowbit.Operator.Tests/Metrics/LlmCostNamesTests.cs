using System.Text;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Telemetry;
using Lowbit.Operator.Tests.Reconcilers;
using Lowbit.Operator.Runtime.Tests.Support;

namespace Lowbit.Operator.Tests.Metrics;

/// <summary>The ecosystem names llm_cost_per_million_tokens and llm_total_cost next to ours, read back with the scraper's parser.</summary>
public sealed class LlmCostNamesTests
{
    [Fact]
    public async Task Does_export_llm_names_with_the_values_of_ours_and_accrue_total_cost_at_each_price()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
        var runtime = new RuntimeMetrics();
        var cost = new CostMetrics(runtime, time);
        var endpoint = Fixtures.Endpoint("chat");
        var placement = Fixtures.GpuPlacement(endpoint);
        cost.RecordEndpoint("ml", "chat", placement, replicas: 1);
        cost.EndpointUsdPerMillionTokens.WithLabels("ml", "chat").Set(0.42);
        time.Advance(TimeSpan.FromHours(2));
        cost.RecordEndpoint("ml", "chat", placement, replicas: 3);
        time.Advance(TimeSpan.FromMinutes(30));

        using var stream = new MemoryStream();
        await runtime.ExportAsync(stream, CancellationToken.None);
        var text = Encoding.UTF8.GetString(stream.ToArray());
        var parsed = PrometheusText.Parse(text);

        Assert.Equal(0, parsed.MalformedLines);
        Assert.Contains("# TYPE llm_total_cost counter", text, StringComparison.Ordinal);
        var total = Assert.Single(parsed.Samples, s => s.Name == CostMetrics.LlmTotalCostName);
        Assert.Equal((placement.HourlyUsd * 2) + (placement.HourlyUsd * 3 * 0.5), total.Value, 9);
        Assert.Equal("USD", total.Labels["currency"]);
        var perMillion = Assert.Single(parsed.Samples, s => s.Name == CostMetrics.LlmCostPerMillionTokensName);
        var ours = Assert.Single(parsed.Samples, s => s.Name == "lowbit_endpoint_usd_per_million_tokens");
        Assert.Equal(ours.Value, perMillion.Value);
        Assert.Equal(("ml", "chat"), (perMillion.Labels["namespace"], perMillion.Labels["endpoint"]));
    }
}
