using System.Globalization;

namespace Lowbit.Planner;

/// <summary>
/// How weights are stored. <see cref="LinearBitsPerWeight"/> applies to the transformer blocks' linear
/// matrices (what quantizers compress), plus <see cref="BitsPerRow"/> per output channel for
/// per-channel scales; <see cref="EmbeddingBitsPerWeight"/> to the token embedding and
/// <see cref="HeadBitsPerWeight"/> to an untied output head (the embedding's width unless the head is quantized too,
/// <see cref="WithQuantizedHead"/>). Norms, biases and routers stay 16-bit (they are a few MB).
/// </summary>
public sealed record WeightFormat
{
    /// <summary>The CLI name, e.g. <c>int4</c>, <c>gguf-q4_k_m</c>, <c>bpw-2.5</c>.</summary>
    public required string Name { get; init; }

    public required double LinearBitsPerWeight { get; init; }

    /// <summary>Per-output-channel overhead (int8 per-channel: one fp16 scale per row).</summary>
    public double BitsPerRow { get; init; }

    public required double EmbeddingBitsPerWeight { get; init; }

    /// <summary>
    /// The untied output head (lm_head); <see cref="EmbeddingBitsPerWeight"/> unless set. A tied head is the embedding
    /// table and is stored once, at the embedding's width, whatever this says.
    /// </summary>
    public double HeadBitsPerWeight
    {
        get => _headBitsPerWeight ?? EmbeddingBitsPerWeight;
        init => _headBitsPerWeight = value;
    }

    private readonly double? _headBitsPerWeight;

    /// <summary>Group size for grouped integer formats (0 when not grouped).</summary>
    public int GroupSize { get; init; }

    /// <summary>16-bit or wider: what full fine-tuning and LoRA train on.</summary>
    public bool IsHighPrecision => LinearBitsPerWeight >= 16;

    /// <summary>One line on what is counted, for reports.</summary>
    public required string Description { get; init; }

    public const int DefaultGroupSize = 128;

    /// <summary>
    /// This format with the output head quantized like the block linears (a QuantizedModel's
    /// <c>spec.quantizeHead</c>): the head at <see cref="LinearBitsPerWeight"/>, group overhead included.
    /// </summary>
    public WeightFormat WithQuantizedHead() => this with
    {
        HeadBitsPerWeight = LinearBitsPerWeight,
        Description = string.Create(CultureInfo.InvariantCulture,
            $"{Description.Replace("embeddings and head 16-bit", "embeddings 16-bit", StringComparison.Ordinal)}; head quantized too ({LinearBitsPerWeight:0.###} bpw)"),
    };

    /// <summary>Every name <see cref="Parse"/> accepts (<c>bpw-&lt;X&gt;</c> stands for any X in (1, 16]).</summary>
    public static readonly IReadOnlyList<string> Names =
    [
        "fp32", "bf16", "fp16", "fp8", "int8", "int4", "int3", "int2", "nf4",
        "gguf-q8_0", "gguf-q6_k", "gguf-q5_k_m", "gguf-q4_k_m", "gguf-q4_0", "gguf-q3_k_m", "gguf-q2_k", "bpw-<X>",
    ];

    public static WeightFormat Fp32 => Parse("fp32");

    public static WeightFormat Bf16 => Parse("bf16");

    public static WeightFormat Nf4 => Parse("nf4");

    /// <summary>
    /// Parses a format name. <paramref name="groupSize"/> applies to int8/int4/int3/int2 (default 128 for
    /// int4/3/2; int8 without a group size is per-channel).
    /// </summary>
    public static WeightFormat Parse(string name, int? groupSize = null)
    {
        var key = name.Trim().ToLowerInvariant();
        if (groupSize is { } g && (g < 8 || g > 65536 || (g & (g - 1)) != 0))
        {
            throw new PlanInputException("group-size", $"{g} is not a power of two between 8 and 65536");
        }
        return key switch
        {
            "fp32" => Uniform(key, 32, "32-bit floats everywhere"),
            "bf16" or "fp16" => Uniform(key, 16, "16-bit floats everywhere"),
            // vLLM's fp8 (per-tensor scale) keeps embeddings and lm_head in 16-bit.
            "fp8" => new WeightFormat { Name = key, LinearBitsPerWeight = 8, EmbeddingBitsPerWeight = 16, Description = "fp8 block linears (per-tensor scale); embeddings and head 16-bit" },
            "int8" when groupSize is null => new WeightFormat
            {
                Name = key,
                LinearBitsPerWeight = 8,
                BitsPerRow = 16,
                EmbeddingBitsPerWeight = 16,
                Description = "int8 per-channel (one fp16 scale per output row); embeddings and head 16-bit",
            },
            "int8" or "int4" or "int3" or "int2" => Grouped(key, int.Parse(key.AsSpan(3), CultureInfo.InvariantCulture), groupSize ?? DefaultGroupSize),
            // QLoRA NF4 with double quantization: 4 bits + 8-bit absmax per 64 + fp32 second-level absmax
            // per 256 blocks = 4 + 8/64 + 32/(64·256) ≈ 4.127 bits. bitsandbytes leaves embeddings and head 16-bit.
            "nf4" => new WeightFormat
            {
                Name = key,
                LinearBitsPerWeight = 4 + (8.0 / 64) + (32.0 / (64 * 256)),
                EmbeddingBitsPerWeight = 16,
                GroupSize = 64,
                Description = "NF4 with double quantization (blocks of 64); embeddings and head 16-bit",
            },
            // GGUF: llama.cpp quantizes token_embd and output too, and _M/_S mixes put some tensors at
            // higher types, so these are whole-model effective bits per weight (llama.cpp
            // examples/quantize README, Llama-2-7B), applied to every tensor. Q8_0, Q6_K, Q4_0 are the
            // block sizes from ggml-common.h (34, 210, 18 bytes per 32/256/32 weights).
            "gguf-q8_0" => Uniform(key, 8.5, "GGUF Q8_0: 34-byte blocks of 32, whole model"),
            "gguf-q6_k" => Uniform(key, 6.5625, "GGUF Q6_K: 210-byte super-blocks of 256, whole model"),
            "gguf-q5_k_m" => Uniform(key, 5.68, "GGUF Q5_K_M mix: 5.68 effective bpw, embeddings and output included"),
            "gguf-q4_k_m" => Uniform(key, 4.84, "GGUF Q4_K_M mix: 4.84 effective bpw, embeddings and output included"),
            "gguf-q4_0" => Uniform(key, 4.5, "GGUF Q4_0: 18-byte blocks of 32, whole model"),
            "gguf-q3_k_m" => Uniform(key, 3.91, "GGUF Q3_K_M mix: 3.91 effective bpw, embeddings and output included"),
            "gguf-q2_k" => Uniform(key, 3.35, "GGUF Q2_K mix: 3.35 effective bpw, embeddings and output included"),
            _ when key.StartsWith("bpw-", StringComparison.Ordinal) => MixedBitsPerWeight(key),
            _ => throw new PlanInputException("weights", $"unknown weights format '{name}'", Names),
        };
    }

    /// <summary>
    /// intN with groups: N bits + an fp16 scale and an fp16 zero point per group of G weights
    /// (the HQQ/lowbit layout; GPTQ packs the zero as N bits, slightly smaller). Embeddings and head 16-bit,
    /// as GPTQ/AWQ/HQQ checkpoints keep them.
    /// </summary>
    private static WeightFormat Grouped(string key, int bits, int groupSize) => new()
    {
        Name = key,
        LinearBitsPerWeight = bits + (32.0 / groupSize),
        EmbeddingBitsPerWeight = 16,
        GroupSize = groupSize,
        Description = string.Create(CultureInfo.InvariantCulture, $"int{bits}, group {groupSize}, fp16 scale + fp16 zero per group ({bits + (32.0 / groupSize):0.###} bpw); embeddings and head 16-bit"),
    };

    /// <summary>
    /// A mixed layout averaging X bits over every weight (e.g. EXL2 or HQQ mixed 2/4-bit): the target
    /// already includes whatever precision embeddings and head get, so X applies to all tensors.
    /// </summary>
    private static WeightFormat MixedBitsPerWeight(string key)
    {
        if (!double.TryParse(key.AsSpan(4), NumberStyles.Float, CultureInfo.InvariantCulture, out var bits) || bits <= 1 || bits > 16)
        {
            throw new PlanInputException("weights", $"'{key}': bpw-<X> needs X in (1, 16], e.g. bpw-2.5", Names);
        }
        return Uniform(key, bits, string.Create(CultureInfo.InvariantCulture, $"mixed layout averaging {bits:0.###} bits per weight over the whole model"));
    }

    private static WeightFormat Uniform(string key, double bits, string description) => new()
    {
        Name = key,
        LinearBitsPerWeight = bits,
        EmbeddingBitsPerWeight = bits,
        Description = description,
    };
}
