using Lowbit.Engine.Protocol;

namespace Lowbit.Planner;

/// <summary>What <see cref="ThroughputEstimate.TokensPerSecond"/> counts.</summary>
public enum ThroughputKind
{
    /// <summary>Generated tokens per second of one replica at the workload's concurrency.</summary>
    Decode,

    /// <summary>Training tokens per second of one replica.</summary>
    Training,

    /// <summary>Calibration tokens per second (quantize).</summary>
    Calibration,
}

public sealed record ThroughputEstimate
{
    public required ThroughputKind Kind { get; init; }

    public required double TokensPerSecond { get; init; }

    /// <summary>Prompt tokens per second (compute bound).</summary>
    public required double PrefillTokensPerSecond { get; init; }

    /// <summary>USD per million tokens of <see cref="Kind"/> at the placement's hourly price.</summary>
    public required double UsdPerMillionTokens { get; init; }
}

/// <summary>
/// Roofline estimates. Decode is bandwidth bound: each step reads the (touched) weights once for the
/// whole batch plus every sequence's KV cache (on average half the context), at 65% of peak bandwidth;
/// it becomes compute bound at large batches (2 FLOPs per active parameter per token at 50% of peak).
/// Every step also pays the runtime's fixed cost per layer (<see cref="StepOverheadPerLayer"/>: kernel
/// launches and host work that eager runtimes do not overlap with the GPU; CUDA graphs remove most of it).
/// Tensor parallelism adds two all-reduces per layer (10 µs on NVLink, 30 µs over PCIe). Prefill and
/// training are compute bound (training: 6 FLOPs per parameter per token, 8 with checkpointing; LoRA:
/// 4 and 6 as frozen weights need no weight gradients; at 40% MFU).
/// </summary>
public static class ThroughputModel
{
    public const double BandwidthEfficiency = 0.65;
    public const double DecodeComputeEfficiency = 0.5;
    public const double PrefillEfficiency = 0.5;
    public const double TrainingMfu = 0.4;

    /// <summary>
    /// Seconds per decoder layer per decode step that are not memory or compute time. Measured on an H200 with a
    /// random 7B-shaped bf16 Llama (32 layers, 128-token prompt, 128 new tokens): lowbit-engine eager 63.5 tokens/s at
    /// batch 1 → 0.36 ms (15.7 ms per step less 4.3 ms of weight reads); transformers eager 51.6 tokens/s at batch 1
    /// and 1,339 at batch 32 → 0.52 ms. vLLM (CUDA graphs) and llama.cpp are not calibrated yet: 0.02 and 0.03 ms.
    /// </summary>
    public static double StepOverheadPerLayer(ServingRuntime runtime) => runtime switch
    {
        ServingRuntime.Lowbit => 0.36e-3,
        ServingRuntime.Transformers => 0.52e-3,
        ServingRuntime.Vllm => 0.02e-3,
        _ => 0.03e-3,
    };

    public static ThroughputEstimate Estimate(ModelArchitecture model, in ParameterCounts p, Workload w, NodeType node, int devices, double hourlyUsd)
    {
        var flops = node.Bf16Tflops * 1e12 * devices;
        var prefill = flops * PrefillEfficiency / (2.0 * p.Active);
        double tokensPerSecond;
        ThroughputKind kind;
        if (w.Mode == WorkloadMode.Inference)
        {
            kind = ThroughputKind.Decode;
            tokensPerSecond = Decode(model, p, w, node, devices);
        }
        else if (w.Mode == WorkloadMode.Quantize)
        {
            kind = ThroughputKind.Calibration;
            tokensPerSecond = flops * TrainingMfu / (2.0 * p.Active);
        }
        else
        {
            kind = ThroughputKind.Training;
            var lora = w.Mode is WorkloadMode.Lora or WorkloadMode.Qlora;
            var flopsPerToken = ((lora ? 4.0 : 6.0) + (w.GradientCheckpointing ? 2.0 : 0.0)) * p.Active;
            tokensPerSecond = flops * TrainingMfu / flopsPerToken;
        }
        return new ThroughputEstimate
        {
            Kind = kind,
            TokensPerSecond = tokensPerSecond,
            PrefillTokensPerSecond = prefill,
            UsdPerMillionTokens = tokensPerSecond > 0 ? hourlyUsd / (tokensPerSecond * 3600) * 1e6 : double.PositiveInfinity,
        };
    }

    private static double Decode(ModelArchitecture m, in ParameterCounts p, Workload w, NodeType node, int devices)
    {
        var weights = (double)MemoryEstimator.WeightBytes(p, w.Weights).Bytes;
        if (m.IsMixtureOfExperts)
        {
            // A batch of B tokens touches each expert with probability 1 − (1 − k/E)^B.
            var touched = 1 - Math.Pow(1 - (m.ExpertsPerToken / (double)m.Experts), w.Concurrency);
            var expertBytes = p.ExpertLinear * w.Weights.LinearBitsPerWeight / 8;
            weights -= expertBytes * (1 - touched);
        }
        var kvRead = MemoryEstimator.KvBytesPerToken(m, w.KvCache, devices).Bytes * (w.ContextLength / 2.0) * w.Concurrency;
        var bytesPerDevice = (weights / devices) + kvRead;
        var memoryTime = bytesPerDevice / (node.MemoryBandwidthGBps * 1e9 * BandwidthEfficiency);
        var computeTime = 2.0 * p.Active * w.Concurrency / devices / (node.Bf16Tflops * 1e12 * DecodeComputeEfficiency);
        var communication = devices > 1 ? m.Layers * 2 * (node.Interconnect == Interconnect.NvLink ? 10e-6 : 30e-6) : 0;
        var overhead = node.Kind == DeviceKind.Cpu ? 0 : m.Layers * StepOverheadPerLayer(w.Runtime);
        return w.Concurrency / (Math.Max(memoryTime, computeTime) + communication + overhead);
    }
}
