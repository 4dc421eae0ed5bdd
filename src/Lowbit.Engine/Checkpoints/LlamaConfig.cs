using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Lowbit.Engine.Checkpoints;

/// <summary>RoPE frequency scaling (<c>rope_scaling</c> or transformers v5 <c>rope_parameters</c>).</summary>
public sealed record RopeScaling
{
    /// <summary><c>default</c>, <c>llama3</c> or <c>linear</c> (others are rejected as unsupported).</summary>
    public required string Type { get; init; }

    public double Factor { get; init; } = 1;

    public double LowFreqFactor { get; init; } = 1;

    public double HighFreqFactor { get; init; } = 4;

    public int OriginalMaxPositionEmbeddings { get; init; } = 8192;
}

/// <summary>
/// A Hugging Face Llama-family <c>config.json</c> (Llama 2/3, Mistral, Qwen2): the fields the forward pass needs,
/// with transformers' defaults (engine-formats.md §2.1).
/// </summary>
public sealed record LlamaConfig
{
    public static IReadOnlyList<string> SupportedArchitectures { get; } = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

    public string Architecture { get; init; } = "LlamaForCausalLM";

    public string ModelType { get; init; } = "llama";

    public required int VocabSize { get; init; }

    public required int HiddenSize { get; init; }

    public required int IntermediateSize { get; init; }

    public required int NumHiddenLayers { get; init; }

    public required int NumAttentionHeads { get; init; }

    public required int NumKeyValueHeads { get; init; }

    public required int HeadDim { get; init; }

    public int MaxPositionEmbeddings { get; init; } = 2048;

    public double RmsNormEps { get; init; } = 1e-6;

    public double RopeTheta { get; init; } = 10000;

    public RopeScaling? RopeScaling { get; init; }

    public bool TieWordEmbeddings { get; init; }

    /// <summary>Biases on q/k/v (Qwen2 always; Llama when <c>attention_bias</c>).</summary>
    public bool QkvBias { get; init; }

    /// <summary>Bias on o_proj (Llama <c>attention_bias</c>; never in Qwen2).</summary>
    public bool OutputBias { get; init; }

    public bool MlpBias { get; init; }

    public int? BosTokenId { get; init; }

    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    public int? PadTokenId { get; init; }

    /// <summary>The checkpoint's stored dtype (<c>torch_dtype</c> / <c>dtype</c>), e.g. <c>bfloat16</c>.</summary>
    public string? TorchDtype { get; init; }

    public long ParameterCount
    {
        get
        {
            long h = HiddenSize, kv = (long)NumKeyValueHeads * HeadDim, q = (long)NumAttentionHeads * HeadDim, i = IntermediateSize;
            var attention = h * q + 2 * h * kv + q * h + (QkvBias ? q + 2 * kv : 0) + (OutputBias ? h : 0);
            var mlp = 3 * h * i + (MlpBias ? 2 * i + h : 0);
            var layer = attention + mlp + 2 * h;
            return (long)VocabSize * h * (TieWordEmbeddings ? 1 : 2) + NumHiddenLayers * layer + h;
        }
    }

    public static LlamaConfig Load(string path)
    {
        try
        {
            return Parse(File.ReadAllText(path));
        }
        catch (EngineInputException ex)
        {
            throw new EngineInputException($"{path}: {ex.Message}", ex);
        }
    }

    public static LlamaConfig Parse(string json)
    {
        try
        {
            return ParseCore(json);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or FormatException or OverflowException)
        {
            // JsonNode reports duplicate keys and wrongly typed values lazily, when they are read.
            throw new EngineInputException($"config.json is malformed ({ex.Message})", ex);
        }
    }

    private static LlamaConfig ParseCore(string json)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(json);
        }
        catch (JsonException ex)
        {
            throw new EngineInputException($"config.json is not valid JSON ({ex.Message})", ex);
        }
        if (root is not JsonObject o)
        {
            throw new EngineInputException("config.json is not a JSON object");
        }
        var architecture = o["architectures"] is JsonArray { Count: > 0 } a
            ? a[0] is JsonValue first && first.TryGetValue<string>(out var name) ? name : throw new EngineInputException("architectures: must be a list of strings")
            : "LlamaForCausalLM";
        if (!SupportedArchitectures.Contains(architecture))
        {
            throw new EngineInputException($"architectures: '{architecture}' is not supported; supported: {string.Join(", ", SupportedArchitectures)}");
        }
        var modelType = Str(o, "model_type") ?? "llama";
        var qwen = modelType == "qwen2" || architecture == "Qwen2ForCausalLM";
        var hidden = Int(o, "hidden_size") ?? 4096;
        var heads = Int(o, "num_attention_heads") ?? 32;
        var ropeParameters = o["rope_parameters"] as JsonObject;
        var theta = Dbl(o, "rope_theta") ?? (ropeParameters is null ? null : Dbl(ropeParameters, "rope_theta")) ?? 10000;
        var attentionBias = Bool(o, "attention_bias") ?? false;
        if (hidden <= 0 || heads <= 0)
        {
            throw new EngineInputException("hidden_size and num_attention_heads must be positive");
        }
        var config = new LlamaConfig
        {
            Architecture = architecture,
            ModelType = modelType,
            VocabSize = Int(o, "vocab_size") ?? 32000,
            HiddenSize = hidden,
            IntermediateSize = Int(o, "intermediate_size") ?? 11008,
            NumHiddenLayers = Int(o, "num_hidden_layers") ?? 32,
            NumAttentionHeads = heads,
            NumKeyValueHeads = Int(o, "num_key_value_heads") ?? heads,
            HeadDim = Int(o, "head_dim") ?? hidden / heads,
            MaxPositionEmbeddings = Int(o, "max_position_embeddings") ?? 2048,
            RmsNormEps = Dbl(o, "rms_norm_eps") ?? 1e-6,
            RopeTheta = theta,
            RopeScaling = ParseScaling(o["rope_scaling"] as JsonObject ?? ropeParameters),
            TieWordEmbeddings = Bool(o, "tie_word_embeddings") ?? false,
            QkvBias = qwen || attentionBias,
            OutputBias = !qwen && attentionBias,
            MlpBias = Bool(o, "mlp_bias") ?? false,
            BosTokenId = Int(o, "bos_token_id"),
            EosTokenIds = o["eos_token_id"] switch
            {
                JsonArray list => list.Select(n => n!.GetValue<int>()).ToArray(),
                JsonValue v when v.TryGetValue<int>(out var id) => [id],
                _ => [],
            },
            PadTokenId = Int(o, "pad_token_id"),
            TorchDtype = Str(o, "torch_dtype") ?? Str(o, "dtype"),
        };
        if (Str(o, "hidden_act") is { } act && act != "silu")
        {
            throw new EngineInputException($"hidden_act: '{act}' is not supported; supported: silu");
        }
        foreach (var (field, value) in new (string, long)[]
        {
            ("vocab_size", config.VocabSize), ("intermediate_size", config.IntermediateSize), ("num_hidden_layers", config.NumHiddenLayers),
            ("num_key_value_heads", config.NumKeyValueHeads), ("head_dim", config.HeadDim), ("max_position_embeddings", config.MaxPositionEmbeddings),
        })
        {
            if (value <= 0)
            {
                throw new EngineInputException(string.Create(CultureInfo.InvariantCulture, $"{field} must be positive, not {value}"));
            }
        }
        if (!(config.RmsNormEps >= 0) || double.IsInfinity(config.RmsNormEps))
        {
            throw new EngineInputException(string.Create(CultureInfo.InvariantCulture, $"rms_norm_eps must be a finite number ≥ 0, not {config.RmsNormEps}"));
        }
        if (config.NumAttentionHeads % config.NumKeyValueHeads != 0)
        {
            throw new EngineInputException($"num_key_value_heads ({config.NumKeyValueHeads}) must divide num_attention_heads ({config.NumAttentionHeads})");
        }
        return config;
    }

    private static RopeScaling? ParseScaling(JsonObject? o)
    {
        if (o is null)
        {
            return null;
        }
        var type = Str(o, "rope_type") ?? Str(o, "type") ?? "default";
        if (type == "default")
        {
            return null;
        }
        if (type is not ("llama3" or "linear"))
        {
            throw new EngineInputException($"rope_scaling.rope_type: '{type}' is not supported; supported: default, llama3, linear");
        }
        return new RopeScaling
        {
            Type = type,
            Factor = Dbl(o, "factor") ?? 1,
            LowFreqFactor = Dbl(o, "low_freq_factor") ?? 1,
            HighFreqFactor = Dbl(o, "high_freq_factor") ?? 4,
            OriginalMaxPositionEmbeddings = Int(o, "original_max_position_embeddings") ?? 8192,
        };
    }

    /// <summary>A config.json transformers reads back (Llama layout).</summary>
    public string ToJson()
    {
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray(Architecture),
            ["model_type"] = ModelType,
            ["vocab_size"] = VocabSize,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
            ["head_dim"] = HeadDim,
            ["hidden_act"] = "silu",
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["attention_bias"] = OutputBias,
            ["mlp_bias"] = MlpBias,
            ["torch_dtype"] = TorchDtype ?? "float32",
        };
        if (RopeScaling is { } s)
        {
            o["rope_scaling"] = new JsonObject
            {
                ["rope_type"] = s.Type,
                ["factor"] = s.Factor,
                ["low_freq_factor"] = s.LowFreqFactor,
                ["high_freq_factor"] = s.HighFreqFactor,
                ["original_max_position_embeddings"] = s.OriginalMaxPositionEmbeddings,
            };
        }
        if (BosTokenId is { } bos)
        {
            o["bos_token_id"] = bos;
        }
        if (EosTokenIds.Count == 1)
        {
            o["eos_token_id"] = EosTokenIds[0];
        }
        else if (EosTokenIds.Count > 1)
        {
            o["eos_token_id"] = new JsonArray(EosTokenIds.Select(id => (JsonNode)id).ToArray());
        }
        if (PadTokenId is { } pad)
        {
            o["pad_token_id"] = pad;
        }
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static string? Str(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    private static int? Int(JsonObject o, string key) => o[key] switch
    {
        JsonValue v when v.TryGetValue<int>(out var i) => i,
        JsonValue v when v.TryGetValue<double>(out var d) && d == Math.Floor(d) => (int)d,
        null => null,
        var other when other.GetValueKind() == JsonValueKind.Null => null,
        var other => throw new EngineInputException($"{key}: expected an integer, got {other.ToJsonString()}"),
    };

    private static double? Dbl(JsonObject o, string key) => o[key] switch
    {
        JsonValue v when v.TryGetValue<double>(out var d) => d,
        JsonValue v when v.TryGetValue<string>(out var s) && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
        null => null,
        var other when other.GetValueKind() == JsonValueKind.Null => null,
        var other => throw new EngineInputException($"{key}: expected a number, got {other.ToJsonString()}"),
    };

    private static bool? Bool(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;
}
