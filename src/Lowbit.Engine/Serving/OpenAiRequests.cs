using System.Text.Json;
using System.Text.Json.Nodes;
using Lowbit.Engine.Tokenization;

namespace Lowbit.Engine.Serving;

/// <summary>An error answered in OpenAI's shape <c>{"error":{"message","type","param","code"}}</c>.</summary>
public sealed class OpenAiError : Exception
{
    public OpenAiError(int status, string message, string? param, string? code = null, string type = "invalid_request_error")
        : base(message)
    {
        Status = status;
        Param = param;
        Code = code;
        Type = type;
    }

    public int Status { get; }

    public string? Param { get; }

    public string? Code { get; }

    public string Type { get; }

    public JsonObject ToJson() => new()
    {
        ["error"] = new JsonObject
        {
            ["message"] = Message,
            ["type"] = Type,
            ["param"] = Param,
            ["code"] = Code,
        },
    };

    public static OpenAiError BadField(string param, string message) => new(400, $"{param}: {message}", param, "invalid_value");
}

/// <summary>A parsed completions or chat request, before tokenization.</summary>
public sealed record ParsedRequest
{
    public required string Model { get; init; }

    /// <summary>The prompt text (completions), or null when the prompt came as token ids.</summary>
    public string? PromptText { get; init; }

    public IReadOnlyList<int>? PromptTokens { get; init; }

    public IReadOnlyList<ChatMessage>? Messages { get; init; }

    public int? MaxTokens { get; init; }

    public required SamplingParams Sampling { get; init; }

    public IReadOnlyList<string> Stop { get; init; } = [];

    public bool Stream { get; init; }

    public bool IncludeUsage { get; init; }

    public bool IgnoreEos { get; init; }

    /// <summary>Independent choices to generate (OpenAI's <c>n</c>); choice i of a seeded request uses seed + i.</summary>
    public int N { get; init; } = 1;

    /// <summary>Completions: the answer starts with the prompt (and with <c>logprobs</c>, the prompt tokens' log-probabilities).</summary>
    public bool Echo { get; init; }

    /// <summary>Chat: return log-probabilities (<c>logprobs: true</c>).</summary>
    public bool ChatLogprobs { get; init; }
}

/// <summary>Strict readers of the OpenAI request bodies: each bad field is a 400 naming it.</summary>
public static class OpenAiRequests
{
    /// <summary>The largest <c>n</c> (OpenAI's limit).</summary>
    public const int MaxChoices = 128;

    public static JsonObject ParseBody(byte[] body)
    {
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(body);
        }
        catch (JsonException ex)
        {
            throw new OpenAiError(400, $"request body: malformed JSON ({ex.Message}); send a JSON object", null, "invalid_json");
        }
        return node as JsonObject ?? throw new OpenAiError(400, "request body: expected a JSON object", null, "invalid_json");
    }

    public static ParsedRequest Completion(JsonObject body)
    {
        var (text, tokens) = Prompt(body["prompt"]);
        var logprobs = Int(body, "logprobs", 0, Sampler.MaxLogprobs);
        return Common(body) with
        {
            PromptText = text,
            PromptTokens = tokens,
            Echo = Bool(body, "echo") == true,
            MaxTokens = Int(body, "max_tokens", 1, int.MaxValue) ?? 16,
            Sampling = Sampling(body) with { Logprobs = logprobs },
        };
    }

    public static ParsedRequest Chat(JsonObject body)
    {
        if (body["messages"] is not JsonArray { Count: > 0 } list)
        {
            throw OpenAiError.BadField("messages", "required: a non-empty array of {role, content}");
        }
        var messages = new List<ChatMessage>();
        for (var i = 0; i < list.Count; i++)
        {
            if (list[i] is not JsonObject message || String(message, "role", $"messages[{i}].role") is not { } role)
            {
                throw OpenAiError.BadField($"messages[{i}]", "expected an object with a string role");
            }
            if (role is not ("system" or "user" or "assistant" or "developer"))
            {
                throw OpenAiError.BadField($"messages[{i}].role", $"'{role}' is not supported; accepted: system, developer, user, assistant");
            }
            var content = message["content"] switch
            {
                JsonValue v when v.TryGetValue<string>(out var s) => s,
                JsonArray parts => string.Concat(parts.Select((p, j) => p is JsonObject part && (string?)part["type"] == "text" && part["text"] is JsonValue t && t.TryGetValue<string>(out var s)
                    ? s
                    : throw OpenAiError.BadField($"messages[{i}].content[{j}]", "only {\"type\":\"text\",\"text\":...} parts are supported"))),
                null when role == "assistant" => "",
                _ => throw OpenAiError.BadField($"messages[{i}].content", "expected a string or an array of text parts"),
            };
            messages.Add(new ChatMessage(role == "developer" ? "system" : role, content));
        }
        var maxTokens = Int(body, "max_completion_tokens", 1, int.MaxValue) ?? Int(body, "max_tokens", 1, int.MaxValue);
        var logprobs = Bool(body, "logprobs") == true;
        var top = Int(body, "top_logprobs", 0, Sampler.MaxLogprobs);
        if (top is not null && !logprobs)
        {
            throw OpenAiError.BadField("top_logprobs", "needs logprobs: true");
        }
        return Common(body) with
        {
            Messages = messages,
            MaxTokens = maxTokens,
            ChatLogprobs = logprobs,
            Sampling = Sampling(body) with { Logprobs = logprobs ? top ?? 0 : null },
        };
    }

    private static ParsedRequest Common(JsonObject body)
    {
        var model = String(body, "model", "model") ?? throw OpenAiError.BadField("model", "required: the model id from GET /v1/models");
        foreach (var penalty in new[] { "presence_penalty", "frequency_penalty" })
        {
            if (Double(body, penalty, -2, 2) is { } p && p != 0)
            {
                throw OpenAiError.BadField(penalty, "penalties are not supported; leave it out or 0");
            }
        }
        var stop = body["stop"] switch
        {
            null => [],
            JsonValue v when v.TryGetValue<string>(out var s) => s.Length == 0 ? [] : [s],
            JsonArray a => a.Select((x, i) => x is JsonValue sv && sv.TryGetValue<string>(out var s) && s.Length > 0 ? s : throw OpenAiError.BadField($"stop[{i}]", "expected a non-empty string")).ToArray(),
            _ => throw OpenAiError.BadField("stop", "expected a string or an array of strings"),
        };
        var stream = Bool(body, "stream") == true;
        var includeUsage = false;
        if (body["stream_options"] is JsonObject options)
        {
            includeUsage = Bool(options, "include_usage", "stream_options.include_usage") == true;
        }
        else if (body["stream_options"] is not null)
        {
            throw OpenAiError.BadField("stream_options", "expected an object like {\"include_usage\": true}");
        }
        return new ParsedRequest
        {
            Model = model,
            Sampling = new SamplingParams(),
            Stop = stop,
            Stream = stream,
            IncludeUsage = includeUsage,
            IgnoreEos = Bool(body, "ignore_eos") == true,
            N = Int(body, "n", 1, MaxChoices) ?? 1,
        };
    }

    private static SamplingParams Sampling(JsonObject body) => new()
    {
        Temperature = Double(body, "temperature", 0, 2) ?? 1.0,
        TopP = Double(body, "top_p", double.Epsilon, 1) ?? 1.0,
        TopK = Int(body, "top_k", -1, int.MaxValue) ?? 0,
        Seed = Long(body, "seed"),
    };

    private static (string? Text, IReadOnlyList<int>? Tokens) Prompt(JsonNode? node)
    {
        switch (node)
        {
            case JsonValue v when v.TryGetValue<string>(out var s):
                return (s, null);
            case JsonArray { Count: 1 } one when one[0] is JsonValue v && v.TryGetValue<string>(out var s):
                return (s, null);
            case JsonArray { Count: 1 } one when one[0] is JsonArray inner:
                return Prompt(inner);
            case JsonArray { Count: > 0 } ids when ids.All(x => x is JsonValue iv && iv.TryGetValue<int>(out _)):
                return (null, ids.Select(x => x!.GetValue<int>()).ToArray());
            case null:
                throw OpenAiError.BadField("prompt", "required: a string or an array of token ids");
            default:
                throw OpenAiError.BadField("prompt", "expected one prompt: a string, [string], or an array of token ids (batched prompts are not supported)");
        }
    }

    private static string? String(JsonObject body, string name, string param) => body[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        _ => throw OpenAiError.BadField(param, "expected a string"),
    };

    private static bool? Bool(JsonObject body, string name, string? param = null) => body[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<bool>(out var b) => b,
        _ => throw OpenAiError.BadField(param ?? name, "expected true or false"),
    };

    private static double? Double(JsonObject body, string name, double min, double max)
    {
        if (body[name] is null)
        {
            return null;
        }
        if (body[name] is not JsonValue v || !v.TryGetValue<double>(out var d) || double.IsNaN(d))
        {
            throw OpenAiError.BadField(name, $"expected a number between {min} and {max}");
        }
        if (d < min || d > max)
        {
            throw OpenAiError.BadField(name, $"{d} is out of range; accepted: {(min == double.Epsilon ? "above 0" : min.ToString(System.Globalization.CultureInfo.InvariantCulture))} to {max}");
        }
        return d;
    }

    private static int? Int(JsonObject body, string name, int min, int max)
    {
        if (body[name] is null)
        {
            return null;
        }
        if (body[name] is not JsonValue v || !v.TryGetValue<double>(out var d) || d != Math.Floor(d) || d < int.MinValue || d > int.MaxValue)
        {
            throw OpenAiError.BadField(name, $"expected an integer of at least {min}");
        }
        if (d < min || d > max)
        {
            throw OpenAiError.BadField(name, max == int.MaxValue ? $"{d} is out of range; accepted: at least {min}" : $"{d} is out of range; accepted: {min} to {max}");
        }
        return (int)d;
    }

    private static long? Long(JsonObject body, string name) => body[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<double>(out var d) && d == Math.Floor(d) && Math.Abs(d) < 9.2e18 => (long)d,
        _ => throw OpenAiError.BadField(name, "expected an integer"),
    };
}
