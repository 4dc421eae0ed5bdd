using System.Text.Json;

namespace Lowbit.Planner;

/// <summary>
/// Reads a Hugging Face <c>config.json</c> (the text; the caller reads the file) into a
/// <see cref="ModelArchitecture"/>. Field names follow each family's configuration class in
/// transformers, including its defaults (e.g. <c>tie_word_embeddings</c> is true for Gemma and
/// GPT-BigCode, false for Llama, Mistral, Qwen2, Phi).
/// </summary>
public static class HfConfigParser
{
    /// <summary>The <c>model_type</c> values this parser understands.</summary>
    public static readonly IReadOnlyList<string> SupportedModelTypes =
        ["llama", "mistral", "mixtral", "qwen2", "gemma", "phi", "phi3", "gpt_bigcode"];

    public static ModelArchitecture Parse(string configJson, string? name = null)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(configJson, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException ex)
        {
            throw new PlanInputException("config.json", $"not valid JSON ({ex.Message})");
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new PlanInputException("config.json", "the top level must be a JSON object");
            }

            var modelType = String(root, "model_type")
                ?? throw new PlanInputException("config.json: model_type", "missing", SupportedModelTypes);
            return modelType switch
            {
                "llama" or "mistral" or "mixtral" or "qwen2" or "gemma" or "phi3" => ParseLlamaLike(root, modelType, name),
                "phi" => ParsePhi(root, name),
                "gpt_bigcode" => ParseBigCode(root, name),
                _ => throw new PlanInputException("config.json: model_type", $"unsupported model_type '{modelType}'", SupportedModelTypes),
            };
        }
    }

    private static ModelArchitecture ParseLlamaLike(JsonElement root, string modelType, string? name)
    {
        var hidden = RequiredInt(root, "hidden_size");
        var heads = RequiredInt(root, "num_attention_heads");
        var kvHeads = Int(root, "num_key_value_heads") ?? heads;
        var isMoe = modelType == "mixtral";
        return Validate(new ModelArchitecture
        {
            Name = name ?? NameFrom(root, modelType),
            ModelType = modelType,
            HiddenSize = hidden,
            IntermediateSize = RequiredInt(root, "intermediate_size"),
            Layers = RequiredInt(root, "num_hidden_layers"),
            AttentionHeads = heads,
            KvHeads = kvHeads,
            HeadDim = Int(root, "head_dim") ?? hidden / heads,
            VocabSize = RequiredInt(root, "vocab_size"),
            MaxPositionEmbeddings = Int(root, "max_position_embeddings") ?? 4096,
            TiedEmbeddings = Bool(root, "tie_word_embeddings") ?? modelType == "gemma",
            Experts = isMoe ? Int(root, "num_local_experts") ?? 8 : 1,
            ExpertsPerToken = isMoe ? Int(root, "num_experts_per_tok") ?? 2 : 1,
            // Qwen2 always has q/k/v biases; Llama exposes attention_bias (false by default).
            QkvBias = modelType == "qwen2" || (Bool(root, "attention_bias") ?? false),
            OutputBias = modelType == "llama" && (Bool(root, "attention_bias") ?? false),
            MlpBias = Bool(root, "mlp_bias") ?? false,
            PartialRotaryFactor = Double(root, "partial_rotary_factor") ?? 1.0,
        });
    }

    /// <summary>Phi-1/1.5/2: LayerNorm, one norm per layer (parallel attention and MLP), biases everywhere.</summary>
    private static ModelArchitecture ParsePhi(JsonElement root, string? name)
    {
        var hidden = RequiredInt(root, "hidden_size");
        var heads = RequiredInt(root, "num_attention_heads");
        return Validate(new ModelArchitecture
        {
            Name = name ?? NameFrom(root, "phi"),
            ModelType = "phi",
            HiddenSize = hidden,
            IntermediateSize = RequiredInt(root, "intermediate_size"),
            Layers = RequiredInt(root, "num_hidden_layers"),
            AttentionHeads = heads,
            KvHeads = Int(root, "num_key_value_heads") ?? heads,
            HeadDim = hidden / heads,
            VocabSize = RequiredInt(root, "vocab_size"),
            MaxPositionEmbeddings = Int(root, "max_position_embeddings") ?? 2048,
            TiedEmbeddings = Bool(root, "tie_word_embeddings") ?? false,
            Mlp = MlpKind.Dense,
            Norm = NormKind.LayerNorm,
            QkvBias = true,
            OutputBias = true,
            MlpBias = true,
            LmHeadBias = true,
            ParallelBlock = true,
            PartialRotaryFactor = Double(root, "partial_rotary_factor") ?? 0.5,
        });
    }

    /// <summary>GPT-BigCode (StarCoder): GPT-2 naming, multi-query attention, learned positions, biases.</summary>
    private static ModelArchitecture ParseBigCode(JsonElement root, string? name)
    {
        var hidden = RequiredInt(root, "n_embd");
        var heads = RequiredInt(root, "n_head");
        var multiQuery = Bool(root, "multi_query") ?? true;
        var positions = Int(root, "n_positions") ?? 1024;
        return Validate(new ModelArchitecture
        {
            Name = name ?? NameFrom(root, "gpt_bigcode"),
            ModelType = "gpt_bigcode",
            HiddenSize = hidden,
            IntermediateSize = Int(root, "n_inner") ?? 4 * hidden,
            Layers = RequiredInt(root, "n_layer"),
            AttentionHeads = heads,
            KvHeads = multiQuery ? 1 : heads,
            HeadDim = hidden / heads,
            VocabSize = RequiredInt(root, "vocab_size"),
            MaxPositionEmbeddings = positions,
            TiedEmbeddings = Bool(root, "tie_word_embeddings") ?? true,
            Mlp = MlpKind.Dense,
            Norm = NormKind.LayerNorm,
            QkvBias = true,
            OutputBias = true,
            MlpBias = true,
            LearnedPositions = positions,
        });
    }

    private static ModelArchitecture Validate(ModelArchitecture m)
    {
        Positive(m.HiddenSize, "hidden_size");
        Positive(m.IntermediateSize, "intermediate_size");
        Positive(m.Layers, "num_hidden_layers");
        Positive(m.AttentionHeads, "num_attention_heads");
        Positive(m.KvHeads, "num_key_value_heads");
        Positive(m.HeadDim, "head_dim");
        Positive(m.VocabSize, "vocab_size");
        if (m.AttentionHeads % m.KvHeads != 0)
        {
            throw new PlanInputException("config.json: num_key_value_heads", $"{m.KvHeads} does not divide num_attention_heads {m.AttentionHeads}");
        }
        if (m.ExpertsPerToken < 1 || m.ExpertsPerToken > m.Experts)
        {
            throw new PlanInputException("config.json: num_experts_per_tok", $"{m.ExpertsPerToken} must be between 1 and num_local_experts {m.Experts}");
        }
        return m;
    }

    private static void Positive(int value, string field)
    {
        if (value <= 0)
        {
            throw new PlanInputException($"config.json: {field}", $"must be a positive integer, got {value}");
        }
    }

    private static string NameFrom(JsonElement root, string modelType) =>
        String(root, "_name_or_path") is { Length: > 0 } path ? path.Split('/')[^1] : modelType;

    private static int RequiredInt(JsonElement root, string field) =>
        Int(root, field) ?? throw new PlanInputException($"config.json: {field}", "missing");

    private static int? Int(JsonElement root, string field)
    {
        if (!root.TryGetProperty(field, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        if (value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out var number))
        {
            return number;
        }
        throw new PlanInputException($"config.json: {field}", $"must be an integer, got {value.GetRawText()}");
    }

    private static double? Double(JsonElement root, string field)
    {
        if (!root.TryGetProperty(field, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return value.ValueKind == JsonValueKind.Number
            ? value.GetDouble()
            : throw new PlanInputException($"config.json: {field}", $"must be a number, got {value.GetRawText()}");
    }

    private static bool? Bool(JsonElement root, string field)
    {
        if (!root.TryGetProperty(field, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new PlanInputException($"config.json: {field}", $"must be true or false, got {value.GetRawText()}"),
        };
    }

    private static string? String(JsonElement root, string field) =>
        root.TryGetProperty(field, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;
}
