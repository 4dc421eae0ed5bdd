namespace Lowbit.Planner;

/// <summary>The names users type for modes, runtimes, KV formats and optimizers, and their parsers.</summary>
public static class PlannerNames
{
    public static readonly IReadOnlyList<string> Modes = ["inference", "quantize", "lora", "qlora", "full", "lowbit-full"];

    public static readonly IReadOnlyList<string> Runtimes = ["lowbit", "vllm", "llamacpp", "transformers"];

    public static readonly IReadOnlyList<string> KvCacheFormats = ["fp16", "fp8"];

    public static readonly IReadOnlyList<string> Optimizers = ["adamw", "adamw-8bit"];

    public static WorkloadMode ParseMode(string value) => value.Trim().ToLowerInvariant() switch
    {
        "inference" => WorkloadMode.Inference,
        "quantize" => WorkloadMode.Quantize,
        "lora" => WorkloadMode.Lora,
        "qlora" => WorkloadMode.Qlora,
        "full" => WorkloadMode.Full,
        "lowbit-full" => WorkloadMode.LowbitFull,
        _ => throw new PlanInputException("mode", $"unknown mode '{value}'", Modes),
    };

    public static string Name(WorkloadMode mode) => mode switch
    {
        WorkloadMode.LowbitFull => "lowbit-full",
        _ => mode.ToString().ToLowerInvariant(),
    };

    public static ServingRuntime ParseRuntime(string value) => value.Trim().ToLowerInvariant() switch
    {
        "lowbit" => ServingRuntime.Lowbit,
        "vllm" => ServingRuntime.Vllm,
        "llamacpp" or "llama.cpp" => ServingRuntime.LlamaCpp,
        "transformers" or "hf" => ServingRuntime.Transformers,
        _ => throw new PlanInputException("runtime", $"unknown runtime '{value}'", Runtimes),
    };

    public static string Name(ServingRuntime runtime) => runtime.ToString().ToLowerInvariant();

    public static readonly IReadOnlyList<string> Attentions = ["sdpa", "eager"];

    public static AttentionKind ParseAttention(string value) => value.Trim().ToLowerInvariant() switch
    {
        "sdpa" or "flash" or "flash_attention_2" => AttentionKind.Sdpa,
        "eager" => AttentionKind.Eager,
        _ => throw new PlanInputException("attention", $"unknown attention implementation '{value}'", Attentions),
    };

    public static string Name(AttentionKind attention) => attention.ToString().ToLowerInvariant();

    public static KvCacheFormat ParseKvCache(string value) => value.Trim().ToLowerInvariant() switch
    {
        "fp16" or "bf16" => KvCacheFormat.Fp16,
        "fp8" or "int8" or "q8_0" => KvCacheFormat.Fp8,
        _ => throw new PlanInputException("kv-cache", $"unknown KV cache format '{value}'", KvCacheFormats),
    };

    public static OptimizerKind ParseOptimizer(string value) => value.Trim().ToLowerInvariant() switch
    {
        "adamw" => OptimizerKind.AdamW,
        "adamw-8bit" or "adamw8bit" => OptimizerKind.AdamW8Bit,
        _ => throw new PlanInputException("optimizer", $"unknown optimizer '{value}'", Optimizers),
    };

    /// <summary>The weights format a mode uses when none is given.</summary>
    public static string DefaultWeights(WorkloadMode mode) => mode switch
    {
        WorkloadMode.Quantize => "int4",
        WorkloadMode.Qlora => "nf4",
        WorkloadMode.LowbitFull => "int8",
        _ => "bf16",
    };
}
