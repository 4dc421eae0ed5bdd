using System.Text.Json.Nodes;

namespace Lowbit.Engine.Tokenization;

/// <summary>The parts of <c>tokenizer_config.json</c> the engine uses: special tokens, BOS/EOS insertion, the chat template.</summary>
public sealed record TokenizerConfig
{
    public string? BosToken { get; init; }

    public string? EosToken { get; init; }

    public bool AddBosToken { get; init; } = true;

    public bool AddEosToken { get; init; }

    public string? ChatTemplate { get; init; }

    public static TokenizerConfig Load(string directory)
    {
        var path = Path.Combine(directory, "tokenizer_config.json");
        if (!File.Exists(path))
        {
            return new TokenizerConfig();
        }
        if (JsonNode.Parse(File.ReadAllText(path)) is not JsonObject o)
        {
            throw new EngineInputException($"{path}: not a JSON object");
        }
        return new TokenizerConfig
        {
            BosToken = TokenText(o["bos_token"]),
            EosToken = TokenText(o["eos_token"]),
            AddBosToken = o["add_bos_token"] is JsonValue bos && bos.TryGetValue<bool>(out var b) ? b : true,
            AddEosToken = o["add_eos_token"] is JsonValue eos && eos.TryGetValue<bool>(out var e) && e,
            ChatTemplate = o["chat_template"] switch
            {
                JsonValue v when v.TryGetValue<string>(out var s) => s,
                JsonArray list => list.OfType<JsonObject>().FirstOrDefault(t => (string?)t["name"] == "default")?["template"]?.GetValue<string>(),
                _ => null,
            },
        };
    }

    // A special token is either a string or {"content": "..."} (AddedToken serialization).
    private static string? TokenText(JsonNode? node) => node switch
    {
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        JsonObject o => (string?)o["content"],
        _ => null,
    };
}
