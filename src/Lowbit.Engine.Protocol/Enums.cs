namespace Lowbit.Engine.Protocol;

/// <summary>Where the engine computes. Absent on the command line: <c>cuda</c> when available, else <c>cpu</c>.</summary>
public enum ComputeDevice
{
    Cpu,
    Cuda,
}

/// <summary>Weight quantization algorithm.</summary>
public enum QuantizationMethod
{
    /// <summary>Round-to-nearest, group-wise min-max.</summary>
    Rtn,

    /// <summary>Half-quadratic quantization (calibration-free zero-point optimization).</summary>
    Hqq,

    /// <summary>GPTQ (second-order, needs calibration text).</summary>
    Gptq,
}

/// <summary>Zero-point scheme of the rtn and gptq quantizers.</summary>
public enum ZeroPointScheme
{
    /// <summary>Group-wise min-max with an integer zero-point (more accurate).</summary>
    Asym,

    /// <summary>Zero fixed at the code midpoint (2^(bits−1)): what vLLM's Marlin GPTQ kernel needs.</summary>
    Sym,
}

/// <summary>Fine-tuning method.</summary>
public enum FinetuneMethod
{
    Lora,
    Qlora,
    Full,
}

/// <summary>Layout of a fine-tuning dataset (JSONL for alpaca/chat, plain text otherwise).</summary>
public enum DatasetFormat
{
    Alpaca,
    Chat,
    Text,
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
