using System.Globalization;
using System.Text;
using Lowbit.Engine.Protocol;

namespace Lowbit.Planner;

/// <summary>Everything a plan depends on.</summary>
public sealed record PlanRequest
{
    public required ModelArchitecture Model { get; init; }

    public required Workload Workload { get; init; }

    public GpuCatalog Catalog { get; init; } = GpuCatalog.Default;

    public PlacementConstraints Constraints { get; init; } = PlacementConstraints.None;
}

/// <summary>The outcome of <see cref="PlacementPlanner.Plan"/>: <see cref="Planned"/> or <see cref="NoFit"/>.</summary>
public abstract record PlanResult
{
    /// <summary>Closed: only <see cref="Planned"/> and <see cref="NoFit"/> derive from it.</summary>
    private protected PlanResult()
    {
    }

    public required PlanRequest Request { get; init; }

    public required ParameterCounts Parameters { get; init; }

    /// <summary>The requirement on a single device (unsharded): the model's footprint.</summary>
    public required MemoryBreakdown Total { get; init; }

    /// <summary>Every candidate, cheapest first (then fewer GPUs, then faster).</summary>
    public required IReadOnlyList<PlacementOption> Options { get; init; }

    /// <summary>One-line summary, e.g. <c>Llama-2-70B int4 needs 38.9 GiB: 1× A100-40GB at $2.87/h; …</c>.</summary>
    public string Summary => PlacementPlanner.Describe(this);
}

public sealed record Planned : PlanResult
{
    public required Fits Choice { get; init; }
}

public sealed record NoFit : PlanResult
{
    /// <summary>The memory-rejected option closest to fitting (or, when memory was never the issue, the cheapest rejected one).</summary>
    public required DoesNotFit Closest { get; init; }

    /// <summary>Options whose memory fits but that the constraints rejected: GPU ones cheapest first, then CPU nodes (empty when none).</summary>
    public required IReadOnlyList<DoesNotFit> FitsWithoutConstraints { get; init; }
}

/// <summary>
/// The placement entry point: enumerates every (node type, GPUs per replica), estimates memory per
/// device, checks divisibility, memory with headroom and the constraints, ranks by USD/hour and picks the
/// cheapest that fits. Pure and allocation-light (a few hundred small objects per call).
/// </summary>
public static class PlacementPlanner
{
    /// <summary>GPUs per replica tried on one node (bounded by the node's GPU count).</summary>
    public static readonly IReadOnlyList<int> GpuCounts = [1, 2, 4, 8];

    /// <summary>
    /// Node counts tried, whole nodes each, on NVLink node types (which come with RDMA networking between nodes): vLLM
    /// serving only, one pipeline stage per node (tensor parallel over the node's GPUs). Training has no multi-node
    /// option: our engine's trainer runs in one pod (<c>finetune --shards</c> over its GPUs; docs/planner.md).
    /// </summary>
    public static readonly IReadOnlyList<int> NodeCounts = [2, 4, 8];

    public static PlanResult Plan(PlanRequest request)
    {
        var model = request.Model;
        var workload = request.Workload;
        Validate(workload);
        var parameters = model.Parameters;
        var options = new List<PlacementOption>(64);
        foreach (var node in request.Catalog.NodeTypes)
        {
            AddCandidates(options, request, node, parameters);
        }
        if (options.Count == 0)
        {
            throw new PlanInputException("catalog", $"no node type in the catalog can run mode {PlannerNames.Name(workload.Mode)} (vLLM needs GPU nodes)");
        }
        options.Sort(Compare);

        var total = MemoryEstimator.Estimate(model, parameters, workload, 1, DeviceKind.Gpu);
        foreach (var option in options)
        {
            if (option is Fits fits)
            {
                return new Planned { Request = request, Parameters = parameters, Total = total, Options = options, Choice = fits };
            }
        }

        var constrained = new List<DoesNotFit>();
        DoesNotFit? closest = null;
        foreach (var option in options)
        {
            var rejected = (DoesNotFit)option;
            var constraint = rejected.Reason is RejectionReason.GpuTypeNotAllowed or RejectionReason.OverBudget or RejectionReason.TooSlow;
            if (constraint && rejected.PerDevice.Total <= rejected.UsablePerDevice && HeadsRuleHolds(model, workload, rejected))
            {
                constrained.Add(rejected);
            }
            else if (rejected.Reason == RejectionReason.InsufficientMemory && (closest is null || rejected.Shortfall < closest.Shortfall))
            {
                closest = rejected;
            }
        }
        // GPU placements first: a CPU node "fits" most models, at a few tokens per second.
        constrained.Sort((a, b) => a.NodeType.Kind != b.NodeType.Kind ? a.NodeType.Kind.CompareTo(b.NodeType.Kind) : Compare(a, b));
        return new NoFit
        {
            Request = request,
            Parameters = parameters,
            Total = total,
            Options = options,
            Closest = closest ?? (DoesNotFit)options[0],
            FitsWithoutConstraints = constrained,
        };
    }

    private static void Validate(Workload w)
    {
        Positive(w.ContextLength, "context");
        Positive(w.Concurrency, "batch");
        Positive(w.SequenceLength, "seq");
        Positive(w.MicroBatch, "micro-batch");
        if (w.CalibrationSamples < 0)
        {
            throw new PlanInputException("calibration-samples", $"must be 0 or more, got {w.CalibrationSamples}");
        }
    }

    private static void Positive(int value, string field)
    {
        if (value < 1)
        {
            throw new PlanInputException(field, $"must be at least 1, got {value}");
        }
    }

    private static void AddCandidates(List<PlacementOption> options, PlanRequest request, NodeType node, in ParameterCounts p)
    {
        var w = request.Workload;
        if (node.Kind == DeviceKind.Cpu)
        {
            // Every mode runs on a CPU node (slowly: tiny models, local clusters) except vLLM, which needs GPUs.
            if (w.Mode != WorkloadMode.Inference || w.Runtime != ServingRuntime.Vllm)
            {
                options.Add(Evaluate(request, node, p, gpusPerNode: 0, nodes: 1));
            }
            return;
        }

        foreach (var gpus in GpuCounts)
        {
            if (gpus > node.GpusPerNode || (w.Mode == WorkloadMode.Quantize && gpus > 1))
            {
                continue;
            }
            options.Add(Evaluate(request, node, p, gpus, nodes: 1));
        }
        // Multi-node: vLLM serving only (LeaderWorkerSet: tensor parallel over each node's GPUs, one pipeline stage per
        // node, the standard vLLM-on-LWS recipe). Other runtimes serve from one pod, and a FineTuneJob is one pod: the
        // engine's finetune has no multi-node trainer.
        var multiNodeServing = w.Mode == WorkloadMode.Inference && w.Runtime == ServingRuntime.Vllm;
        if (multiNodeServing && node.Interconnect == Interconnect.NvLink)
        {
            foreach (var nodes in NodeCounts)
            {
                options.Add(Evaluate(request, node, p, node.GpusPerNode, nodes));
            }
        }
    }

    /// <summary>
    /// How a replica splits over its GPUs: vLLM across nodes runs one pipeline stage per node; our engine runs one
    /// pipeline stage per GPU, serving (<c>serve --shards</c>) and training (<c>finetune --shards</c>, whatever the
    /// runtime named: the operator trains with our engine only); everything else is tensor parallel over all its
    /// devices. Quantization runs on one device.
    /// </summary>
    public static int PipelineStages(Workload workload, int gpusPerNode, int nodes)
    {
        ArgumentNullException.ThrowIfNull(workload);
        if (workload.IsTraining)
        {
            return Math.Max(gpusPerNode * nodes, 1);
        }
        if (workload.Mode != WorkloadMode.Inference)
        {
            return 1;
        }

        return workload.Runtime switch
        {
            ServingRuntime.Vllm when nodes > 1 => nodes,
            // lowbit-engine serve --shards N: a pipeline split of the layers over the pod's GPUs (no tensor parallelism).
            ServingRuntime.Lowbit when gpusPerNode * nodes > 1 => gpusPerNode * nodes,
            _ => 1,
        };
    }

    /// <summary>The tensor-parallel rule for serving (<see cref="DividesHeads"/>) on an option's tensor-parallel size; training has none.</summary>
    private static bool HeadsRuleHolds(ModelArchitecture model, Workload workload, PlacementOption option) =>
        workload.Mode != WorkloadMode.Inference || DividesHeads(model, option.TensorParallel);

    private static PlacementOption Evaluate(PlanRequest request, NodeType node, in ParameterCounts p, int gpusPerNode, int nodes)
    {
        var model = request.Model;
        var w = request.Workload;
        var devices = Math.Max(gpusPerNode * nodes, 1);
        var stages = PipelineStages(w, gpusPerNode, nodes);
        var tensorParallel = devices / stages;
        var perDevice = MemoryEstimator.Estimate(model, p, w, devices, node.Kind, node.MemoryPerDevice, stages);
        var usable = node.MemoryPerDevice * MemoryEstimator.UsableFraction(w, node.Kind);
        var hourly = node.Kind == DeviceKind.Cpu ? node.UsdPerHour : node.UsdPerHour * gpusPerNode * nodes;
        var throughput = ThroughputModel.Estimate(model, p, w, node, devices, hourly, stages, nodes);

        // Order: what the user excluded (GPU types, CPU opt-in) is not worth a memory explanation; then
        // divisibility and memory, which no budget can fix; then budget and speed.
        RejectionReason? reason = null;
        var shortfall = ByteSize.Zero;
        string explanation = "";
        var allowed = request.Constraints.AllowedGpuTypes;
        if (node.Kind == DeviceKind.Cpu && !Named(allowed, node))
        {
            // CPU nodes serve at a few tokens/s: they are opt-in, never a silent default.
            reason = RejectionReason.GpuTypeNotAllowed;
            explanation = $"CPU node types are used only when the allowed GPU types name them ({node.Name} or cpu)";
        }
        else if (allowed.Count > 0 && !Named(allowed, node))
        {
            reason = RejectionReason.GpuTypeNotAllowed;
            explanation = $"{node.Name} is not among the allowed GPU types ({string.Join(", ", allowed)})";
        }
        else if (w.Mode == WorkloadMode.Inference && !DividesHeads(model, tensorParallel))
        {
            reason = RejectionReason.ShardsDoNotDivideHeads;
            explanation = $"{tensorParallel} tensor-parallel shards do not divide {model.AttentionHeads} attention heads / {model.KvHeads} KV heads";
        }
        else if (perDevice.Total > usable)
        {
            reason = RejectionReason.InsufficientMemory;
            shortfall = perDevice.Total - usable;
            explanation = $"short by {shortfall.ToGiBString()} per {(node.Kind == DeviceKind.Cpu ? "node" : "GPU")} (needs {perDevice.Total.ToGiBString()} of {usable.ToGiBString()} usable)";
        }
        else if (hourly > request.Constraints.MaxUsdPerHour)
        {
            reason = RejectionReason.OverBudget;
            explanation = string.Create(CultureInfo.InvariantCulture, $"${hourly:0.00}/h exceeds the budget of ${request.Constraints.MaxUsdPerHour:0.00}/h");
        }
        else if (throughput.TokensPerSecond < request.Constraints.MinTokensPerSecond)
        {
            reason = RejectionReason.TooSlow;
            explanation = string.Create(CultureInfo.InvariantCulture, $"{throughput.TokensPerSecond:0.#} tokens/s is below the minimum of {request.Constraints.MinTokensPerSecond:0.#}");
        }

        if (reason is { } why)
        {
            return new DoesNotFit
            {
                NodeType = node, GpusPerNode = gpusPerNode, Nodes = nodes, PipelineStages = stages, PerDevice = perDevice, UsablePerDevice = usable,
                HourlyUsd = hourly, Throughput = throughput, Reason = why, Shortfall = shortfall, Explanation = explanation,
            };
        }
        return new Fits
        {
            NodeType = node, GpusPerNode = gpusPerNode, Nodes = nodes, PipelineStages = stages, PerDevice = perDevice, UsablePerDevice = usable,
            HourlyUsd = hourly, Throughput = throughput,
        };
    }

    /// <summary>
    /// The tensor-parallel rule (as vLLM checks it): the shard count divides the attention heads, and either
    /// divides the KV heads or is a multiple of them (each shard then holds a replica of a KV head: MQA).
    /// </summary>
    public static bool DividesHeads(ModelArchitecture model, int shards) =>
        model.AttentionHeads % shards == 0
        && (model.KvHeads % shards == 0 || shards % model.KvHeads == 0);

    /// <summary>Whether the allowed list names the node type, its GPU model, or (for CPU nodes) just <c>cpu</c>.</summary>
    private static bool Named(IReadOnlyList<string> allowed, NodeType node)
    {
        foreach (var name in allowed)
        {
            var key = Normalize(name);
            if (node.Kind == DeviceKind.Cpu && key == "cpu")
            {
                return true;
            }
            if (key == Normalize(node.Name) || key == Normalize(node.GpuModel))
            {
                return true;
            }
        }
        return false;
    }

    private static string Normalize(string value)
    {
        var builder = new StringBuilder(value.Length);
        foreach (var c in value)
        {
            if (char.IsLetterOrDigit(c))
            {
                builder.Append(char.ToLowerInvariant(c));
            }
        }
        return builder.ToString();
    }

    private static int Compare(PlacementOption a, PlacementOption b)
    {
        var byPrice = a.HourlyUsd.CompareTo(b.HourlyUsd);
        if (byPrice != 0)
        {
            return byPrice;
        }
        // At the same price one node beats several: no inter-node hops, no LeaderWorkerSet needed.
        var byNodes = a.Nodes.CompareTo(b.Nodes);
        if (byNodes != 0)
        {
            return byNodes;
        }
        var byGpus = a.Devices.CompareTo(b.Devices);
        if (byGpus != 0)
        {
            return byGpus;
        }
        var bySpeed = b.Throughput.TokensPerSecond.CompareTo(a.Throughput.TokensPerSecond);
        return bySpeed != 0 ? bySpeed : string.CompareOrdinal(a.NodeType.Name, b.NodeType.Name);
    }

    /// <summary>
    /// The user-facing sentence: what the model needs, the choice and why each cheaper option was passed
    /// over (at most four), or for a no-fit the closest option and what would fit without constraints.
    /// </summary>
    public static string Describe(PlanResult result)
    {
        var request = result.Request;
        var builder = new StringBuilder();
        builder.Append(request.Model.Name).Append(' ').Append(request.Workload.Weights.Name);
        if (request.Workload.Mode != WorkloadMode.Inference)
        {
            builder.Append(' ').Append(PlannerNames.Name(request.Workload.Mode));
        }
        builder.Append(" needs ").Append(result.Total.Total.ToGiBString());
        switch (result)
        {
            case Planned planned:
                builder.Append(": ").Append(planned.Choice.Label).Append(Price(planned.Choice.HourlyUsd));
                if (planned.Choice.Split.Length > 0)
                {
                    builder.Append(" (").Append(planned.Choice.Split).Append(')');
                }
                // The cheaper options closest in price to the choice, nearest first; excluded types are not explained.
                var listed = 0;
                var index = IndexOf(result.Options, planned.Choice);
                for (var i = index - 1; i >= 0 && listed < 4; i--)
                {
                    if (result.Options[i] is DoesNotFit { Reason: not RejectionReason.GpuTypeNotAllowed } cheaper)
                    {
                        builder.Append("; ").Append(cheaper.Label).Append(' ').Append(Brief(cheaper));
                        listed++;
                    }
                }
                break;
            case NoFit noFit:
                builder.Append(": nothing fits; closest: ").Append(noFit.Closest.Label).Append(' ').Append(Brief(noFit.Closest));
                if (noFit.FitsWithoutConstraints.Count > 0)
                {
                    var unconstrained = noFit.FitsWithoutConstraints[0];
                    builder.Append("; without constraints: ").Append(unconstrained.Label).Append(Price(unconstrained.HourlyUsd));
                }
                break;
        }
        return builder.ToString();
    }

    private static string Brief(DoesNotFit option) => option.Reason == RejectionReason.InsufficientMemory
        ? $"short by {option.Shortfall.ToGiBString()}{(option.Devices > 1 ? " per GPU" : "")}"
        : option.Explanation;

    private static int IndexOf(IReadOnlyList<PlacementOption> options, PlacementOption target)
    {
        for (var i = 0; i < options.Count; i++)
        {
            if (ReferenceEquals(options[i], target))
            {
                return i;
            }
        }
        return -1;
    }

    private static string Price(double usd) => string.Create(CultureInfo.InvariantCulture, $" at ${usd:0.00}/h");
}
