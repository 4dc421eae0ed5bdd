using System.Text.Json.Serialization;

namespace Lowbit.Engine.Protocol;

/// <summary>Where the engine computes. Absent on the command line: <c>cuda</c> when available, else <c>cpu</c>.</summary>
public enum ComputeDevice
{
    Cpu,
    Cuda,
}

/// <summary>
/// The weight quantization algorithm: the engine's <c>quantize --method</c> and a QuantizedModel's <c>spec.method</c>
/// (one type for both; the JSON names are the manifest spellings).
/// </summary>
[JsonConverter(typeof(JsonStringEnumConverter<QuantizationMethod>))]
public enum QuantizationMethod
{
    /// <summary>Round-to-nearest, group-wise min-max.</summary>
    [JsonStringEnumMemberName("rtn")] Rtn,

    /// <summary>Half-quadratic quantization (calibration-free zero-point optimization).</summary>
    [JsonStringEnumMemberName("hqq")] Hqq,

    /// <summary>GPTQ (second-order, needs calibration text).</summary>
    [JsonStringEnumMemberName("gptq")] Gptq,
}

/// <summary>Zero-point scheme of the rtn and gptq quantizers.</summary>
public enum ZeroPointScheme
{
    /// <summary>Group-wise min-max with an integer zero-point (more accurate).</summary>
    Asym,

    /// <summary>Zero fixed at the code midpoint (2^(bits−1)): what vLLM's Marlin GPTQ kernel needs.</summary>
    Sym,
}

/// <summary>The fine-tuning method: the engine's <c>finetune --method</c> and a FineTuneJob's <c>spec.method</c>.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<FineTuneMethod>))]
public enum FineTuneMethod
{
    [JsonStringEnumMemberName("lora")] Lora,
    [JsonStringEnumMemberName("qlora")] Qlora,
    [JsonStringEnumMemberName("full")] Full,
}

/// <summary>
/// Layout of a fine-tuning dataset (JSONL): the engine's <c>finetune --dataset-format</c> and a FineTuneJob's
/// <c>spec.dataset.format</c>.
/// </summary>
[JsonConverter(typeof(JsonStringEnumConverter<DatasetFormat>))]
public enum DatasetFormat
{
    /// <summary><c>{"instruction", "input", "output"}</c> per line.</summary>
    [JsonStringEnumMemberName("alpaca")] Alpaca,

    /// <summary><c>{"messages": [{"role", "content"}]}</c> per line.</summary>
    [JsonStringEnumMemberName("chat")] Chat,

    /// <summary><c>{"text"}</c> per line.</summary>
    [JsonStringEnumMemberName("text")] Text,
}

/// <summary>
/// The serving runtime: an InferenceEndpoint's <c>spec.runtime</c> (lowbit, vllm, llamacpp) and the planner's
/// memory and throughput model, where each reserves memory differently. <see cref="Transformers"/> is a reference the
/// planner is calibrated against, not something an endpoint can run (the CRD lists the other three).
/// </summary>
[JsonConverter(typeof(JsonStringEnumConverter<ServingRuntime>))]
public enum ServingRuntime
{
    /// <summary>lowbit-engine (TorchSharp): allocates what it needs through the caching allocator.</summary>
    [JsonStringEnumMemberName("lowbit")] Lowbit,

    /// <summary>vLLM: pre-allocates gpu_memory_utilization (0.9) of each GPU; KV blocks fill what weights leave.</summary>
    [JsonStringEnumMemberName("vllm")] Vllm,

    /// <summary>llama.cpp: weights + a KV cache sized to the context + a compute buffer.</summary>
    [JsonStringEnumMemberName("llamacpp")] LlamaCpp,

    /// <summary>Hugging Face transformers, eager PyTorch (generate with a dynamic cache; the whole prompt in one forward).</summary>
    [JsonStringEnumMemberName("transformers")] Transformers,
}

/// <summary>Learning-rate schedule after the linear warm-up.</summary>
public enum LrScheduler
{
    /// <summary>Linear decay to 0 at the last step (transformers' default).</summary>
    Linear,

    /// <summary>Half-cosine decay to 0 at the last step.</summary>
    Cosine,

    /// <summary>Constant after warm-up.</summary>
    Constant,
}
