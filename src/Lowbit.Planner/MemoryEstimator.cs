namespace Lowbit.Planner;

/// <summary>Memory one device needs, by purpose.</summary>
public sealed record MemoryBreakdown
{
    public required ByteSize Weights { get; init; }

    public required ByteSize KvCache { get; init; }

    public required ByteSize Activations { get; init; }

    public required ByteSize Optimizer { get; init; }

    public required ByteSize Gradients { get; init; }

    /// <summary>CUDA context, runtime buffers and allocator slack.</summary>
    public required ByteSize Overhead { get; init; }

    public ByteSize Total => Weights + KvCache + Activations + Optimizer + Gradients + Overhead;
}

/// <summary>
/// The memory model. Everything is per device for one replica spread over <c>devices</c> devices:
/// inference shards weights and KV heads tensor-parallel; training shards weights, gradients and
/// optimizer state ZeRO-3/FSDP style and keeps one micro-batch of activations per GPU.
/// </summary>
public static class MemoryEstimator
{
    /// <summary>Headroom kept free on a device (5%) for lowbit, llama.cpp and training.</summary>
    public const double Headroom = 0.05;

    /// <summary>vLLM's default <c>gpu_memory_utilization</c>: it reserves this fraction and nothing else.</summary>
    public const double VllmGpuMemoryUtilization = 0.90;

    /// <summary>CPU nodes keep 10% of RAM for the OS and page cache.</summary>
    public const double CpuUsableFraction = 0.90;

    /// <summary>Tokens a prefill step processes at once (lowbit-engine chunked prefill).</summary>
    public const int LowbitPrefillChunk = 512;

    /// <summary>vLLM <c>max_num_batched_tokens</c> (chunked prefill default for online serving).</summary>
    public const int VllmPrefillChunk = 2048;

    /// <summary>llama.cpp <c>n_ubatch</c> default.</summary>
    public const int LlamaCppPrefillChunk = 512;

    /// <summary>The fraction of a device's memory a workload may fill.</summary>
    public static double UsableFraction(Workload workload, DeviceKind kind) => kind switch
    {
        DeviceKind.Cpu => CpuUsableFraction,
        _ when workload.Mode == WorkloadMode.Inference && workload.Runtime == ServingRuntime.Vllm => VllmGpuMemoryUtilization,
        _ => 1 - Headroom,
    };

    public static MemoryBreakdown Estimate(ModelArchitecture model, Workload workload, int devices = 1, DeviceKind kind = DeviceKind.Gpu)
    {
        var parameters = model.Parameters;
        return Estimate(model, parameters, workload, devices, kind);
    }

    internal static MemoryBreakdown Estimate(ModelArchitecture model, in ParameterCounts p, Workload workload, int devices, DeviceKind kind)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(devices, 1);
        var raw = workload.Mode switch
        {
            WorkloadMode.Inference => Inference(model, p, workload, devices),
            WorkloadMode.Quantize => Quantize(model, p, workload),
            WorkloadMode.Full => Full(model, p, workload, devices),
            WorkloadMode.Lora or WorkloadMode.Qlora => Lora(model, p, workload, devices),
            WorkloadMode.LowbitFull => LowbitFull(model, p, workload, devices),
            _ => throw new ArgumentOutOfRangeException(nameof(workload), workload.Mode, "unknown mode"),
        };
        return raw with { Overhead = Overhead(raw, workload, kind) };
    }

    /// <summary>
    /// Stored weight bytes of the whole model in a format: block linears at the format's bits (+ per-row
    /// scales), embeddings and head at the format's embedding precision, norms/biases/router at 16-bit
    /// (32-bit in fp32).
    /// </summary>
    public static ByteSize WeightBytes(in ParameterCounts p, WeightFormat format)
    {
        var otherBits = format.LinearBitsPerWeight >= 32 ? 32 : 16;
        return ByteSize.FromBytes(((p.BlockLinear * format.LinearBitsPerWeight)
                                   + (p.BlockLinearRows * format.BitsPerRow)
                                   + ((p.Embedding + p.Head) * format.EmbeddingBitsPerWeight)
                                   + (p.Other * otherBits)) / 8);
    }

    /// <summary>Bytes of KV cache per token on one tensor-parallel shard (KV heads replicate when shards exceed them).</summary>
    public static ByteSize KvBytesPerToken(ModelArchitecture model, KvCacheFormat format, int shards = 1)
    {
        var kvHeadsPerShard = model.KvHeads >= shards ? model.KvHeads / (double)shards : 1;
        var elementBytes = format == KvCacheFormat.Fp8 ? 1 : 2;
        return ByteSize.FromBytes(2.0 * model.Layers * kvHeadsPerShard * model.HeadDim * elementBytes);
    }

    /// <summary>
    /// Serving: weights/N + KV for context × concurrency tokens + the activation peak of one prefill chunk
    /// (hidden states, q/k/v, MLP intermediates of the routed experts, all 16-bit) + fp32 logits of the
    /// last position of every sequence.
    /// </summary>
    private static MemoryBreakdown Inference(ModelArchitecture m, in ParameterCounts p, Workload w, int n)
    {
        var tokensInFlight = (long)w.ContextLength * w.Concurrency;
        var chunkLimit = w.Runtime switch
        {
            ServingRuntime.Vllm => VllmPrefillChunk,
            ServingRuntime.LlamaCpp => LlamaCppPrefillChunk,
            _ => LowbitPrefillChunk,
        };
        var chunk = Math.Min(tokensInFlight, chunkLimit);
        var mlpWidth = (double)m.IntermediateSize * m.ExpertsPerToken * (m.Mlp == MlpKind.Gated ? 2 : 1);
        var perToken = (4.0 * m.HiddenSize) + ((m.QueryDim + (2.0 * m.KvDim) + mlpWidth) / n);
        var activations = (chunk * perToken * 2) + (w.Concurrency * (double)m.VocabSize * 4);
        return new MemoryBreakdown
        {
            Weights = WeightBytes(p, w.Weights) / n,
            KvCache = ByteSize.FromBytes(KvBytesPerToken(m, w.KvCache, n).Bytes * (double)tokensInFlight),
            Activations = ByteSize.FromBytes(activations),
            Optimizer = ByteSize.Zero,
            Gradients = ByteSize.Zero,
            Overhead = ByteSize.Zero,
        };
    }

    /// <summary>
    /// Quantization loads 16-bit weights layer by layer: one layer in 16-bit + the quantized output so far
    /// (the whole model at the end) + calibration activations (inputs and outputs of the current layer for
    /// every sample, 16-bit) + a GPTQ Hessian (fp32, widest input squared) when calibrating.
    /// </summary>
    private static MemoryBreakdown Quantize(ModelArchitecture m, in ParameterCounts p, Workload w)
    {
        var calibration = w.CalibrationSamples > 0
            ? (2.0 * w.CalibrationSamples * w.SequenceLength * m.HiddenSize * 2) + ((double)p.MaxLinearInput * p.MaxLinearInput * 4)
            : 0;
        return new MemoryBreakdown
        {
            Weights = WeightBytes(p, w.Weights) + ByteSize.FromBytes(p.LinearPerLayer * 2.0),
            KvCache = ByteSize.Zero,
            Activations = ByteSize.FromBytes(calibration),
            Optimizer = ByteSize.Zero,
            Gradients = ByteSize.Zero,
            Overhead = ByteSize.Zero,
        };
    }

    /// <summary>
    /// Full fine-tune, mixed precision: bf16 weights (2 B) + bf16 gradients (2 B) + fp32 master weights and
    /// two AdamW moments (12 B; 8-bit Adam: 4 + 2) = 16 bytes per parameter, sharded over N GPUs, plus an
    /// FSDP all-gather buffer of two layers when N &gt; 1. fp32 weights: 4 + 4 + 8 (no separate master).
    /// </summary>
    private static MemoryBreakdown Full(ModelArchitecture m, in ParameterCounts p, Workload w, int n)
    {
        if (!w.Weights.IsHighPrecision)
        {
            throw new PlanInputException("weights", $"mode full trains 16- or 32-bit weights, not {w.Weights.Name} (use lowbit-full or qlora for quantized weights)", ["bf16", "fp16", "fp32"]);
        }
        var total = (double)p.Total;
        var fp32 = w.Weights.LinearBitsPerWeight >= 32;
        var weightBytes = fp32 ? 4 : 2;
        var stateBytes = w.EffectiveOptimizer == OptimizerKind.AdamW8Bit ? 2 : 8;
        var masterBytes = fp32 ? 0 : 4;
        var gatherBuffer = n > 1 ? 2.0 * p.LinearPerLayer * weightBytes : 0;
        return new MemoryBreakdown
        {
            Weights = ByteSize.FromBytes((total * weightBytes / n) + gatherBuffer),
            KvCache = ByteSize.Zero,
            Activations = TrainingActivations(m, w),
            Optimizer = ByteSize.FromBytes(total * (masterBytes + stateBytes) / n),
            Gradients = ByteSize.FromBytes(total * weightBytes / n),
            Overhead = ByteSize.Zero,
        };
    }

    /// <summary>
    /// LoRA / QLoRA: the frozen base at its format (LoRA: 16-bit; QLoRA: NF4 or intN) + rank-r adapters on
    /// every block linear kept in fp32 (4 B) with fp32 gradients (4 B) and AdamW moments (8 B; 8-bit: 2 B).
    /// QLoRA adds a bf16 buffer for the widest dequantized matrix.
    /// </summary>
    private static MemoryBreakdown Lora(ModelArchitecture m, in ParameterCounts p, Workload w, int n)
    {
        if (w.Mode == WorkloadMode.Lora && !w.Weights.IsHighPrecision)
        {
            throw new PlanInputException("weights", $"mode lora trains on a 16-bit base, not {w.Weights.Name} (use qlora for a quantized base)", ["bf16", "fp16", "fp32"]);
        }
        if (w.LoraRank < 1)
        {
            throw new PlanInputException("lora-rank", $"must be at least 1, got {w.LoraRank}");
        }
        var adapters = (double)w.LoraRank * p.LoraParametersPerRank;
        var stateBytes = w.EffectiveOptimizer == OptimizerKind.AdamW8Bit ? 2 : 8;
        var dequantBuffer = w.Weights.IsHighPrecision ? 0 : (double)p.MaxLinearInput * Math.Max(m.HiddenSize, m.QueryDim) * 2;
        return new MemoryBreakdown
        {
            Weights = ByteSize.FromBytes((WeightBytes(p, w.Weights).Bytes + (adapters * 4)) / n),
            KvCache = ByteSize.Zero,
            Activations = TrainingActivations(m, w) + ByteSize.FromBytes(dequantBuffer),
            Optimizer = ByteSize.FromBytes(adapters * stateBytes / n),
            Gradients = ByteSize.FromBytes(adapters * 4 / n),
            Overhead = ByteSize.Zero,
        };
    }

    /// <summary>
    /// Low-bit full-parameter training (GaLore / Q-GaLore): weights stay quantized (default int8) and are
    /// updated in place; block-linear gradients are projected to rank r, so the optimizer keeps two
    /// moments of r × max(in, out) per matrix (8-bit Adam: 1 B each) and an int4 projector of
    /// r × min(in, out); embeddings, head and norms are trained directly with 8-bit Adam. Updates are
    /// applied layer by layer during backward, so only the largest single gradient (a layer's linears,
    /// the embedding or the head) is live at once, in bf16.
    /// </summary>
    private static MemoryBreakdown LowbitFull(ModelArchitecture m, in ParameterCounts p, Workload w, int n)
    {
        if (w.ProjectionRank < 1)
        {
            throw new PlanInputException("projection-rank", $"must be at least 1, got {w.ProjectionRank}");
        }
        var momentBytes = w.EffectiveOptimizer == OptimizerKind.AdamW8Bit ? 1.0 : 4.0;
        var direct = (double)(p.Embedding + p.Head + p.Other);
        var optimizer = ((double)w.ProjectionRank * p.ProjectedStatePerRank * 2 * momentBytes)
                        + ((double)w.ProjectionRank * p.ProjectorPerRank * 0.5)
                        + (direct * 2 * momentBytes);
        var largestGradient = Math.Max(p.LinearPerLayer, Math.Max(p.Embedding, p.Head)) * 2.0;
        var dequantBuffer = (double)p.MaxLinearInput * Math.Max(m.HiddenSize, m.QueryDim) * 2;
        return new MemoryBreakdown
        {
            Weights = WeightBytes(p, w.Weights) / n,
            KvCache = ByteSize.Zero,
            Activations = TrainingActivations(m, w) + ByteSize.FromBytes(dequantBuffer),
            Optimizer = ByteSize.FromBytes(optimizer / n),
            Gradients = ByteSize.FromBytes(largestGradient),
            Overhead = ByteSize.Zero,
        };
    }

    /// <summary>
    /// Activations saved for backward on one GPU, 16-bit, flash attention (no score matrix): per layer and
    /// token the norm inputs and residuals (≈ 6 hidden), q/k/v, and the MLP intermediates (gated: 4 ×
    /// intermediate per routed expert; dense: 2 ×). With gradient checkpointing only each layer's input is
    /// kept, plus one layer recomputed during backward. Logits: bf16 + fp32 copy for the loss and its fp32
    /// gradient ≈ 10 bytes per token per vocabulary entry.
    /// </summary>
    private static ByteSize TrainingActivations(ModelArchitecture m, Workload w)
    {
        var tokens = (double)w.SequenceLength * w.MicroBatch;
        var mlp = (double)m.IntermediateSize * m.ExpertsPerToken * (m.Mlp == MlpKind.Gated ? 4 : 2);
        var layerBytes = tokens * ((6.0 * m.HiddenSize) + m.QueryDim + (2.0 * m.KvDim) + mlp) * 2;
        var stored = w.GradientCheckpointing
            ? (m.Layers * tokens * m.HiddenSize * 2) + layerBytes
            : m.Layers * layerBytes;
        var logits = tokens * m.VocabSize * 10;
        return ByteSize.FromBytes(stored + logits);
    }

    /// <summary>
    /// Runtime overhead per device: the CUDA context and runtime buffers (lowbit/TorchSharp 0.75 GiB,
    /// vLLM 1 GiB with CUDA graphs, llama.cpp 0.4 GiB; a CPU process 0.5 GiB). Serving and quantizing
    /// allocate their tensors once, so allocator slack is left to the 5% headroom; training churns
    /// activations and gradients every step, so it also pays 5% allocator slack on its tensors.
    /// </summary>
    private static ByteSize Overhead(MemoryBreakdown m, Workload w, DeviceKind kind)
    {
        var tensors = m.Weights + m.KvCache + m.Activations + m.Optimizer + m.Gradients;
        var trainingSlack = w.IsTraining ? tensors * 0.05 : ByteSize.Zero;
        if (kind == DeviceKind.Cpu)
        {
            return ByteSize.FromGiB(0.5) + trainingSlack;
        }
        return w.Mode switch
        {
            WorkloadMode.Inference => ByteSize.FromGiB(w.Runtime switch
            {
                ServingRuntime.Vllm => 1.0,
                ServingRuntime.LlamaCpp => 0.4,
                _ => 0.75,
            }),
            WorkloadMode.Quantize => ByteSize.FromGiB(0.75),
            _ => ByteSize.FromGiB(0.75) + trainingSlack,
        };
    }
}
