using System.Text;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Telemetry;
using Lowbit.Operator.Tests.Reconcilers;

namespace Lowbit.Operator.Tests.Metrics;

/// <summary>The per-object cost families written into the exposition, read back with the scraper's own parser.</summary>
public sealed class CostMetricsTests
{
    private readonly RuntimeMetrics _runtime = new();
    private readonly CostMetrics _cost;

    public CostMetricsTests() => _cost = new CostMetrics(_runtime);

    private async Task<(string Text, PrometheusParseResult Parsed)> ExportAsync()
    {
        using var stream = new MemoryStream();
        await _runtime.ExportAsync(stream, CancellationToken.None);
        var text = Encoding.UTF8.GetString(stream.ToArray());
        return (text, PrometheusText.Parse(text));
    }

    [Fact]
    public async Task Does_count_every_gpu_of_a_multi_node_group()
    {
        var endpoint = LeaderWorkerSetTests.Endpoint();
        var group = Controllers.Planning.Choose(Controllers.Planning.Inference(endpoint, null, Planner.ModelPresets.Llama31_405B, Planner.GpuCatalog.Default), 0)!;
        Assert.True(group.MultiNode);
        _cost.RecordEndpoint("ml", "big", group, replicas: 2);

        var (_, parsed) = await ExportAsync();

        // 2 groups × 2 nodes × 8 GPUs; the price is the whole group's.
        Assert.Equal(32, Assert.Single(parsed.Samples, s => s.Name == CostMetrics.GpusName).Value);
        Assert.Equal(2 * 16 * 3.85, Assert.Single(parsed.Samples, s => s.Name == CostMetrics.HourlyCostName).Value, 6);
    }

    [Fact]
    public async Task Does_export_cost_and_plan_series_with_absent_components_when_the_plan_lacks_them()
    {
        var endpoint = Fixtures.Endpoint("chat");
        var placement = Fixtures.GpuPlacement(endpoint);
        _cost.RecordEndpoint("ml", "chat", placement, replicas: 3);
        _cost.RecordPlan(InferenceEndpoint.KindName, "ml", "chat", placement);

        var (text, parsed) = await ExportAsync();

        Assert.Equal(0, parsed.MalformedLines);
        var hourly = Assert.Single(parsed.Samples, s => s.Name == CostMetrics.HourlyCostName);
        Assert.Equal(placement.HourlyUsd * 3, hourly.Value, 9);
        Assert.Equal(placement.NodeType.GpuModel, hourly.Labels["gpu"]);
        Assert.Equal(placement.GpusPerReplica * 3, Assert.Single(parsed.Samples, s => s.Name == CostMetrics.GpusName).Value);
        var plan = parsed.Samples.Where(s => s.Name == CostMetrics.PlanMemoryName).ToDictionary(s => s.Labels["component"], s => s.Value);
        Assert.Equal(placement.Option.PerDevice.Total.Bytes, plan["total"]);
        Assert.Equal(placement.Option.PerDevice.Weights.Bytes, plan["weights"]);
        Assert.DoesNotContain("optimizer", plan.Keys);
        Assert.DoesNotContain("gradients", plan.Keys);
        Assert.Contains("# TYPE lowbit_plan_memory_bytes gauge\n", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE controller_runtime_reconcile_total counter\n", text, StringComparison.Ordinal); // the registry's families come first
        Assert.Equal(_cost.EndpointHourlyUsd("ml", "chat"), hourly.Value);
    }

    [Fact]
    public async Task Does_drop_every_series_of_a_forgotten_object_and_move_the_gpu_label_with_the_placement()
    {
        var endpoint = Fixtures.Endpoint("chat");
        var one = Fixtures.GpuPlacement(endpoint);
        var two = Fixtures.GpuPlacement(endpoint, shards: 2);
        _cost.RecordEndpoint("ml", "chat", one, replicas: 1);
        _cost.RecordEndpoint("ml", "chat", two, replicas: 1);
        _cost.RecordPlan(InferenceEndpoint.KindName, "ml", "chat", two);
        _cost.RecordEndpoint("ml", "other", one, replicas: 1);

        var (_, parsed) = await ExportAsync();
        var gpus = parsed.Samples.Where(s => s.Name == CostMetrics.GpusName && s.Labels["endpoint"] == "chat").ToList();
        Assert.Equal(two.GpusPerReplica, Assert.Single(gpus).Value);

        _cost.Forget(InferenceEndpoint.KindName, "ml", "chat");
        (_, parsed) = await ExportAsync();
        Assert.DoesNotContain(parsed.Samples, s => s.Labels.TryGetValue("endpoint", out var e) && e == "chat");
        Assert.DoesNotContain(parsed.Samples, s => s.Name == CostMetrics.PlanMemoryName);
        Assert.Single(parsed.Samples, s => s.Name == CostMetrics.HourlyCostName && s.Labels["endpoint"] == "other");
        Assert.Equal([("ml", "other")], _cost.Endpoints);
    }

    [Fact]
    public void Does_escape_label_values_as_the_text_format_requires()
    {
        Assert.Equal("plain", CostMetrics.Escape("plain"));
        Assert.Equal("a\\\\b\\\"c\\nd", CostMetrics.Escape("a\\b\"c\nd"));
    }
}
