using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Lowbit.Engine.Tokenization;

/// <summary>
/// A SentencePiece-style BPE <c>tokenizer.json</c> (Llama 2, Mistral, TinyLlama as saved by transformers):
/// spaces become <c>▁</c> with one prepended, merges apply by rank within each <c>▁</c>-started word, and symbols
/// missing from the vocabulary fall back to their UTF-8 bytes (<c>&lt;0x0A&gt;</c>). Microsoft.ML.Tokenizers'
/// BpeTokenizer has no byte fallback, hence this small encoder.
/// </summary>
public sealed class SentencePieceBpeTokenizer : ITextTokenizer
{
    private const char Space = '\u2581';
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<(string, string), int> _ranks;
    private readonly string[] _pieces;
    private readonly int? _unk;

    private SentencePieceBpeTokenizer(Dictionary<string, int> vocab, Dictionary<(string, string), int> ranks, int? bos, int? eos, int? unk)
    {
        _vocab = vocab;
        _ranks = ranks;
        _unk = unk;
        BosId = bos;
        EosId = eos;
        _pieces = new string[vocab.Values.Max() + 1];
        foreach (var (piece, id) in vocab)
        {
            _pieces[id] = piece;
        }
    }

    public int VocabSize => _pieces.Length;

    public int? BosId { get; }

    public int? EosId { get; }

    /// <summary>True for a BPE tokenizer.json with byte fallback and a <c>▁</c>-replacing normalizer.</summary>
    public static bool Describes(JsonObject root) =>
        root["model"] is JsonObject model && (string?)model["type"] == "BPE"
        && model["byte_fallback"] is JsonValue fallback && fallback.GetValue<bool>()
        && Mentions(root["normalizer"], Space.ToString());

    private static bool Mentions(JsonNode? node, string text) => node switch
    {
        JsonObject o => o.Any(kv => Mentions(kv.Value, text)),
        JsonArray a => a.Any(n => Mentions(n, text)),
        JsonValue v => v.TryGetValue<string>(out var s) && s.Contains(text, StringComparison.Ordinal),
        _ => false,
    };

    public static SentencePieceBpeTokenizer FromTokenizerJson(JsonObject root, TokenizerConfig config)
    {
        var model = (JsonObject)root["model"]!;
        var vocab = ((JsonObject)model["vocab"]!).ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>(), StringComparer.Ordinal);
        foreach (var added in (root["added_tokens"] as JsonArray ?? []).OfType<JsonObject>())
        {
            vocab[added["content"]!.GetValue<string>()] = added["id"]!.GetValue<int>();
        }
        var ranks = new Dictionary<(string, string), int>();
        var merges = model["merges"] as JsonArray ?? [];
        for (var i = 0; i < merges.Count; i++)
        {
            var pair = merges[i] is JsonArray a
                ? (a[0]!.GetValue<string>(), a[1]!.GetValue<string>())
                : Split(merges[i]!.GetValue<string>());
            ranks.TryAdd(pair, i);
        }
        int? Id(string? token) => token is not null && vocab.TryGetValue(token, out var id) ? id : null;
        return new SentencePieceBpeTokenizer(vocab, ranks, Id(config.BosToken ?? "<s>"), Id(config.EosToken ?? "</s>"), Id((string?)model["unk_token"] ?? "<unk>"));
    }

    private static (string, string) Split(string merge)
    {
        var space = merge.IndexOf(' ', StringComparison.Ordinal);
        return (merge[..space], merge[(space + 1)..]);
    }

    public IReadOnlyList<int> Encode(string text)
    {
        var normalized = Space + text.Replace(' ', Space);
        var ids = new List<int>();
        var start = 0;
        for (var i = 1; i <= normalized.Length; i++)
        {
            if (i == normalized.Length || normalized[i] == Space)
            {
                EncodeWord(normalized[start..i], ids);
                start = i;
            }
        }
        return ids;
    }

    private void EncodeWord(string word, List<int> ids)
    {
        var symbols = new List<string>();
        for (var i = 0; i < word.Length; i += char.IsSurrogatePair(word, i) ? 2 : 1)
        {
            symbols.Add(char.IsSurrogatePair(word, i) ? word.Substring(i, 2) : word[i].ToString());
        }
        while (symbols.Count > 1)
        {
            var best = -1;
            var bestRank = int.MaxValue;
            for (var i = 0; i + 1 < symbols.Count; i++)
            {
                if (_ranks.TryGetValue((symbols[i], symbols[i + 1]), out var rank) && rank < bestRank)
                {
                    bestRank = rank;
                    best = i;
                }
            }
            if (best < 0)
            {
                break;
            }
            symbols[best] += symbols[best + 1];
            symbols.RemoveAt(best + 1);
        }
        foreach (var symbol in symbols)
        {
            if (_vocab.TryGetValue(symbol, out var id))
            {
                ids.Add(id);
                continue;
            }
            foreach (var b in Encoding.UTF8.GetBytes(symbol))
            {
                if (_vocab.TryGetValue($"<0x{b:X2}>", out var byteId))
                {
                    ids.Add(byteId);
                }
                else if (_unk is { } unk)
                {
                    ids.Add(unk);
                }
            }
        }
    }

    public string Decode(IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        foreach (var id in ids)
        {
            if (id < 0 || id >= _pieces.Length || _pieces[id] is not { } piece || id == BosId || id == EosId)
            {
                continue;
            }
            if (piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece.EndsWith('>')
                && byte.TryParse(piece.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var b))
            {
                bytes.Add(b);
            }
            else
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(piece.Replace(Space, ' ')));
            }
        }
        var text = Encoding.UTF8.GetString(bytes.ToArray());
        return text.StartsWith(' ') ? text[1..] : text;
    }
}
