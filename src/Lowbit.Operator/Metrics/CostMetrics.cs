using System.Collections.Concurrent;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Prometheus;

namespace Lowbit.Operator.Telemetry;

/// <summary>
/// Cost and fit gauges per resource, on the operator's registry. Labels are bounded by the number of custom
/// resources (namespace, name, GPU model, memory component): never pod names.
/// </summary>
public sealed class CostMetrics
{
    public static readonly IReadOnlyList<string> MemoryComponents = ["weights", "kv_cache", "activations", "optimizer", "gradients", "overhead", "total"];

    private readonly ConcurrentDictionary<(string Ns, string Name), string> _endpointGpu = new();
    private readonly ConcurrentDictionary<(string Ns, string Name), double> _endpointHourlyUsd = new();

    public CostMetrics(RuntimeMetrics runtime)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        var f = runtime.Factory;
        EndpointHourlyCost = f.CreateGauge("lowbit_endpoint_hourly_cost_usd", "Catalog USD per hour of an endpoint's desired replicas", ["namespace", "endpoint", "gpu"]);
        EndpointGpus = f.CreateGauge("lowbit_endpoint_gpus", "GPUs an endpoint's desired replicas request", ["namespace", "endpoint", "gpu"]);
        EndpointEstimatedUsdPerMillionTokens = f.CreateGauge("lowbit_endpoint_estimated_usd_per_million_tokens", "Planner estimate of USD per million output tokens at maxConcurrency", ["namespace", "endpoint"]);
        EndpointUsdPerMillionTokens = f.CreateGauge("lowbit_endpoint_usd_per_million_tokens", "USD per million output tokens from the throughput observed on the engine's /metrics", ["namespace", "endpoint"]);
        EndpointTimeToFirstToken = f.CreateGauge("lowbit_endpoint_time_to_first_token_seconds", "Mean time to first token over the last scrape interval, from the engine's histogram", ["namespace", "endpoint"]);
        EndpointTokensPerSecond = f.CreateGauge("lowbit_endpoint_tokens_per_second", "Generated tokens per second across an endpoint's pods over the last scrape interval", ["namespace", "endpoint"]);
        EndpointScrapeErrors = f.CreateCounter("lowbit_endpoint_scrape_errors_total", "Failed scrapes of an endpoint's serving pods' /metrics (unreachable, timeout, HTTP error, missing or bad counters)", ["namespace", "endpoint"]);
        JobGpuHours = f.CreateCounter("lowbit_job_gpu_hours_total", "GPU-hours consumed by a QuantizedModel's or FineTuneJob's engine Job", ["kind", "namespace", "name"]);
        PlanMemory = f.CreateGauge("lowbit_plan_memory_bytes", "Planned memory per GPU (per node on CPU placements), by component; components the plan does not have are absent, total is always there", ["kind", "namespace", "name", "component"]);
    }

    public Gauge EndpointHourlyCost { get; }

    public Gauge EndpointGpus { get; }

    public Gauge EndpointEstimatedUsdPerMillionTokens { get; }

    public Gauge EndpointUsdPerMillionTokens { get; }

    public Gauge EndpointTimeToFirstToken { get; }

    public Gauge EndpointTokensPerSecond { get; }

    public Counter EndpointScrapeErrors { get; }

    public Counter JobGpuHours { get; }

    public Gauge PlanMemory { get; }

    /// <summary>The GPU label value of a placement: the GPU model, or <c>cpu</c>.</summary>
    public static string GpuLabel(WorkloadPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        return placement.OnGpu ? placement.NodeType.GpuModel : "cpu";
    }

    public void RecordEndpoint(string ns, string name, WorkloadPlacement placement, int replicas)
    {
        ArgumentNullException.ThrowIfNull(placement);
        var gpu = GpuLabel(placement);
        if (_endpointGpu.TryGetValue((ns, name), out var old) && old != gpu)
        {
            EndpointHourlyCost.RemoveLabelled(ns, name, old);
            EndpointGpus.RemoveLabelled(ns, name, old);
        }

        _endpointGpu[(ns, name)] = gpu;
        _endpointHourlyUsd[(ns, name)] = placement.HourlyUsd * replicas;
        EndpointHourlyCost.WithLabels(ns, name, gpu).Set(placement.HourlyUsd * replicas);
        EndpointGpus.WithLabels(ns, name, gpu).Set(placement.GpusPerReplica * replicas);
        var perMillion = placement.Option.Throughput.UsdPerMillionTokens;
        if (double.IsFinite(perMillion))
        {
            EndpointEstimatedUsdPerMillionTokens.WithLabels(ns, name).Set(perMillion);
        }
    }

    /// <summary>The hourly USD last recorded for an endpoint's desired replicas (<see cref="RecordEndpoint"/>), or null.</summary>
    public double? EndpointHourlyUsd(string ns, string name) =>
        _endpointHourlyUsd.TryGetValue((ns, name), out var usd) ? usd : null;

    /// <summary>The endpoints (namespace, name) with cost series, for sweeping the ones deleted.</summary>
    public IReadOnlyCollection<(string Ns, string Name)> Endpoints => [.. _endpointGpu.Keys];

    /// <summary>Drops the gauges observed from an endpoint's pods (throughput, TTFT, USD per million tokens).</summary>
    public void ForgetObserved(string ns, string name)
    {
        EndpointTokensPerSecond.RemoveLabelled(ns, name);
        EndpointTimeToFirstToken.RemoveLabelled(ns, name);
        EndpointUsdPerMillionTokens.RemoveLabelled(ns, name);
    }

    public void RecordPlan(string kind, string ns, string name, WorkloadPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        var m = placement.Option.PerDevice;
        long[] values = [m.Weights.Bytes, m.KvCache.Bytes, m.Activations.Bytes, m.Optimizer.Bytes, m.Gradients.Bytes, m.Overhead.Bytes, m.Total.Bytes];
        for (var i = 0; i < values.Length; i++)
        {
            // A component the plan does not have (optimizer and gradients outside training, KV cache outside serving)
            // is an absent series, not a zero: each series costs the registry memory, 10,000 endpoints times over.
            if (values[i] != 0 || MemoryComponents[i] == "total")
            {
                PlanMemory.WithLabels(kind, ns, name, MemoryComponents[i]).Set(values[i]);
            }
            else
            {
                PlanMemory.RemoveLabelled(kind, ns, name, MemoryComponents[i]);
            }
        }
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
            if (_endpointGpu.TryRemove((ns, name), out var gpu))
            {
                EndpointHourlyCost.RemoveLabelled(ns, name, gpu);
                EndpointGpus.RemoveLabelled(ns, name, gpu);
            }

            _endpointHourlyUsd.TryRemove((ns, name), out _);
            EndpointEstimatedUsdPerMillionTokens.RemoveLabelled(ns, name);
            ForgetObserved(ns, name);
            EndpointScrapeErrors.RemoveLabelled(ns, name);
        }

        foreach (var component in MemoryComponents)
        {
            PlanMemory.RemoveLabelled(kind, ns, name, component);
        }
    }
}
