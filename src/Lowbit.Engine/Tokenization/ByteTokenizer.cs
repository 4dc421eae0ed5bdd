using System.Text;
using System.Text.Json.Nodes;

namespace Lowbit.Engine.Tokenization;

/// <summary>
/// Byte-level tokenizer: ids 0–255 are the UTF-8 bytes, then <c>&lt;s&gt;</c> 256, <c>&lt;/s&gt;</c> 257,
/// <c>&lt;pad&gt;</c> 258, <c>&lt;unk&gt;</c> 259. Its tokenizer.json is a Hugging Face BPE model with only the 256
/// byte-fallback tokens <c>&lt;0x00&gt;</c>…<c>&lt;0xFF&gt;</c> and no merges, so transformers tokenizes it the same way.
/// </summary>
public sealed class ByteTokenizer : ITextTokenizer
{
    public const int Bos = 256;
    public const int Eos = 257;
    public const int Pad = 258;
    public const int Unk = 259;
    public const int Size = 260;

    public int VocabSize => Size;

    public int? BosId => Bos;

    public int? EosId => Eos;

    public IReadOnlyList<int> Encode(string text) => Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray();

    public string Decode(IEnumerable<int> ids) => Encoding.UTF8.GetString(ids.Where(i => i is >= 0 and < 256).Select(i => (byte)i).ToArray());

    /// <summary>True when a tokenizer.json describes this tokenizer (byte-fallback BPE, 256 byte tokens, no merges).</summary>
    public static bool Describes(JsonObject tokenizerJson) =>
        tokenizerJson["model"] is JsonObject model
        && (string?)model["type"] == "BPE"
        && model["byte_fallback"] is JsonValue fallback && fallback.GetValue<bool>()
        && model["merges"] is JsonArray { Count: 0 }
        && model["vocab"] is JsonObject vocab
        && Enumerable.Range(0, 256).All(b => vocab[$"<0x{b:X2}>"] is JsonValue id && id.GetValue<int>() == b);

    /// <summary>The tokenizer.json transformers' PreTrainedTokenizerFast loads.</summary>
    public static string TokenizerJson()
    {
        var vocab = new JsonObject();
        for (var b = 0; b < 256; b++)
        {
            vocab[$"<0x{b:X2}>"] = b;
        }
        vocab["<s>"] = Bos;
        vocab["</s>"] = Eos;
        vocab["<pad>"] = Pad;
        vocab["<unk>"] = Unk;
        JsonObject Special(int id, string content) => new()
        {
            ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = false, ["special"] = true,
        };
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(Special(Bos, "<s>"), Special(Eos, "</s>"), Special(Pad, "<pad>"), Special(Unk, "<unk>")),
            ["normalizer"] = null,
            ["pre_tokenizer"] = null,
            ["post_processor"] = null,
            ["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(new JsonObject { ["type"] = "ByteFallback" }, new JsonObject { ["type"] = "Fuse" }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = "<unk>", ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = true, ["ignore_merges"] = false,
                ["vocab"] = vocab, ["merges"] = new JsonArray(),
            },
        };
        return root.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }

    public static string TokenizerConfigJson() => new JsonObject
    {
        ["tokenizer_class"] = "PreTrainedTokenizerFast",
        ["bos_token"] = "<s>",
        ["eos_token"] = "</s>",
        ["pad_token"] = "<pad>",
        ["unk_token"] = "<unk>",
        ["add_bos_token"] = true,
        ["add_eos_token"] = false,
        ["model_max_length"] = 512,
    }.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
}
