using System.Collections.Concurrent;
using System.Globalization;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Prometheus;

namespace Lowbit.Operator.Telemetry;

/// <summary>
/// Cost and fit gauges per resource, on the operator's registry. Labels are bounded by the number of custom
/// resources (namespace, name, GPU model, memory component): never pod names. The four families every object has
/// (hourly cost, GPUs, estimated USD per million tokens, planned memory) are kept here as plain values and written
/// into <c>/metrics</c> by <see cref="RuntimeMetrics.AddFamilies"/>: as prometheus-net children they cost ~0.5 KB of
/// heap per series, 45 MiB at 10,000 endpoints. Observed gauges (scraped pods only) stay prometheus-net metrics.
/// </summary>
public sealed class CostMetrics
{
    public static readonly IReadOnlyList<string> MemoryComponents = ["weights", "kv_cache", "activations", "optimizer", "gradients", "overhead", "total"];

    public const string HourlyCostName = "lowbit_endpoint_hourly_cost_usd";
    public const string GpusName = "lowbit_endpoint_gpus";
    public const string EstimatedUsdPerMillionTokensName = "lowbit_endpoint_estimated_usd_per_million_tokens";
    public const string PlanMemoryName = "lowbit_plan_memory_bytes";

    /// <summary>Ecosystem name (LLM cost exporters, OpenCost-style) of <c>lowbit_endpoint_usd_per_million_tokens</c>: same value, plus <c>currency="USD"</c>.</summary>
    public const string LlmCostPerMillionTokensName = "llm_cost_per_million_tokens";

    /// <summary>Ecosystem name of the USD an endpoint's desired replicas have cost at catalog price since this operator began tracking it (a counter).</summary>
    public const string LlmTotalCostName = "llm_total_cost";

    private readonly TimeProvider _time;

    private readonly ConcurrentDictionary<(string Ns, string Name), EndpointCost> _endpoints = new();
    private readonly ConcurrentDictionary<(string Kind, string Ns, string Name), long[]> _plans = new();

    public CostMetrics(RuntimeMetrics runtime, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        _time = time ?? TimeProvider.System;
        var f = runtime.Factory;
        EndpointUsdPerMillionTokens = f.CreateGauge("lowbit_endpoint_usd_per_million_tokens", "USD per million output tokens from the throughput observed on the engine's /metrics", ["namespace", "endpoint"]);
        EndpointTimeToFirstToken = f.CreateGauge("lowbit_endpoint_time_to_first_token_seconds", "Mean time to first token over the last scrape interval, from the engine's histogram", ["namespace", "endpoint"]);
        EndpointTokensPerSecond = f.CreateGauge("lowbit_endpoint_tokens_per_second", "Generated tokens per second across an endpoint's pods over the last scrape interval", ["namespace", "endpoint"]);
        EndpointScrapeErrors = f.CreateCounter("lowbit_endpoint_scrape_errors_total", "Failed scrapes of an endpoint's serving pods' /metrics (unreachable, timeout, HTTP error, missing or bad counters)", ["namespace", "endpoint"]);
        JobGpuHours = f.CreateCounter("lowbit_job_gpu_hours_total", "GPU-hours consumed by a QuantizedModel's or FineTuneJob's engine Job", ["kind", "namespace", "name"]);
        runtime.AddFamilies(WriteAsync);
    }

    public Gauge EndpointUsdPerMillionTokens { get; }

    public Gauge EndpointTimeToFirstToken { get; }

    public Gauge EndpointTokensPerSecond { get; }

    public Counter EndpointScrapeErrors { get; }

    public Counter JobGpuHours { get; }

    /// <summary>The GPU label value of a placement: the GPU model, or <c>cpu</c>.</summary>
    public static string GpuLabel(WorkloadPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        return placement.OnGpu ? placement.NodeType.GpuModel : "cpu";
    }

    public void RecordEndpoint(string ns, string name, WorkloadPlacement placement, int replicas)
    {
        ArgumentNullException.ThrowIfNull(placement);
        var perMillion = placement.Option.Throughput.UsdPerMillionTokens;
        var now = _time.GetUtcNow();
        _endpoints.AddOrUpdate((ns, name),
            _ => new EndpointCost(GpuLabel(placement), placement.HourlyUsd * replicas, placement.GpusPerGroup * replicas,
                double.IsFinite(perMillion) ? perMillion : null, now, 0),
            (_, previous) => new EndpointCost(GpuLabel(placement), placement.HourlyUsd * replicas, placement.GpusPerGroup * replicas,
                double.IsFinite(perMillion) ? perMillion : null, now, previous.AccruedAt(now)));
    }

    /// <summary>The hourly USD last recorded for an endpoint's desired replicas (<see cref="RecordEndpoint"/>), or null.</summary>
    public double? EndpointHourlyUsd(string ns, string name) =>
        _endpoints.TryGetValue((ns, name), out var cost) ? cost.HourlyUsd : null;

    /// <summary>The endpoints (namespace, name) with cost series, for sweeping the ones deleted.</summary>
    public IReadOnlyCollection<(string Ns, string Name)> Endpoints => [.. _endpoints.Keys];

    /// <summary>Drops the gauges observed from an endpoint's pods (throughput, TTFT, USD per million tokens).</summary>
    public void ForgetObserved(string ns, string name)
    {
        EndpointTokensPerSecond.RemoveLabelled(ns, name);
        EndpointTimeToFirstToken.RemoveLabelled(ns, name);
        EndpointUsdPerMillionTokens.RemoveLabelled(ns, name);
    }

    /// <summary>
    /// Records the plan's memory per GPU by component. A component the plan does not have (optimizer and gradients
    /// outside training, KV cache outside serving) is an absent series, not a zero; <c>total</c> is always there.
    /// </summary>
    public void RecordPlan(string kind, string ns, string name, WorkloadPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        var m = placement.Option.PerDevice;
        _plans[(kind, ns, name)] = [m.Weights.Bytes, m.KvCache.Bytes, m.Activations.Bytes, m.Optimizer.Bytes, m.Gradients.Bytes, m.Overhead.Bytes, m.Total.Bytes];
    }

    /// <summary>GPU-hours so far of a Job that started at <paramref name="start"/> (ended at <paramref name="end"/>, or running).</summary>
    public void RecordJobGpuHours(string kind, string ns, string name, int gpus, DateTimeOffset start, DateTimeOffset end)
    {
        var hours = gpus * Math.Max(0, (end - start).TotalHours);
        JobGpuHours.WithLabels(kind, ns, name).IncTo(hours);
    }

    /// <summary>Drops every series of a deleted resource.</summary>
    public void Forget(string kind, string ns, string name)
    {
        if (kind == "InferenceEndpoint")
        {
            _endpoints.TryRemove((ns, name), out _);
            ForgetObserved(ns, name);
            EndpointScrapeErrors.RemoveLabelled(ns, name);
        }

        _plans.TryRemove((kind, ns, name), out _);
    }

    /// <summary>The four per-object families in the Prometheus text format (what <c>/metrics</c> appends).</summary>
    public async Task WriteAsync(TextWriter writer, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(writer);
        var endpoints = _endpoints.ToArray();
        await Family(writer, HourlyCostName, "Catalog USD per hour of an endpoint's desired replicas").ConfigureAwait(false);
        foreach (var ((ns, name), cost) in endpoints)
        {
            await Sample(writer, HourlyCostName, $"namespace=\"{Escape(ns)}\",endpoint=\"{Escape(name)}\",gpu=\"{Escape(cost.Gpu)}\"", cost.HourlyUsd).ConfigureAwait(false);
        }

        await Family(writer, GpusName, "GPUs an endpoint's desired replicas request").ConfigureAwait(false);
        foreach (var ((ns, name), cost) in endpoints)
        {
            await Sample(writer, GpusName, $"namespace=\"{Escape(ns)}\",endpoint=\"{Escape(name)}\",gpu=\"{Escape(cost.Gpu)}\"", cost.Gpus).ConfigureAwait(false);
        }

        await Family(writer, EstimatedUsdPerMillionTokensName, "Planner estimate of USD per million output tokens at maxConcurrency").ConfigureAwait(false);
        foreach (var ((ns, name), cost) in endpoints)
        {
            if (cost.EstimatedUsdPerMillionTokens is { } perMillion)
            {
                await Sample(writer, EstimatedUsdPerMillionTokensName, $"namespace=\"{Escape(ns)}\",endpoint=\"{Escape(name)}\"", perMillion).ConfigureAwait(false);
            }
        }

        var now = _time.GetUtcNow();
        await writer.WriteAsync($"# HELP {LlmTotalCostName} USD an endpoint's desired replicas have cost at catalog price since the operator began tracking it\n# TYPE {LlmTotalCostName} counter\n").ConfigureAwait(false);
        foreach (var ((ns, name), cost) in endpoints)
        {
            await Sample(writer, LlmTotalCostName, $"namespace=\"{Escape(ns)}\",endpoint=\"{Escape(name)}\",currency=\"USD\"", cost.AccruedAt(now)).ConfigureAwait(false);
        }

        await Family(writer, LlmCostPerMillionTokensName, "USD per million output tokens from the observed throughput (same as lowbit_endpoint_usd_per_million_tokens)").ConfigureAwait(false);
        foreach (var labels in EndpointUsdPerMillionTokens.GetAllLabelValues())
        {
            await Sample(writer, LlmCostPerMillionTokensName, $"namespace=\"{Escape(labels[0])}\",endpoint=\"{Escape(labels[1])}\",currency=\"USD\"",
                EndpointUsdPerMillionTokens.WithLabels(labels).Value).ConfigureAwait(false);
        }

        cancellationToken.ThrowIfCancellationRequested();
        await Family(writer, PlanMemoryName, "Planned memory per GPU (per node on CPU placements), by component; components the plan does not have are absent, total is always there").ConfigureAwait(false);
        foreach (var ((kind, ns, name), values) in _plans)
        {
            for (var i = 0; i < values.Length; i++)
            {
                if (values[i] != 0 || i == values.Length - 1)
                {
                    await Sample(writer, PlanMemoryName, $"kind=\"{Escape(kind)}\",namespace=\"{Escape(ns)}\",name=\"{Escape(name)}\",component=\"{MemoryComponents[i]}\"", values[i]).ConfigureAwait(false);
                }
            }
        }
    }

    private static Task Family(TextWriter writer, string name, string help) =>
        writer.WriteAsync($"# HELP {name} {help}\n# TYPE {name} gauge\n");

    private static Task Sample(TextWriter writer, string name, string labels, double value) =>
        writer.WriteAsync($"{name}{{{labels}}} {Format(value)}\n");

    private static string Format(double value) => value switch
    {
        double.PositiveInfinity => "+Inf",
        double.NegativeInfinity => "-Inf",
        _ when double.IsNaN(value) => "NaN",
        _ => value.ToString("R", CultureInfo.InvariantCulture),
    };

    /// <summary>Label value escaping of the text format: backslash, double quote and line feed.</summary>
    internal static string Escape(string value) =>
        value.AsSpan().IndexOfAny('\\', '"', '\n') < 0 ? value : value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private sealed record EndpointCost(string Gpu, double HourlyUsd, double Gpus, double? EstimatedUsdPerMillionTokens, DateTimeOffset Since, double AccruedBefore)
    {
        /// <summary>USD accrued up to <paramref name="now"/>: what was accrued before this price, plus this price since it applied.</summary>
        public double AccruedAt(DateTimeOffset now) => AccruedBefore + (HourlyUsd * Math.Max(0, (now - Since).TotalHours));
    }
}
