using Lowbit.Engine.Protocol;

namespace Lowbit.Planner;

/// <summary>What the placement is for.</summary>
public enum WorkloadMode
{
    /// <summary>Serving: weights + KV cache + prefill activations.</summary>
    Inference,

    /// <summary>Post-training quantization: one 16-bit layer at a time + the quantized output + calibration.</summary>
    Quantize,

    /// <summary>LoRA on a frozen 16-bit base.</summary>
    Lora,

    /// <summary>LoRA on a frozen 4-bit (NF4 or intN) base.</summary>
    Qlora,

    /// <summary>Full fine-tune: AdamW with fp32 master weights and states (on several GPUs: a pipeline split of the layers, not sharded).</summary>
    Full,

    /// <summary>Full-parameter training on quantized weights with low-rank gradient projection (GaLore / Q-GaLore).</summary>
    LowbitFull,
}

/// <summary>How attention is computed, which decides whether the score matrix is materialized.</summary>
public enum AttentionKind
{
    /// <summary>Fused attention (PyTorch SDPA flash / memory-efficient kernels, FlashAttention-2): no score matrix.</summary>
    Sdpa,

    /// <summary>Eager attention: scores [heads × seq × seq] materialized (softmax in fp32), and saved for backward in training.</summary>
    Eager,
}

/// <summary>The projections LoRA adapts (PEFT <c>target_modules</c>); dense MLPs map gate/up to fc1 and down to fc2.</summary>
[Flags]
public enum LoraTargets
{
    None = 0,
    Q = 1,
    K = 2,
    V = 4,
    O = 8,
    Gate = 16,
    Up = 32,
    Down = 64,

    /// <summary>PEFT's and the LoRA paper's common attention default.</summary>
    QV = Q | V,

    /// <summary>Every block linear (QLoRA's recipe).</summary>
    All = Q | K | V | O | Gate | Up | Down,
}

/// <summary>Element type of the KV cache.</summary>
public enum KvCacheFormat
{
    Fp16,

    /// <summary>8-bit KV cache (fp8 e4m3 in vLLM, q8_0 in llama.cpp).</summary>
    Fp8,
}

/// <summary>Optimizer for training modes.</summary>
public enum OptimizerKind
{
    /// <summary>AdamW for every training mode except lowbit-full, which uses 8-bit Adam (as Q-GaLore does).</summary>
    ModeDefault,

    /// <summary>AdamW with two fp32 moments.</summary>
    AdamW,

    /// <summary>8-bit AdamW (bitsandbytes): two 8-bit moments.</summary>
    AdamW8Bit,
}

/// <summary>The workload half of a plan request. Defaults are what a user gets without flags.</summary>
public sealed record Workload
{
    public required WorkloadMode Mode { get; init; }

    public required WeightFormat Weights { get; init; }

    /// <summary>Tokens of context per sequence (prompt + generation) for inference.</summary>
    public int ContextLength { get; init; } = 4096;

    /// <summary>Sequences served at once (inference) — the batch the KV cache must hold.</summary>
    public int Concurrency { get; init; } = 1;

    /// <summary>Training / calibration sequence length.</summary>
    public int SequenceLength { get; init; } = 2048;

    /// <summary>Sequences per GPU per training step.</summary>
    public int MicroBatch { get; init; } = 1;

    public bool GradientCheckpointing { get; init; }

    public ServingRuntime Runtime { get; init; } = ServingRuntime.Lowbit;

    public KvCacheFormat KvCache { get; init; } = KvCacheFormat.Fp16;

    public OptimizerKind Optimizer { get; init; } = OptimizerKind.ModeDefault;

    /// <summary>Attention implementation (training activations; transformers prefill).</summary>
    public AttentionKind Attention { get; init; } = AttentionKind.Sdpa;

    /// <summary>Tokens one prefill forward processes; 0 = the runtime's default (lowbit 256, vLLM max_num_batched_tokens, llama.cpp n_ubatch 512, transformers the whole batch).</summary>
    public int PrefillChunk { get; init; }

    /// <summary>LoRA rank r.</summary>
    public int LoraRank { get; init; } = 16;

    /// <summary>The projections LoRA adapts (default: every block linear).</summary>
    public LoraTargets LoraTargets { get; init; } = LoraTargets.All;

    /// <summary>Rank of the gradient projection in lowbit-full (GaLore fine-tuning ranks: 128–1024).</summary>
    public int ProjectionRank { get; init; } = 512;

    /// <summary>Calibration sequences for quantize (GPTQ: 128); 0 for calibration-free methods (RTN, HQQ).</summary>
    public int CalibrationSamples { get; init; } = 128;

    public bool IsTraining => Mode is WorkloadMode.Lora or WorkloadMode.Qlora or WorkloadMode.Full or WorkloadMode.LowbitFull;

    public OptimizerKind EffectiveOptimizer => Optimizer switch
    {
        OptimizerKind.ModeDefault => Mode == WorkloadMode.LowbitFull ? OptimizerKind.AdamW8Bit : OptimizerKind.AdamW,
        var chosen => chosen,
    };
}

/// <summary>Budget and SLO limits on a placement.</summary>
public sealed record PlacementConstraints
{
    public static readonly PlacementConstraints None = new();

    /// <summary>Node type names or GPU models allowed (empty: all). Matched ignoring case and punctuation.</summary>
    public IReadOnlyList<string> AllowedGpuTypes { get; init; } = [];

    public double MaxUsdPerHour { get; init; } = double.PositiveInfinity;

    public double MinTokensPerSecond { get; init; }
}
