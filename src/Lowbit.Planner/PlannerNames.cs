using Lowbit.Engine.Protocol;

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

    public static readonly IReadOnlyList<string> LoraTargetNames = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "all-linear"];

    /// <summary>Like <see cref="ParseLoraTargets"/>, but an unknown or empty list counts as every block linear (the largest estimate).</summary>
    public static LoraTargets LoraTargetsOrAll(IEnumerable<string>? modules)
    {
        var targets = LoraTargets.None;
        foreach (var module in modules ?? [])
        {
            var one = module.Trim().ToLowerInvariant() switch
            {
                "q_proj" or "q" => LoraTargets.Q,
                "k_proj" or "k" => LoraTargets.K,
                "v_proj" or "v" => LoraTargets.V,
                "o_proj" or "o" or "dense" => LoraTargets.O,
                "gate_proj" or "gate" or "fc1" or "c_fc" => LoraTargets.Gate,
                "up_proj" or "up" => LoraTargets.Up,
                "down_proj" or "down" or "fc2" or "c_proj" => LoraTargets.Down,
                _ => LoraTargets.All,
            };
            targets |= one;
        }
        return targets == LoraTargets.None ? LoraTargets.All : targets;
    }

    /// <summary>Parses PEFT target module names (<c>q_proj</c> or <c>q</c>; <c>fc1</c>/<c>fc2</c>, <c>c_fc</c>/<c>c_proj</c> for dense MLPs; <c>all-linear</c>).</summary>
    public static LoraTargets ParseLoraTargets(IEnumerable<string> modules)
    {
        ArgumentNullException.ThrowIfNull(modules);
        var targets = LoraTargets.None;
        foreach (var module in modules)
        {
            var key = module.Trim().ToLowerInvariant();
            targets |= key switch
            {
                "q_proj" or "q" => LoraTargets.Q,
                "k_proj" or "k" => LoraTargets.K,
                "v_proj" or "v" => LoraTargets.V,
                "o_proj" or "o" or "dense" => LoraTargets.O,
                "gate_proj" or "gate" or "fc1" or "c_fc" => LoraTargets.Gate,
                "up_proj" or "up" => LoraTargets.Up,
                "down_proj" or "down" or "fc2" or "c_proj" => LoraTargets.Down,
                "all-linear" or "all" => LoraTargets.All,
                _ => throw new PlanInputException("lora-targets", $"unknown target module '{module}'", LoraTargetNames),
            };
        }
        return targets == LoraTargets.None ? throw new PlanInputException("lora-targets", "name at least one target module", LoraTargetNames) : targets;
    }

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
