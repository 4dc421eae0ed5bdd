namespace Lowbit.Planner;

/// <summary>
/// Built-in architectures, with the values of each model's published <c>config.json</c> on the
/// Hugging Face Hub (and, for LLaMA-65B, the LLaMA paper's Table 2). Names are matched
/// case-insensitively.
/// </summary>
public static class ModelPresets
{
    public static readonly ModelArchitecture TinyLlama11B = Llama("TinyLlama-1.1B", "llama", hidden: 2048, intermediate: 5632, layers: 22, heads: 32, kvHeads: 4, vocab: 32000, maxPositions: 2048);

    public static readonly ModelArchitecture Llama2_7B = Llama("Llama-2-7B", "llama", hidden: 4096, intermediate: 11008, layers: 32, heads: 32, kvHeads: 32, vocab: 32000, maxPositions: 4096);

    public static readonly ModelArchitecture Llama2_13B = Llama("Llama-2-13B", "llama", hidden: 5120, intermediate: 13824, layers: 40, heads: 40, kvHeads: 40, vocab: 32000, maxPositions: 4096);

    public static readonly ModelArchitecture Llama2_70B = Llama("Llama-2-70B", "llama", hidden: 8192, intermediate: 28672, layers: 80, heads: 64, kvHeads: 8, vocab: 32000, maxPositions: 4096);

    public static readonly ModelArchitecture Llama65B = Llama("LLaMA-65B", "llama", hidden: 8192, intermediate: 22016, layers: 80, heads: 64, kvHeads: 64, vocab: 32000, maxPositions: 2048);

    public static readonly ModelArchitecture Llama3_8B = Llama("Llama-3-8B", "llama", hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kvHeads: 8, vocab: 128256, maxPositions: 8192);

    public static readonly ModelArchitecture Llama3_70B = Llama("Llama-3-70B", "llama", hidden: 8192, intermediate: 28672, layers: 80, heads: 64, kvHeads: 8, vocab: 128256, maxPositions: 8192);

    /// <summary>Llama 3.1 405B (meta-llama/Llama-3.1-405B config.json): 810 GB in bf16, more than one 8-GPU H100 or A100 node holds.</summary>
    public static readonly ModelArchitecture Llama31_405B = Llama("Llama-3.1-405B", "llama", hidden: 16384, intermediate: 53248, layers: 126, heads: 128, kvHeads: 8, vocab: 128256, maxPositions: 131072);

    public static readonly ModelArchitecture Mistral7B = Llama("Mistral-7B", "mistral", hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kvHeads: 8, vocab: 32000, maxPositions: 32768);

    public static readonly ModelArchitecture Mixtral8x7B = Llama("Mixtral-8x7B", "mixtral", hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kvHeads: 8, vocab: 32000, maxPositions: 32768) with
    {
        Experts = 8,
        ExpertsPerToken = 2,
    };

    public static readonly ModelArchitecture Qwen15_14B = Llama("Qwen1.5-14B", "qwen2", hidden: 5120, intermediate: 13696, layers: 40, heads: 40, kvHeads: 40, vocab: 152064, maxPositions: 32768) with
    {
        QkvBias = true,
    };

    public static readonly ModelArchitecture Qwen15_110B = Llama("Qwen1.5-110B", "qwen2", hidden: 8192, intermediate: 49152, layers: 80, heads: 64, kvHeads: 8, vocab: 152064, maxPositions: 32768) with
    {
        QkvBias = true,
    };

    /// <summary>Gemma-2B: multi-query (1 KV head), head_dim 256, tied embeddings, 256k vocabulary.</summary>
    public static readonly ModelArchitecture Gemma2B = Llama("Gemma-2B", "gemma", hidden: 2048, intermediate: 16384, layers: 18, heads: 8, kvHeads: 1, vocab: 256000, maxPositions: 8192) with
    {
        HeadDim = 256,
        TiedEmbeddings = true,
    };

    /// <summary>Phi-3-mini-4k: fused qkv_proj and gate_up_proj (same parameter count as split ones).</summary>
    public static readonly ModelArchitecture Phi3Mini = Llama("Phi-3-mini", "phi3", hidden: 3072, intermediate: 8192, layers: 32, heads: 32, kvHeads: 32, vocab: 32064, maxPositions: 4096);

    /// <summary>Phi-2: dense fc1/fc2 MLP, LayerNorm, biases everywhere, partial rotary 0.4, parallel block.</summary>
    public static readonly ModelArchitecture Phi2 = new()
    {
        Name = "Phi-2",
        ModelType = "phi",
        HiddenSize = 2560,
        IntermediateSize = 10240,
        Layers = 32,
        AttentionHeads = 32,
        KvHeads = 32,
        HeadDim = 80,
        VocabSize = 51200,
        MaxPositionEmbeddings = 2048,
        Mlp = MlpKind.Dense,
        Norm = NormKind.LayerNorm,
        QkvBias = true,
        OutputBias = true,
        MlpBias = true,
        LmHeadBias = true,
        ParallelBlock = true,
        PartialRotaryFactor = 0.4,
    };

    /// <summary>StarCoder (gpt_bigcode): multi-query attention, learned positions, tied embeddings.</summary>
    public static readonly ModelArchitecture StarCoder = new()
    {
        Name = "StarCoder-15.5B",
        ModelType = "gpt_bigcode",
        HiddenSize = 6144,
        IntermediateSize = 24576,
        Layers = 40,
        AttentionHeads = 48,
        KvHeads = 1,
        HeadDim = 128,
        VocabSize = 49152,
        MaxPositionEmbeddings = 8192,
        TiedEmbeddings = true,
        Mlp = MlpKind.Dense,
        Norm = NormKind.LayerNorm,
        QkvBias = true,
        OutputBias = true,
        MlpBias = true,
        LearnedPositions = 8192,
    };

    /// <summary>Every preset, keyed by its lower-case name.</summary>
    public static readonly IReadOnlyDictionary<string, ModelArchitecture> All = new[]
    {
        TinyLlama11B, Llama2_7B, Llama2_13B, Llama2_70B, Llama65B, Llama3_8B, Llama3_70B, Llama31_405B, Mistral7B,
        Mixtral8x7B, StarCoder, Phi2, Phi3Mini, Qwen15_14B, Qwen15_110B, Gemma2B,
    }.ToDictionary(m => m.Name.ToLowerInvariant(), StringComparer.OrdinalIgnoreCase);

    public static IReadOnlyList<string> Names { get; } = [.. All.Keys.Order(StringComparer.Ordinal)];

    public static bool TryGet(string name, out ModelArchitecture model) => All.TryGetValue(name, out model!);

    /// <summary>The preset named <paramref name="name"/>, or a <see cref="PlanInputException"/> listing the presets.</summary>
    public static ModelArchitecture Get(string name) =>
        TryGet(name, out var model) ? model : throw new PlanInputException("model", $"unknown model '{name}' (give a preset name or a path to a config.json)", Names);

    private static ModelArchitecture Llama(string name, string modelType, int hidden, int intermediate, int layers, int heads, int kvHeads, int vocab, int maxPositions) => new()
    {
        Name = name,
        ModelType = modelType,
        HiddenSize = hidden,
        IntermediateSize = intermediate,
        Layers = layers,
        AttentionHeads = heads,
        KvHeads = kvHeads,
        HeadDim = hidden / heads,
        VocabSize = vocab,
        MaxPositionEmbeddings = maxPositions,
    };
}
