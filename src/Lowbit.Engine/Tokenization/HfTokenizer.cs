using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Lowbit.Engine.Tokenization;

/// <summary>
/// A Hugging Face tokenizer through Microsoft.ML.Tokenizers: <c>tokenizer.json</c> BPE models (byte-level like GPT-2
/// and Llama 3, with the pre-tokenizer's split regex) via <see cref="BpeTokenizer"/>, and SentencePiece
/// <c>tokenizer.model</c> files (Llama 2, Mistral, TinyLlama: byte fallback, dummy prefix) via <see cref="LlamaTokenizer"/>.
/// </summary>
public sealed class HfTokenizer : ITextTokenizer
{
    /// <summary>GPT-2's split pattern, the ByteLevel pre-tokenizer's default.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Tokenizer _tokenizer;

    private HfTokenizer(Tokenizer tokenizer, int vocabSize, int? bos, int? eos)
    {
        _tokenizer = tokenizer;
        VocabSize = vocabSize;
        BosId = bos;
        EosId = eos;
    }

    public int VocabSize { get; }

    public int? BosId { get; }

    public int? EosId { get; }

    public IReadOnlyList<int> Encode(string text) => _tokenizer.EncodeToIds(text);

    public string Decode(IEnumerable<int> ids) => _tokenizer.Decode(ids) ?? "";

    public static HfTokenizer FromTokenizerJson(string path, JsonObject root, TokenizerConfig config)
    {
        if (root["model"] is not JsonObject model || (string?)model["type"] != "BPE")
        {
            throw new EngineInputException($"{path}: tokenizer model type '{root["model"]?["type"]}' is not supported; supported: BPE (or a tokenizer.model SentencePiece file)");
        }
        var vocab = (model["vocab"] as JsonObject ?? throw new EngineInputException($"{path}: model.vocab missing"))
            .Select(kv => new KeyValuePair<string, int>(kv.Key, kv.Value!.GetValue<int>())).ToList();
        // Merges: "a b" strings (tokenizers < 0.20) or ["a", "b"] pairs (>= 0.20).
        var merges = (model["merges"] as JsonArray ?? [])
            .Select(m => m is JsonArray pair ? $"{pair[0]!.GetValue<string>()} {pair[1]!.GetValue<string>()}" : m!.GetValue<string>())
            .ToList();
        var special = (root["added_tokens"] as JsonArray ?? [])
            .OfType<JsonObject>()
            .Where(t => t["special"] is JsonValue s && s.GetValue<bool>())
            .ToDictionary(t => t["content"]!.GetValue<string>(), t => t["id"]!.GetValue<int>());
        var byteLevel = Mentions(root["pre_tokenizer"], "ByteLevel") || Mentions(root["decoder"], "ByteLevel");
        if (!byteLevel)
        {
            throw new EngineInputException($"{path}: a BPE tokenizer.json must be byte-level (ByteLevel pre-tokenizer) or SentencePiece-style (byte fallback, ▁ normalizer)");
        }
        var pattern = SplitPattern(root["pre_tokenizer"]) ?? Gpt2Pattern;
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            SpecialTokens = special,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), special),
            UnknownToken = (string?)model["unk_token"],
        };
        var tokenizer = BpeTokenizer.Create(options);
        int? Id(string? token) => token is not null && special.TryGetValue(token, out var id) ? id : null;
        var size = Math.Max(vocab.Count == 0 ? 0 : vocab.Max(v => v.Value), special.Count == 0 ? 0 : special.Values.Max()) + 1;
        return new HfTokenizer(tokenizer, size, Id(config.BosToken), Id(config.EosToken));
    }

    public static HfTokenizer FromSentencePiece(string path, TokenizerConfig config)
    {
        using var stream = File.OpenRead(path);
        var tokenizer = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
        return new HfTokenizer(tokenizer, tokenizer.Vocabulary.Count, tokenizer.BeginningOfSentenceId, tokenizer.EndOfSentenceId);
    }

    private static bool Mentions(JsonNode? node, string type) => node switch
    {
        JsonObject o => (string?)o["type"] == type
            || Mentions(o["pretokenizers"], type) || Mentions(o["decoders"], type),
        JsonArray a => a.Any(n => Mentions(n, type)),
        _ => false,
    };

    private static string? SplitPattern(JsonNode? node) => node switch
    {
        JsonObject o when (string?)o["type"] == "Split" && o["pattern"] is JsonObject p && p["Regex"] is JsonValue r => r.GetValue<string>(),
        JsonObject o => SplitPattern(o["pretokenizers"]),
        JsonArray a => a.Select(SplitPattern).FirstOrDefault(p => p is not null),
        _ => null,
    };
}
