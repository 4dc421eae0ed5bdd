using System.Globalization;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Controllers;

/// <summary>Turns specs into planner requests and picks placements (pure).</summary>
public static class Planning
{
    /// <summary>Mode quantize: the engine loads 16-bit weights layer by layer and writes the low-bit output.</summary>
    public static PlanResult Quantize(QuantizedModel model, ModelArchitecture architecture, GpuCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(model);
        var spec = model.Spec;
        var workload = new Workload
        {
            Mode = WorkloadMode.Quantize,
            Weights = Weights(spec),
            CalibrationSamples = spec.Method == QuantizationMethod.Gptq ? spec.Calibration?.Samples ?? 128 : 0,
            SequenceLength = spec.Calibration?.SequenceLength ?? 2048,
        };
        return Plan(architecture, workload, catalog, Constraints(spec.Scheduling, null, 1));
    }

    public static PlanResult FineTune(FineTuneJob job, ModelArchitecture architecture, GpuCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(job);
        var spec = job.Spec;
        var workload = new Workload
        {
            Mode = spec.Method switch
            {
                FineTuneMethod.Qlora => WorkloadMode.Qlora,
                FineTuneMethod.Full => WorkloadMode.Full,
                _ => WorkloadMode.Lora,
            },
            Weights = spec.Method == FineTuneMethod.Qlora ? WeightFormat.Nf4 : WeightFormat.Bf16,
            SequenceLength = spec.Training.SequenceLength,
            MicroBatch = spec.Training.MicroBatchSize,
            GradientCheckpointing = spec.Training.GradientCheckpointing,
            LoraRank = spec.Lora?.R ?? 16,
            LoraTargets = PlannerNames.LoraTargetsOrAll(spec.Lora?.TargetModules ?? new LoraSpec().TargetModules),
        };
        return Plan(architecture, workload, catalog, Constraints(spec.Scheduling, null, 1));
    }

    /// <summary>Mode inference: weights in the served format, the KV cache for context × concurrency, the runtime's reservation.</summary>
    public static PlanResult Inference(InferenceEndpoint endpoint, QuantizedModel? quantized, ModelArchitecture architecture, GpuCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        var spec = endpoint.Spec;
        var runtime = spec.Runtime; // the CRD (spec.runtime enum) admits lowbit, vllm and llamacpp only, never transformers
        var weights = quantized is null
            ? WeightFormat.Bf16
            : spec.Runtime == ServingRuntime.LlamaCpp ? GgufWeights(quantized.Spec) : Weights(quantized.Spec);
        var workload = new Workload
        {
            Mode = WorkloadMode.Inference,
            Weights = weights,
            ContextLength = spec.MaxContextLength,
            Concurrency = spec.MaxConcurrency,
            Runtime = runtime,
        };
        return Plan(architecture, workload, catalog, Constraints(spec.Scheduling, spec, Math.Max(spec.Replicas, 1)));
    }

    /// <summary>The feasible placement at <paramref name="index"/> (cheapest first), or null past the end.</summary>
    public static WorkloadPlacement? Choose(PlanResult plan, int index)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var feasible = plan.Options.OfType<Fits>().ToList();
        return index >= 0 && index < feasible.Count
            ? new WorkloadPlacement { Option = feasible[index], Index = index, FeasibleCount = feasible.Count, SourceBytes = ByteSize.FromBytes(plan.Parameters.Total * 2) }
            : null;
    }

    /// <summary>
    /// The placement index to run on next (pure failure policy): an unschedulable pod past <paramref name="timeout"/>
    /// moves to the next-cheapest feasible placement; an OOM moves to the next one with more memory per replica.
    /// Null when the failure calls for a move and no placement is left.
    /// </summary>
    public static int? NextIndex(PlanResult plan, int current, PodDiagnosis diagnosis, DateTimeOffset now, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(diagnosis);
        var feasible = plan.Options.OfType<Fits>().ToList();
        switch (diagnosis)
        {
            case PodDiagnosis.Unschedulable waiting when now - waiting.Since >= timeout:
                return current + 1 < feasible.Count ? current + 1 : null;
            case PodDiagnosis.OutOfMemory:
                var memory = Capacity(feasible[Math.Min(current, feasible.Count - 1)]);
                for (var i = current + 1; i < feasible.Count; i++)
                {
                    if (Capacity(feasible[i]) > memory)
                    {
                        return i;
                    }
                }

                return null;
            default:
                return current;
        }
    }

    /// <summary>Default <c>spec.scheduling.timeout</c>.</summary>
    public static readonly TimeSpan DefaultSchedulingTimeout = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Parses a <c>spec.scheduling.timeout</c> Go duration (<c>10m</c>, <c>1h30m</c>, <c>90s</c>, <c>500ms</c>); empty
    /// means <see cref="DefaultSchedulingTimeout"/>. A text that is not a duration gives an error naming the field.
    /// </summary>
    public static (TimeSpan Timeout, SpecError? Error) SchedulingTimeout(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return (DefaultSchedulingTimeout, null);
        }

        var total = TimeSpan.Zero;
        var i = 0;
        while (i < text.Length)
        {
            var start = i;
            while (i < text.Length && (char.IsDigit(text[i]) || text[i] == '.'))
            {
                i++;
            }

            if (start == i || !double.TryParse(text.AsSpan(start, i - start), NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
            {
                return (DefaultSchedulingTimeout, new SpecError("spec.scheduling.timeout", $"'{text}' is not a duration; accepted: e.g. 90s, 10m, 1h30m"));
            }

            var unitStart = i;
            while (i < text.Length && char.IsLetter(text[i]))
            {
                i++;
            }

            var unit = text[unitStart..i];
            TimeSpan? part = unit switch
            {
                "ms" => TimeSpan.FromMilliseconds(value),
                "s" => TimeSpan.FromSeconds(value),
                "m" => TimeSpan.FromMinutes(value),
                "h" => TimeSpan.FromHours(value),
                _ => null,
            };
            if (part is null)
            {
                return (DefaultSchedulingTimeout, new SpecError("spec.scheduling.timeout", $"unknown unit '{unit}' in '{text}'; accepted: ms, s, m, h"));
            }

            total += part.Value;
        }

        return (total, null);
    }

    /// <summary>The weight format of a quantization spec, as the planner names it (with its head quantized under <c>spec.quantizeHead</c>).</summary>
    public static WeightFormat Weights(QuantizedModelSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var format = spec.TargetBitsPerWeight is { } bpw
            ? WeightFormat.Parse(string.Create(CultureInfo.InvariantCulture, $"bpw-{bpw}"))
            : WeightFormat.Parse($"int{spec.Bits ?? 4}", spec.GroupSize);
        return spec.QuantizeHead ? format.WithQuantizedHead() : format;
    }

    /// <summary>
    /// Why the quantize Job would fail on this architecture (naming the field), or null: <c>spec.quantizeHead</c> on a
    /// model whose head is its input embedding table has no separate head to quantize (the engine exits with an input error).
    /// </summary>
    public static SpecError? CheckQuantizeHead(QuantizedModelSpec spec, ModelArchitecture architecture)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(architecture);
        return spec.QuantizeHead && architecture.TiedEmbeddings
            ? new SpecError("spec.quantizeHead", $"{architecture.Name} ties lm_head to its input embeddings (tie_word_embeddings); there is no separate head to quantize; remove quantizeHead")
            : null;
    }

    private static WeightFormat GgufWeights(QuantizedModelSpec spec) =>
        spec.Formats.Contains(ExportFormat.GgufQ4K) ? WeightFormat.Parse("gguf-q4_k_m")
        : spec.Formats.Contains(ExportFormat.GgufQ40) ? WeightFormat.Parse("gguf-q4_0")
        : spec.Formats.Contains(ExportFormat.GgufQ80) ? WeightFormat.Parse("gguf-q8_0")
        : Weights(spec);

    /// <summary>The planner's answer; it throws <see cref="PlanInputException"/> for inputs it cannot plan (see <c>Decide</c>'s use).</summary>
    private static PlanResult Plan(ModelArchitecture architecture, Workload workload, GpuCatalog catalog, PlacementConstraints constraints) =>
        PlacementPlanner.Plan(new PlanRequest { Model = architecture, Workload = workload, Catalog = catalog, Constraints = constraints });

    private static PlacementConstraints Constraints(SchedulingSpec? scheduling, InferenceEndpointSpec? endpoint, int replicas)
    {
        var allowed = new List<string>(scheduling?.AllowedGpuTypes ?? []);
        if (endpoint?.Budget?.AllowedGpuTypes is { Count: > 0 } budgetTypes)
        {
            allowed = allowed.Count == 0 ? [.. budgetTypes] : allowed.Intersect(budgetTypes, StringComparer.OrdinalIgnoreCase).ToList();
        }

        return new PlacementConstraints
        {
            AllowedGpuTypes = allowed,
            MaxUsdPerHour = endpoint?.Budget?.MaxHourlyCostUsd is { } budget ? budget / replicas : double.PositiveInfinity,
            MinTokensPerSecond = endpoint?.Slo?.MinTokensPerSecond ?? 0,
        };
    }

    private static long Capacity(PlacementOption option) => option.UsablePerDevice.Bytes * option.Devices;
}
