using System.Text.Json;
using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Formats;

/// <summary>What a GGUF export wrote.</summary>
public sealed record GgufExportReport(string Path, long Bytes, int Tensors, long Parameters, GgmlType Type)
{
    public double BitsPerWeight => Bytes * 8.0 / Parameters;
}

/// <summary>
/// Writes a Hugging Face Llama checkpoint as a GGUF llama.cpp loads, as convert_hf_to_gguf.py does: tensor names
/// mapped (token_embd, blk.N.attn_q, ...), q/k rows permuted back to Meta's interleaved RoPE order, 1-D tensors
/// (norms) F32, matrices in the requested block type (Q8_0 where rows don't divide into Q4_K's 256 blocks, F16
/// where they don't divide into 32), llama.* hyper-parameters from config.json and tokenizer.ggml.* from
/// tokenizer.json. The weights are the source's: GGUF's block codecs quantize them (our quantizers feed the
/// lowbit and gptq formats).
/// </summary>
public static partial class GgufLlamaExport
{
    public static GgufExportReport Write(string path, string configJson, string? tokenizerJson, string? tokenizerConfigJson, IEnumerable<KeyValuePair<string, Func<Tensor>>> hfTensors, GgmlType type)
    {
        using var config = JsonDocument.Parse(configJson);
        var c = config.RootElement;
        var heads = c.GetProperty("num_attention_heads").GetInt32();
        var kvHeads = c.TryGetProperty("num_key_value_heads", out var kv) && kv.ValueKind == JsonValueKind.Number ? kv.GetInt32() : heads;
        var metadata = Metadata(c, type, heads, kvHeads);
        if (tokenizerJson is not null)
        {
            metadata.AddRange(TokenizerMetadata(tokenizerJson, tokenizerConfigJson, c));
        }
        var tensors = new List<GgufTensor>();
        long parameters = 0;
        foreach (var (hfName, load) in hfTensors)
        {
            var name = TensorName(hfName);
            if (name is null)
            {
                continue;
            }
            long[] shape;
            using (var probe = load())
            {
                shape = probe.shape;
            }
            parameters += shape.Aggregate(1L, (a, b) => a * b);
            var tensorType = shape.Length == 1 ? GgmlType.F32 : TypeFor(type, shape[^1]);
            var permuteHeads = name.EndsWith("attn_q.weight", StringComparison.Ordinal) ? heads
                : name.EndsWith("attn_k.weight", StringComparison.Ordinal) ? kvHeads : 0;
            tensors.Add(new GgufTensor(name, shape.Reverse().ToArray(), tensorType, () =>
            {
                using var scope = torch.NewDisposeScope();
                var t = load().to(ScalarType.Float32).cpu();
                if (permuteHeads > 0)
                {
                    t = PermuteForGguf(t, permuteHeads);
                }
                return GgmlQuants.Encode(tensorType, t.contiguous().data<float>().ToArray());
            }));
        }
        using (var stream = new FileStream(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 20))
        {
            GgufWriter.Write(stream, metadata, tensors);
        }
        return new GgufExportReport(path, new FileInfo(path).Length, tensors.Count, parameters, type);
    }

    /// <summary>The GGUF name of a HF Llama tensor, or null for tensors llama.cpp does not take (rotary inv_freq).</summary>
    public static string? TensorName(string hf)
    {
        switch (hf)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        var m = LayerName().Match(hf);
        if (!m.Success)
        {
            return null;
        }
        var part = m.Groups[2].Value switch
        {
            "input_layernorm" => "attn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "post_attention_layernorm" => "ffn_norm",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            _ => null,
        };
        return part is null ? null : $"blk.{m.Groups[1].Value}.{part}.{m.Groups[3].Value}";
    }

    /// <summary>Undo HF's rotate-half row order per head: rows [heads, 2, d/2] → [heads, d/2, 2] (LlamaModel.permute).</summary>
    public static Tensor PermuteForGguf(Tensor weight, int heads)
    {
        var rows = weight.shape[0];
        var rest = weight.shape.Skip(1).ToArray();
        var shape = new long[] { heads, 2, rows / heads / 2 }.Concat(rest).ToArray();
        return weight.reshape(shape).transpose(1, 2).reshape(weight.shape);
    }

    /// <summary>The inverse of <see cref="PermuteForGguf"/> (what an importer applies).</summary>
    public static Tensor UnpermuteFromGguf(Tensor weight, int heads)
    {
        var rows = weight.shape[0];
        var rest = weight.shape.Skip(1).ToArray();
        var shape = new long[] { heads, rows / heads / 2, 2 }.Concat(rest).ToArray();
        return weight.reshape(shape).transpose(1, 2).reshape(weight.shape);
    }

    private static GgmlType TypeFor(GgmlType wanted, long rowLength) =>
        rowLength % GgmlQuants.BlockElements(wanted) == 0 ? wanted
        : rowLength % GgmlQuants.SmallBlock == 0 ? GgmlType.Q8_0
        : GgmlType.F16;

    /// <summary>llama.cpp's llama_ftype for the requested matrix type. Every matrix that fits is Q4_K (no Q6_K
    /// output or attn_v/ffn_down mix as llama.cpp's _M recipe writes), so a Q4_K export is MOSTLY_Q4_K_S (14), not
    /// MOSTLY_Q4_K_M (15).</summary>
    public static uint FileType(GgmlType type) => type switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.Q4_0 => 2,
        GgmlType.Q8_0 => 7,
        GgmlType.Q4_K => 14,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    private static List<KeyValuePair<string, GgufValue>> Metadata(JsonElement c, GgmlType type, int heads, int kvHeads)
    {
        var hidden = c.GetProperty("hidden_size").GetInt32();
        var headDim = c.TryGetProperty("head_dim", out var hd) && hd.ValueKind == JsonValueKind.Number ? hd.GetInt32() : hidden / heads;
        var theta = c.TryGetProperty("rope_theta", out var rt) && rt.ValueKind == JsonValueKind.Number ? rt.GetSingle()
            : c.TryGetProperty("rope_parameters", out var rp) && rp.TryGetProperty("rope_theta", out var rpt) ? rpt.GetSingle() : 10000f;
        var list = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.Of("llama")),
            new("general.name", GgufValue.Of(c.TryGetProperty("_name_or_path", out var n) && n.ValueKind == JsonValueKind.String ? n.GetString()! : "lowbit-export")),
            new("general.file_type", GgufValue.Of(FileType(type))),
            new("general.quantization_version", GgufValue.Of(2u)),
            new("llama.vocab_size", GgufValue.Of((uint)c.GetProperty("vocab_size").GetInt32())),
            new("llama.context_length", GgufValue.Of((uint)(c.TryGetProperty("max_position_embeddings", out var mp) ? mp.GetInt32() : 2048))),
            new("llama.embedding_length", GgufValue.Of((uint)hidden)),
            new("llama.block_count", GgufValue.Of((uint)c.GetProperty("num_hidden_layers").GetInt32())),
            new("llama.feed_forward_length", GgufValue.Of((uint)c.GetProperty("intermediate_size").GetInt32())),
            new("llama.attention.head_count", GgufValue.Of((uint)heads)),
            new("llama.attention.head_count_kv", GgufValue.Of((uint)kvHeads)),
            new("llama.attention.layer_norm_rms_epsilon", GgufValue.Of(c.TryGetProperty("rms_norm_eps", out var eps) ? eps.GetSingle() : 1e-6f)),
            new("llama.rope.freq_base", GgufValue.Of(theta)),
            new("llama.rope.dimension_count", GgufValue.Of((uint)headDim)),
        };
        if (c.TryGetProperty("head_dim", out _))
        {
            list.Add(new("llama.attention.key_length", GgufValue.Of((uint)headDim)));
            list.Add(new("llama.attention.value_length", GgufValue.Of((uint)headDim)));
        }
        return list;
    }

    /// <summary>
    /// tokenizer.ggml.* from a HF tokenizer.json BPE model: byte-level BPE (a ByteLevel pre-tokenizer or decoder)
    /// is llama.cpp's "gpt2" with merges; a SentencePiece-style BPE (▁, byte fallback) is "llama" with scores
    /// −id. Added special tokens are CONTROL, &lt;0xNN&gt; pieces BYTE.
    /// </summary>
    public static List<KeyValuePair<string, GgufValue>> TokenizerMetadata(string tokenizerJson, string? tokenizerConfigJson, JsonElement config)
    {
        using var doc = JsonDocument.Parse(tokenizerJson);
        var root = doc.RootElement;
        var model = root.GetProperty("model");
        if (!model.TryGetProperty("type", out var mt) || mt.GetString() != "BPE")
        {
            throw new NotSupportedException("GGUF export supports BPE tokenizer.json models only");
        }
        var vocab = model.GetProperty("vocab").EnumerateObject().ToDictionary(p => p.Value.GetInt32(), p => p.Name);
        var special = new HashSet<int>();
        if (root.TryGetProperty("added_tokens", out var added))
        {
            foreach (var t in added.EnumerateArray())
            {
                var id = t.GetProperty("id").GetInt32();
                vocab[id] = t.GetProperty("content").GetString()!;
                if (t.TryGetProperty("special", out var sp) && sp.GetBoolean())
                {
                    special.Add(id);
                }
            }
        }
        var size = Math.Max(vocab.Keys.Max() + 1, config.TryGetProperty("vocab_size", out var vs) ? vs.GetInt32() : 0);
        var byteLevel = root.GetRawText().Contains("\"ByteLevel\"", StringComparison.Ordinal);
        // A pure byte tokenizer (256 byte-fallback pieces, no merges) is written as llama.cpp's byte-level "gpt2"
        // model with the GPT-2 byte→unicode names: llama.cpp's SPM path would escape spaces as ▁ and change the ids.
        var hasMerges = model.TryGetProperty("merges", out var m0) && m0.GetArrayLength() > 0;
        var pureBytes = !byteLevel && !hasMerges && Enumerable.Range(0, 256).All(b => vocab.Values.Contains($"<0x{b:X2}>"));
        if (pureBytes)
        {
            var names = ByteToUnicode();
            foreach (var id in vocab.Keys.ToList())
            {
                var text = vocab[id];
                if (ByteToken().IsMatch(text))
                {
                    vocab[id] = names[Convert.ToInt32(text[3..5], 16)];
                }
            }
            byteLevel = true;
        }
        var tokens = new List<string>(size);
        var scores = new List<float>(size);
        var types = new List<int>(size);
        for (var id = 0; id < size; id++)
        {
            if (vocab.TryGetValue(id, out var text))
            {
                tokens.Add(text);
                types.Add(special.Contains(id) ? 3 : !byteLevel && ByteToken().IsMatch(text) ? 6 : 1);
            }
            else
            {
                tokens.Add($"[PAD{id}]");
                types.Add(5);
            }
            scores.Add(-id);
        }
        var list = new List<KeyValuePair<string, GgufValue>>
        {
            new("tokenizer.ggml.model", GgufValue.Of(byteLevel ? "gpt2" : "llama")),
            new("tokenizer.ggml.pre", GgufValue.Of("default")),
            new("tokenizer.ggml.tokens", GgufValue.Strings(tokens)),
            new("tokenizer.ggml.scores", GgufValue.Floats(scores)),
            new("tokenizer.ggml.token_type", GgufValue.Ints(types)),
        };
        if (model.TryGetProperty("merges", out var merges))
        {
            list.Add(new("tokenizer.ggml.merges", GgufValue.Strings(merges.EnumerateArray().Select(m =>
                m.ValueKind == JsonValueKind.Array ? $"{m[0].GetString()} {m[1].GetString()}" : m.GetString()!))));
        }
        AddTokenId(list, "tokenizer.ggml.bos_token_id", config, "bos_token_id");
        AddTokenId(list, "tokenizer.ggml.eos_token_id", config, "eos_token_id");
        AddTokenId(list, "tokenizer.ggml.padding_token_id", config, "pad_token_id");
        if (tokenizerConfigJson is not null)
        {
            using var tc = JsonDocument.Parse(tokenizerConfigJson);
            if (tc.RootElement.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind is JsonValueKind.True or JsonValueKind.False)
            {
                list.Add(new("tokenizer.ggml.add_bos_token", GgufValue.Of(ab.GetBoolean())));
            }
            if (tc.RootElement.TryGetProperty("chat_template", out var ct) && ct.ValueKind == JsonValueKind.String)
            {
                list.Add(new("tokenizer.chat_template", GgufValue.Of(ct.GetString()!)));
            }
        }
        return list;
    }

    /// <summary>GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards.</summary>
    public static string[] ByteToUnicode()
    {
        var printable = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range('¡', '¬' - '¡' + 1)).Concat(Enumerable.Range('®', 'ÿ' - '®' + 1)).ToHashSet();
        var names = new string[256];
        var next = 0;
        for (var b = 0; b < 256; b++)
        {
            names[b] = printable.Contains(b) ? ((char)b).ToString() : ((char)(256 + next++)).ToString();
        }
        return names;
    }

    private static void AddTokenId(List<KeyValuePair<string, GgufValue>> list, string key, JsonElement config, string property)
    {
        if (!config.TryGetProperty(property, out var v))
        {
            return;
        }
        var id = v.ValueKind switch
        {
            JsonValueKind.Number => v.GetInt32(),
            JsonValueKind.Array when v.GetArrayLength() > 0 => v[0].GetInt32(),
            _ => -1,
        };
        if (id >= 0)
        {
            list.Add(new(key, GgufValue.Of((uint)id)));
        }
    }

    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")]
    private static partial Regex LayerName();

    [GeneratedRegex(@"^<0x[0-9A-F]{2}>$")]
    private static partial Regex ByteToken();
}
