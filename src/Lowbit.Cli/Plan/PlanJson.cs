using System.Text;
using System.Text.Json;
using Lowbit.Engine.Protocol;
using Lowbit.Planner;

namespace Lowbit.Cli.Plan;

/// <summary>The <c>lowbit plan --output json</c> document. Memory in GiB (2 decimals), prices in USD/hour.</summary>
public static class PlanJson
{
    public static string Write(PlanResult result)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            var request = result.Request;
            var model = request.Model;
            var workload = request.Workload;
            w.WriteStartObject();

            w.WriteStartObject("model");
            w.WriteString("name", model.Name);
            w.WriteString("modelType", model.ModelType);
            w.WriteNumber("parameters", result.Parameters.Total);
            w.WriteNumber("activeParameters", result.Parameters.Active);
            w.WriteNumber("layers", model.Layers);
            w.WriteNumber("hiddenSize", model.HiddenSize);
            w.WriteNumber("attentionHeads", model.AttentionHeads);
            w.WriteNumber("kvHeads", model.KvHeads);
            w.WriteNumber("experts", model.Experts);
            w.WriteEndObject();

            w.WriteStartObject("workload");
            w.WriteString("mode", PlannerNames.Name(workload.Mode));
            w.WriteString("weights", workload.Weights.Name);
            w.WriteNumber("linearBitsPerWeight", Math.Round(workload.Weights.LinearBitsPerWeight, 4));
            w.WriteString("weightsLayout", workload.Weights.Description);
            w.WriteNumber("context", workload.ContextLength);
            w.WriteNumber("batch", workload.Concurrency);
            w.WriteNumber("seq", workload.SequenceLength);
            w.WriteNumber("microBatch", workload.MicroBatch);
            w.WriteBoolean("gradientCheckpointing", workload.GradientCheckpointing);
            w.WriteString("runtime", PlannerNames.Name(workload.Runtime));
            w.WriteString("attention", PlannerNames.Name(workload.Attention));
            w.WriteString("kvCache", workload.KvCache == KvCacheFormat.Fp8 ? "fp8" : "fp16");
            w.WriteEndObject();

            var chosen = result is Planned planned ? planned.Choice : null;
            w.WriteStartObject("memory");
            w.WriteNumber("totalGiB", Gib(result.Total.Total));
            w.WriteNumber("perGpuGiB", Gib((chosen?.PerDevice ?? result.Total).Total));
            w.WriteString("memoryModel", PlannerNames.Name(workload.Runtime));
            w.WriteNumber("margin", MemoryEstimator.Margin(workload));
            w.WritePropertyName("breakdown");
            Breakdown(w, result.Total);
            w.WritePropertyName("perGpuBreakdown");
            Breakdown(w, chosen?.PerDevice ?? result.Total);
            w.WriteEndObject();

            if (VllmMaxConcurrency(result) is { } pool)
            {
                w.WriteStartObject("vllmPool");
                w.WriteString("placement", pool.Label);
                w.WriteNumber("kvTokens", pool.Tokens);
                w.WriteNumber("maxConcurrencyAtContext", Math.Round(pool.Concurrency, 2));
                w.WriteEndObject();
            }

            w.WriteBoolean("fits", chosen is not null);
            w.WriteString("summary", result.Summary);
            w.WritePropertyName("placement");
            if (chosen is null)
            {
                w.WriteNullValue();
            }
            else
            {
                Placement(w, chosen);
            }
            if (result is NoFit noFit)
            {
                w.WriteStartObject("noFit");
                w.WriteNumber("shortfallGiB", Gib(noFit.Closest.Shortfall));
                w.WritePropertyName("closest");
                Alternative(w, noFit.Closest, 0);
                w.WriteStartArray("fitsWithoutConstraints");
                foreach (var option in noFit.FitsWithoutConstraints)
                {
                    Alternative(w, option, 0);
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }

            w.WriteStartArray("alternatives");
            var rank = 1;
            foreach (var option in result.Options)
            {
                Alternative(w, option, rank++);
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    private static void Placement(Utf8JsonWriter w, Fits chosen)
    {
        var node = chosen.NodeType;
        w.WriteStartObject();
        w.WriteString("nodeType", node.Name);
        w.WriteString("gpuModel", node.GpuModel);
        w.WriteNumber("gpusPerReplica", chosen.Gpus);
        w.WriteNumber("nodes", chosen.Nodes);
        Split(w, chosen);
        w.WriteNumber("hourlyUsd", Math.Round(chosen.HourlyUsd, 4));
        w.WriteString("throughputKind", chosen.Throughput.Kind.ToString().ToLowerInvariant());
        w.WriteNumber("tokensPerSecond", Math.Round(chosen.Throughput.TokensPerSecond, 1));
        w.WriteNumber("prefillTokensPerSecond", Math.Round(chosen.Throughput.PrefillTokensPerSecond, 1));
        w.WriteNumber("usdPerMillionTokens", Math.Round(chosen.Throughput.UsdPerMillionTokens, 4));
        w.WriteNumber("usablePerGpuGiB", Gib(chosen.UsablePerDevice));
        w.WriteString("resourceName", node.ResourceName);
        w.WriteStartObject("nodeSelector");
        foreach (var (key, value) in node.NodeSelector)
        {
            w.WriteString(key, value);
        }
        w.WriteEndObject();
        w.WriteStartArray("tolerations");
        foreach (var t in node.Tolerations)
        {
            w.WriteStartObject();
            w.WriteString("key", t.Key);
            w.WriteString("operator", t.Operator);
            if (t.Value.Length > 0)
            {
                w.WriteString("value", t.Value);
            }
            w.WriteString("effect", t.Effect);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteString("priceSource", node.PriceSource);
        w.WriteString("priceDate", node.PriceDate);
        w.WriteEndObject();
    }

    private static void Alternative(Utf8JsonWriter w, PlacementOption option, int rank)
    {
        w.WriteStartObject();
        if (rank > 0)
        {
            w.WriteNumber("rank", rank);
        }
        w.WriteString("nodeType", option.NodeType.Name);
        w.WriteString("gpuModel", option.NodeType.GpuModel);
        w.WriteNumber("gpusPerReplica", option.Gpus);
        w.WriteNumber("nodes", option.Nodes);
        Split(w, option);
        w.WriteNumber("hourlyUsd", Math.Round(option.HourlyUsd, 4));
        w.WriteBoolean("fits", option is Fits);
        w.WriteNumber("perGpuGiB", Gib(option.PerDevice.Total));
        w.WriteNumber("usablePerGpuGiB", Gib(option.UsablePerDevice));
        w.WriteNumber("shortfallGiB", option is DoesNotFit d ? Gib(d.Shortfall) : 0);
        if (option is DoesNotFit rejected)
        {
            w.WriteString("reason", rejected.Reason.ToString());
            w.WriteString("explanation", rejected.Explanation);
        }
        w.WriteNumber("tokensPerSecond", Math.Round(option.Throughput.TokensPerSecond, 1));
        w.WriteNumber("usdPerMillionTokens", Math.Round(option.Throughput.UsdPerMillionTokens, 4));
        w.WriteEndObject();
    }

    /// <summary>How the replica's devices share the model: pipeline stages, tensor-parallel shards per stage, and in words.</summary>
    private static void Split(Utf8JsonWriter w, PlacementOption option)
    {
        w.WriteNumber("pipelineStages", option.PipelineStages);
        w.WriteNumber("tensorParallel", option.TensorParallel);
        w.WriteString("split", option.Split);
    }

    /// <summary>
    /// For vLLM: the KV tokens its pool holds on the chosen placement and what concurrency that is at the requested
    /// context (vLLM logs it as "Maximum concurrency for N tokens per request").
    /// </summary>
    public static (string Label, long Tokens, double Concurrency)? VllmMaxConcurrency(PlanResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var request = result.Request;
        if (request.Workload.Mode != WorkloadMode.Inference || request.Workload.Runtime != ServingRuntime.Vllm || result is not Planned planned)
        {
            return null;
        }
        var tokens = MemoryEstimator.VllmKvCapacityTokens(request.Model, request.Workload, planned.Choice.NodeType.MemoryPerDevice, planned.Choice.Devices, planned.Choice.PipelineStages);
        return (planned.Choice.Label, tokens, tokens / (double)request.Workload.ContextLength);
    }

    private static void Breakdown(Utf8JsonWriter w, MemoryBreakdown m)
    {
        w.WriteStartObject();
        w.WriteNumber("weights", Gib(m.Weights));
        w.WriteNumber("kvCache", Gib(m.KvCache));
        w.WriteNumber("activations", Gib(m.Activations));
        w.WriteNumber("optimizer", Gib(m.Optimizer));
        w.WriteNumber("gradients", Gib(m.Gradients));
        w.WriteNumber("overhead", Gib(m.Overhead));
        w.WriteNumber("cudaContext", Gib(m.Context));
        w.WriteNumber("allocatorReserve", Gib(m.AllocatorReserve));
        w.WriteNumber("runtimeBuffers", Gib(m.RuntimeBuffers));
        w.WriteEndObject();
    }

    private static double Gib(ByteSize size) => Math.Round(size.GiB, 2);
}
