namespace Lowbit.Planner;

/// <summary>How the feed-forward block is built.</summary>
public enum MlpKind
{
    /// <summary>SwiGLU/GeGLU: gate, up and down projections (Llama, Mistral, Qwen2, Gemma, Phi-3).</summary>
    Gated,

    /// <summary>Two projections with an activation between (GPT-BigCode c_fc/c_proj, Phi-2 fc1/fc2).</summary>
    Dense,
}

/// <summary>Normalization layers: RMSNorm has a weight, LayerNorm a weight and a bias.</summary>
public enum NormKind
{
    RmsNorm,
    LayerNorm,
}

/// <summary>
/// The shape of a decoder-only transformer — everything the memory, throughput and cost models need.
/// Built from a Hugging Face <c>config.json</c> (<see cref="HfConfigParser"/>) or a preset
/// (<see cref="ModelPresets"/>).
/// </summary>
public sealed record ModelArchitecture
{
    /// <summary>A display name, e.g. <c>Llama-2-70B</c>.</summary>
    public required string Name { get; init; }

    /// <summary>The Hugging Face <c>model_type</c>, e.g. <c>llama</c>, <c>gpt_bigcode</c>.</summary>
    public required string ModelType { get; init; }

    public required int HiddenSize { get; init; }

    /// <summary>Feed-forward width of one expert.</summary>
    public required int IntermediateSize { get; init; }

    public required int Layers { get; init; }

    public required int AttentionHeads { get; init; }

    /// <summary>Key/value heads: equal to attention heads (MHA), fewer (GQA) or one (MQA).</summary>
    public required int KvHeads { get; init; }

    public required int HeadDim { get; init; }

    public required int VocabSize { get; init; }

    public int MaxPositionEmbeddings { get; init; } = 4096;

    /// <summary>The output head shares the input embedding matrix.</summary>
    public bool TiedEmbeddings { get; init; }

    /// <summary>Feed-forward experts per layer (1 for a dense model).</summary>
    public int Experts { get; init; } = 1;

    /// <summary>Experts each token is routed to (Mixtral: 2 of 8).</summary>
    public int ExpertsPerToken { get; init; } = 1;

    public MlpKind Mlp { get; init; } = MlpKind.Gated;

    public NormKind Norm { get; init; } = NormKind.RmsNorm;

    /// <summary>Biases on the q, k and v projections (Qwen2, Phi-2, GPT-BigCode).</summary>
    public bool QkvBias { get; init; }

    /// <summary>Bias on the attention output projection (Phi-2 dense, GPT-BigCode c_proj).</summary>
    public bool OutputBias { get; init; }

    /// <summary>Biases on the feed-forward projections.</summary>
    public bool MlpBias { get; init; }

    /// <summary>Bias on the output head (Phi-2).</summary>
    public bool LmHeadBias { get; init; }

    /// <summary>Rows of a learned position-embedding table (GPT-BigCode wpe); 0 for rotary models.</summary>
    public int LearnedPositions { get; init; }

    /// <summary>Attention and MLP read the same normalized input: one norm per layer (Phi-2).</summary>
    public bool ParallelBlock { get; init; }

    /// <summary>Fraction of each head's dimensions that rotary embeddings rotate (Phi-2: 0.4). Informational.</summary>
    public double PartialRotaryFactor { get; init; } = 1.0;

    public bool IsMixtureOfExperts => Experts > 1;

    /// <summary>Query projection width (heads × head dim; not always the hidden size, e.g. Gemma-7B).</summary>
    public int QueryDim => AttentionHeads * HeadDim;

    /// <summary>Width of one of the key or value projections.</summary>
    public int KvDim => KvHeads * HeadDim;

    /// <summary>Parameter counts by role. Pure arithmetic on the fields above.</summary>
    public ParameterCounts Parameters => ParameterCounts.Of(this);
}

/// <summary>
/// Parameters of a model split by the role that decides their storage precision: the block linear
/// matrices (what a quantizer compresses), the embeddings and the output head (kept at their usual
/// precision per format), and the rest (norms, biases, router: always 16-bit and tiny).
/// </summary>
public readonly record struct ParameterCounts
{
    /// <summary>Weight matrices of all transformer blocks, all experts included.</summary>
    public required long BlockLinear { get; init; }

    /// <summary>Output rows of those matrices (one per-channel scale each), all experts included.</summary>
    public required long BlockLinearRows { get; init; }

    /// <summary>Token embedding plus learned position embedding.</summary>
    public required long Embedding { get; init; }

    /// <summary>The output head (0 when tied to the embedding) plus its bias.</summary>
    public required long Head { get; init; }

    /// <summary>Norm weights and biases, projection biases, MoE router.</summary>
    public required long Other { get; init; }

    /// <summary>Block linear parameters of one layer (all experts).</summary>
    public required long LinearPerLayer { get; init; }

    /// <summary>Block linear parameters a token touches (routed experts only).</summary>
    public required long ActiveBlockLinear { get; init; }

    /// <summary>Expert (MoE feed-forward) parameters, all layers, all experts: 0 for dense models.</summary>
    public required long ExpertLinear { get; init; }

    /// <summary>Sum over block linear matrices of (in + out): the LoRA parameters per unit of rank.</summary>
    public required long LoraParametersPerRank { get; init; }

    /// <summary>Sum over block linear matrices of max(in, out): GaLore optimizer state per unit of rank.</summary>
    public required long ProjectedStatePerRank { get; init; }

    /// <summary>Sum over block linear matrices of min(in, out): GaLore projector size per unit of rank.</summary>
    public required long ProjectorPerRank { get; init; }

    /// <summary>The largest input width of any block linear (the GPTQ Hessian is its square).</summary>
    public required long MaxLinearInput { get; init; }

    public long Total => BlockLinear + Embedding + Head + Other;

    /// <summary>Parameters used per token (MoE: routed experts only); drives FLOPs.</summary>
    public long Active => ActiveBlockLinear + Embedding + Head + Other;

    public static ParameterCounts Of(ModelArchitecture m)
    {
        long h = m.HiddenSize;
        long i = m.IntermediateSize;
        long q = m.QueryDim;
        long kv = m.KvDim;
        long experts = m.Experts;

        // Attention: q [q×h], k [kv×h], v [kv×h], o [h×q].
        long attention = (h * q) + (2 * h * kv) + (q * h);
        long attentionRows = q + (2 * kv) + h;
        long attentionLora = (h + q) + (2 * (h + kv)) + (q + h);
        long attentionStates = Math.Max(h, q) + (2 * Math.Max(h, kv)) + Math.Max(q, h);
        long attentionProjector = Math.Min(h, q) + (2 * Math.Min(h, kv)) + Math.Min(q, h);

        // One expert's feed-forward: gated = gate [i×h] + up [i×h] + down [h×i]; dense = fc1 + fc2.
        long mlpMatrices = m.Mlp == MlpKind.Gated ? 3 : 2;
        long expertMlp = mlpMatrices * h * i;
        long expertRows = ((mlpMatrices - 1) * i) + h;
        long expertLora = mlpMatrices * (h + i);
        long expertStates = mlpMatrices * Math.Max(h, i);
        long expertProjector = mlpMatrices * Math.Min(h, i);

        long linearPerLayer = attention + (experts * expertMlp);
        long activePerLayer = attention + (m.ExpertsPerToken * expertMlp);

        long normParams = m.Norm == NormKind.LayerNorm ? 2 * h : h;
        long normsPerLayer = m.ParallelBlock ? 1 : 2;
        long biasPerLayer = (m.QkvBias ? q + (2 * kv) : 0)
                            + (m.OutputBias ? h : 0)
                            + (m.MlpBias ? experts * (((mlpMatrices - 1) * i) + h) : 0);
        long routerPerLayer = m.IsMixtureOfExperts ? h * experts : 0;
        long otherPerLayer = (normsPerLayer * normParams) + biasPerLayer + routerPerLayer;

        long layers = m.Layers;
        return new ParameterCounts
        {
            BlockLinear = layers * linearPerLayer,
            BlockLinearRows = layers * (attentionRows + (experts * expertRows)),
            Embedding = ((long)m.VocabSize * h) + ((long)m.LearnedPositions * h),
            Head = (m.TiedEmbeddings ? 0 : (long)m.VocabSize * h) + (m.LmHeadBias ? m.VocabSize : 0),
            Other = (layers * otherPerLayer) + normParams,
            LinearPerLayer = linearPerLayer,
            ActiveBlockLinear = layers * activePerLayer,
            ExpertLinear = m.IsMixtureOfExperts ? layers * experts * expertMlp : 0,
            LoraParametersPerRank = layers * (attentionLora + (experts * expertLora)),
            ProjectedStatePerRank = layers * (attentionStates + (experts * expertStates)),
            ProjectorPerRank = layers * (attentionProjector + (experts * expertProjector)),
            MaxLinearInput = Math.Max(Math.Max(h, q), i),
        };
    }
}
