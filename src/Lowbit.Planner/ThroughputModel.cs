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
/// Roofline-style estimates. A decode step reads the (touched) weights once for the whole batch plus every
/// sequence's KV cache (on average half the context) at 65% of peak bandwidth, and adds its compute, 2 FLOPs per
/// active parameter per token at 15% of peak: at decode batch sizes the GEMMs are far from peak and do not hide
/// behind the reads (fitted on the H200 at batch 1–32; a max(memory, compute) roofline over-estimated batch 32 by
/// 62%). Every step also pays the runtime's fixed cost per layer (<see cref="StepOverheadPerLayer"/>: kernel
/// launches and host work not overlapped with the GPU; CUDA graphs remove most of it), and a runtime may read packed
/// weights slower than its device's bandwidth (<see cref="PackedWeightBytesPerSecond"/>). Tensor parallelism adds two all-reduces per
/// layer (10 µs on NVLink, 30 µs over PCIe). Prefill is compute bound at 50% of peak. Training: 6 FLOPs per parameter
/// per token, 8 with checkpointing (LoRA: 4 and 6, as frozen weights need no weight gradients) plus causal attention,
/// at the runtime's MFU, plus its host cost per layer per micro-step (<see cref="TrainingEfficiency"/>), on one GPU's
/// FLOPs whatever the placement's GPU count (several GPUs run the engine's pipeline split, one stage at a time).
/// </summary>
public static class ThroughputModel
{
    public const double BandwidthEfficiency = 0.65;
    public const double DecodeComputeEfficiency = 0.15;
    public const double PrefillEfficiency = 0.5;
    public const double TrainingMfu = 0.4;

    /// <summary>
    /// Seconds per decoder layer per decode step that are not memory or compute time. lowbit: the engine's serve
    /// decode step is a replayed CUDA graph (issue 13): 221.7 tokens/s at batch 1 for a random 7B-shaped bf16 Llama on
    /// an H200 leaves 0.08 ms per step (2.5 µs per layer) beyond its reads and compute (the eager engine before it:
    /// 0.36 ms per layer). transformers eager: 51.6 tokens/s at batch 1 and 1,339 at batch 32 → 0.52 ms. vLLM (CUDA
    /// graphs) and llama.cpp are not calibrated yet: 0.02 and 0.03 ms.
    /// </summary>
    public static double StepOverheadPerLayer(ServingRuntime runtime) => runtime switch
    {
        ServingRuntime.Lowbit => 0.0025e-3,
        ServingRuntime.Transformers => 0.52e-3,
        ServingRuntime.Vllm => 0.02e-3,
        _ => 0.03e-3,
    };

    /// <summary>
    /// The fastest a runtime reads (and dequantizes) packed weights in a one-row decode step, bytes per second per
    /// device, or infinity where its packed kernels are taken at the bandwidth (vLLM's Marlin, llama.cpp's). lowbit:
    /// 2.25 TB/s, from the 7B int4 g64 at batch 1 on the H100 (486.0 tokens/s, session 21 run 52: 1.62 ms of the 2.06 ms
    /// step for 3.64 GB of codes, scales and zeros beside the step's other costs), which is above the H100's usable
    /// bandwidth here (65 % of 3.35 TB/s), so there it is bandwidth bound. The one-row int4 GEMVs are bound by their
    /// instructions, not their bytes (docs/gpu.md, Nsight Compute run 50), so a faster memory is taken not to speed them
    /// up beyond it. Since session 23 the one-row GEMVs at K ≤ 4,096 run packed fp16 products (int4-v2-h2s, fewer
    /// instructions per code), and the H200 runs them faster than this cap: 578.1 tokens/s there (run 59), which the
    /// estimate under-states by 12.6 % (within the 20 % goal; refit when the down projection gets the same kernel).
    /// </summary>
    public static double PackedWeightBytesPerSecond(ServingRuntime runtime, WeightFormat weights) =>
        runtime == ServingRuntime.Lowbit && LowbitPackedGemv(weights) ? 2.25e12 : double.PositiveInfinity;

    /// <summary>
    /// Whether lowbit's decode step runs these weights through its packed int4 GEMVs: grouped int4 with groups of a
    /// multiple of 32 (Int4Weight.IsEligible in the engine). Its other quantized layers (int8, int3, int2, NF4, ...) stay
    /// packed in memory and are dequantized per call, then multiplied by cuBLAS.
    /// </summary>
    public static bool LowbitPackedGemv(WeightFormat weights) => weights.Name == "int4" && weights.GroupSize % 32 == 0;

    /// <summary>
    /// The most decode rows lowbit's packed GEMVs serve: int4-mma takes 1-8 rows per launch on the tensor cores and
    /// int4-mma16 16 (9-32 rows in slices of 16, each reading the codes); more rows dequantize each projection to 16 bits
    /// (lowbit_kernels_v2.cu, int4_dequantize) and multiply with cuBLAS.
    /// </summary>
    public const int LowbitPackedGemvRows = 32;

    /// <summary>
    /// Time of a packed GEMV step at <paramref name="rows"/> rows relative to one row: one launch per 16 rows, each
    /// reading all the codes (the 1), plus a quarter of that per doubling of its rows (the tensor-core products and the
    /// activations each block stages). Fitted to the 7B int4 g64 on the H100 (run 52: 486.0 / 728.8 / 1,096.7 / 2,019.0 /
    /// 2,980.8 / 3,302.2 tokens/s at 1 / 2 / 4 / 8 / 16 / 32 rows, all within 11 % with the step's other costs).
    /// </summary>
    public static double PackedRowsFactor(int rows)
    {
        var r = Math.Max(1, rows);
        return ((r + 15) / 16) * (1.0 + (0.25 * Math.Log2(Math.Min(r, 16))));
    }

    /// <summary>
    /// A pipeline boundary's cost per decode step, seconds: the hidden states of the batch handed to the next stage and
    /// the wait for it. Estimates, not measured: 20 µs between two GPUs of one node (a device-to-device copy and an event
    /// sync), 100 µs between nodes (a send over the RDMA network plus the receiving stage's scheduling).
    /// </summary>
    public static double PipelineBoundary(bool acrossNodes) => acrossNodes ? 100e-6 : 20e-6;

    /// <summary>
    /// Throughput of one replica on <paramref name="devices"/> devices of <paramref name="node"/>, split into
    /// <paramref name="pipelineStages"/> pipeline stages (over <paramref name="nodes"/> nodes when more than one).
    /// </summary>
    public static ThroughputEstimate Estimate(ModelArchitecture model, in ParameterCounts p, Workload w, NodeType node, int devices, double hourlyUsd,
        int pipelineStages = 1, int nodes = 1)
    {
        var flops = node.Bf16Tflops * 1e12 * devices;
        var prefill = flops * PrefillEfficiency / (2.0 * p.Active);
        double tokensPerSecond;
        ThroughputKind kind;
        if (w.Mode == WorkloadMode.Inference)
        {
            kind = ThroughputKind.Decode;
            tokensPerSecond = Decode(model, p, w, node, devices, pipelineStages, nodes);
        }
        else if (w.Mode == WorkloadMode.Quantize)
        {
            kind = ThroughputKind.Calibration;
            tokensPerSecond = flops * TrainingMfu / (2.0 * p.Active);
        }
        else
        {
            kind = ThroughputKind.Training;
            tokensPerSecond = Training(model, p, w, node, devices);
        }
        return new ThroughputEstimate
        {
            Kind = kind,
            TokensPerSecond = tokensPerSecond,
            PrefillTokensPerSecond = prefill,
            UsdPerMillionTokens = tokensPerSecond > 0 ? hourlyUsd / (tokensPerSecond * 3600) * 1e6 : double.PositiveInfinity,
        };
    }

    /// <summary>
    /// Fraction of peak bf16 FLOP/s a runtime's training GEMMs reach, and its host cost per decoder layer per micro-step
    /// (calls, autograd nodes and launches not hidden behind the GPU; 1.25× with checkpointing, whose recompute issues
    /// the forward's calls again). lowbit 58 % and 3.8 ms: solved from the 7B LoRA r 16 rows with and without
    /// checkpointing on the H100 of session 10 (engine with the flat AdamW and fused projection groups; 6,739 and 9,159
    /// tokens/s); the H200 rows of the older engine (47 %, 6.8 ms) are excluded. transformers + PEFT 30 % and 2.8 ms,
    /// fitted on the H200 and within 20 % on the H100.
    /// </summary>
    public static (double Mfu, double HostPerLayer) TrainingEfficiency(ServingRuntime runtime) => runtime switch
    {
        ServingRuntime.Lowbit => (0.58, 3.8e-3),
        _ => (0.30, 2.8e-3),
    };

    /// <summary>
    /// The share of the GPU's memory bandwidth at which the lowbit engine's QLoRA writes the 16-bit weights it
    /// dequantizes (each projection once in the forward, again in the backward, and in the recompute with
    /// checkpointing): 5 %, from QLoRA 4-bit at 3,831.3 tokens/s against LoRA's 6,739.4 on the H100 (0.168 TB/s of
    /// 3.35; the H200's older rows gave 0.26 of 4.8 TB/s, 5.4 %). The dequantization kernels are bandwidth-bound, so the
    /// rate follows the card.
    /// </summary>
    public const double QloraDequantizeBandwidthFraction = 0.05;

    /// <summary>
    /// One replica's training tokens per second. On several GPUs our engine's <c>finetune --shards</c> runs the layers as
    /// a pipeline whose stages work one after another on each micro-batch: the same FLOPs, host work and dequantization
    /// as on one GPU (no speed-up), plus <see cref="PipelineBoundary"/> twice per boundary per micro-step (the hidden
    /// states forward, their gradient backward).
    /// </summary>
    private static double Training(ModelArchitecture m, in ParameterCounts p, Workload w, NodeType node, int devices)
    {
        var (mfu, hostPerLayer) = TrainingEfficiency(w.Runtime);
        var lora = w.Mode is WorkloadMode.Lora or WorkloadMode.Qlora;
        var recompute = w.GradientCheckpointing ? 1.0 : 0.0;
        // Weights: forward 2, input gradients 2, weight gradients 2 (trained weights only), recompute 2 per parameter.
        var linearFlops = ((lora ? 4.0 : 6.0) + (2.0 * recompute)) * p.Active;
        // Causal attention scores and their product with v: 2·T·hidden per token and layer forward, twice that backward.
        var attentionFlops = 2.0 * w.SequenceLength * m.HiddenSize * m.Layers * (3.0 + recompute);
        var tokens = (double)w.SequenceLength * w.MicroBatch;
        var compute = tokens * (linearFlops + attentionFlops) / (node.Bf16Tflops * 1e12 * mfu);
        var host = node.Kind == DeviceKind.Cpu ? 0 : m.Layers * hostPerLayer * (1.0 + (0.25 * recompute));
        var dequantize = w.Mode == WorkloadMode.Qlora && w.Runtime == ServingRuntime.Lowbit && node.Kind != DeviceKind.Cpu
            ? (2.0 + recompute) * p.ActiveBlockLinear * 2.0 / (node.MemoryBandwidthGBps * 1e9 * QloraDequantizeBandwidthFraction)
            : 0;
        var boundaries = 2.0 * (devices - 1) * PipelineBoundary(acrossNodes: false);
        return tokens / (compute + host + dequantize + boundaries);
    }

    /// <summary>
    /// One decode step. Tensor parallelism divides the reads and the compute of each layer over its shards; pipeline
    /// stages run in sequence for a batch (no micro-batch overlap is assumed, which is what batch 1 gets), so a step
    /// reads the whole model's share of one tensor-parallel shard and pays every stage's launches, plus
    /// <see cref="PipelineBoundary"/> per boundary.
    /// </summary>
    private static double Decode(ModelArchitecture m, in ParameterCounts p, Workload w, NodeType node, int devices, int stages, int nodes)
    {
        var weights = (double)MemoryEstimator.WeightBytes(p, w.Weights).Bytes;
        if (m.IsMixtureOfExperts)
        {
            // A batch of B tokens touches each expert with probability 1 − (1 − k/E)^B.
            var touched = 1 - Math.Pow(1 - (m.ExpertsPerToken / (double)m.Experts), w.Concurrency);
            var expertBytes = p.ExpertLinear * w.Weights.LinearBitsPerWeight / 8;
            weights -= expertBytes * (1 - touched);
        }
        var tensorParallel = devices / stages;
        var kvRead = MemoryEstimator.KvBytesPerToken(m, w.KvCache, tensorParallel).Bytes * (w.ContextLength / 2.0) * w.Concurrency;
        var gpu = node.Kind != DeviceKind.Cpu;
        var bandwidth = node.MemoryBandwidthGBps * 1e9 * BandwidthEfficiency;
        double weightTime;
        if (gpu && w.Runtime == ServingRuntime.Lowbit && !w.Weights.IsHighPrecision)
        {
            // The block linears (as touched by this batch) are packed; the embedding, head and norms are 16-bit.
            var dense = MemoryEstimator.WeightBytes(p, w.Weights).Bytes - ((double)p.BlockLinear * w.Weights.LinearBitsPerWeight / 8);
            var packed = weights - dense;
            var linearWeights = packed * 8 / w.Weights.LinearBitsPerWeight;
            weightTime = LowbitPackedGemv(w.Weights) && w.Concurrency <= LowbitPackedGemvRows
                // The packed GEMVs, slower per row added; the 16-bit embedding and head at the bandwidth.
                ? (packed * PackedRowsFactor(w.Concurrency) / Math.Min(bandwidth, PackedWeightBytesPerSecond(w.Runtime, w.Weights))) + (dense / bandwidth)
                // Dequantize (read packed, write 16-bit), then cuBLAS reads the 16-bit weight: 4 bytes per weight more.
                : (packed + (4.0 * linearWeights) + dense) / bandwidth;
        }
        else
        {
            weightTime = weights / (gpu ? Math.Min(bandwidth, PackedWeightBytesPerSecond(w.Runtime, w.Weights)) : bandwidth);
        }
        var memoryTime = (weightTime / tensorParallel) + (kvRead / bandwidth);
        var computeTime = 2.0 * p.Active * w.Concurrency / tensorParallel / (node.Bf16Tflops * 1e12 * DecodeComputeEfficiency);
        var communication = tensorParallel > 1 ? m.Layers * 2 * (node.Interconnect == Interconnect.NvLink ? 10e-6 : 30e-6) : 0;
        communication += (stages - 1) * PipelineBoundary(nodes > 1);
        var overhead = gpu ? m.Layers * StepOverheadPerLayer(w.Runtime) : 0;
        return w.Concurrency / (memoryTime + computeTime + communication + overhead);
    }
}
