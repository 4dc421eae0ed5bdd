using System.Collections.Frozen;

namespace Lowbit.LocalCluster.Http;

/// <summary>What a protobuf field holds and how it becomes JSON.</summary>
internal enum ProtoKind
{
    /// <summary>UTF-8 string (wire type 2).</summary>
    String,

    /// <summary>Raw bytes (wire type 2), written to JSON as base64.</summary>
    Bytes,

    /// <summary>Varint read as a two's-complement int32 (negative values arrive as 10-byte varints).</summary>
    Int32,

    /// <summary>Varint read as a two's-complement int64.</summary>
    Int64,

    /// <summary>Varint, non-zero is true.</summary>
    Bool,

    /// <summary>A nested message (wire type 2) with its own schema, written as a JSON object.</summary>
    Message,

    /// <summary>A nested message whose fields are written into the parent's JSON object (Go's embedded structs such as <c>LocalObjectReference</c>).</summary>
    Inline,

    /// <summary>intstr.IntOrString: <c>{1: type, 2: intVal, 3: strVal}</c>, written as a JSON number or string.</summary>
    IntOrString,

    /// <summary>resource.Quantity: <c>{1: string}</c>, written as its string.</summary>
    Quantity,

    /// <summary>meta/v1 Time: a Timestamp <c>{1: seconds, 2: nanos}</c>, written as RFC 3339 in UTC; an empty message is the zero time and is left out.</summary>
    Time,

    /// <summary>meta/v1 Duration: <c>{1: nanoseconds}</c>, written as Go's duration string ("1h2m3s").</summary>
    Duration,
}

/// <summary>One value, a repeated field (JSON array) or a <c>map&lt;string, V&gt;</c> (JSON object; entries are messages <c>{1: key, 2: value}</c>).</summary>
internal enum ProtoShape
{
    Single,
    Repeated,
    Map,
}

/// <summary>
/// One field of a message schema. <paramref name="Pointer"/> marks Go pointer fields (<c>*int32</c>, <c>*bool</c>, pointer
/// structs): they are on the wire only when set, so their zero or empty values are kept. Every other single field is on the
/// wire even when unset, so its zero value ("", 0, false, an empty message) is dropped — as Go's <c>omitempty</c> and the
/// server's defaulting (which fills absent fields) expect.
/// </summary>
internal sealed record ProtoField(int Number, string JsonName, ProtoKind Kind, ProtoShape Shape = ProtoShape.Single,
    string? MessageType = null, bool Pointer = false);

/// <summary>A message schema: its fields by number. Numbers not listed are skipped when decoding, as protobuf allows.</summary>
internal sealed record ProtoMessage(string Name, FrozenDictionary<int, ProtoField> Fields);

/// <summary>A set of message schemas and the top-level kinds (apiVersion + kind) whose bodies they decode.</summary>
internal sealed class ProtoSchemaSet
{
    private readonly FrozenDictionary<string, ProtoMessage> _messages;
    private readonly FrozenDictionary<string, string> _roots;

    public ProtoSchemaSet(IEnumerable<ProtoMessage> messages, IReadOnlyList<(string ApiVersion, string Kind)> roots)
    {
        _messages = messages.ToFrozenDictionary(m => m.Name, StringComparer.Ordinal);
        _roots = roots.ToFrozenDictionary(r => RootKey(r.ApiVersion, r.Kind), r => r.Kind, StringComparer.Ordinal);
        RootNames = [.. roots.Select(r => RootKey(r.ApiVersion, r.Kind))];
        foreach (var field in _messages.Values.SelectMany(m => m.Fields.Values))
        {
            if (field.Kind is ProtoKind.Message or ProtoKind.Inline && (field.MessageType is null || !_messages.ContainsKey(field.MessageType)))
            {
                throw new InvalidOperationException($"protobuf schema field {field.JsonName} refers to unknown message {field.MessageType}");
            }
            if (field.Kind == ProtoKind.Inline && field.Shape != ProtoShape.Single)
            {
                throw new InvalidOperationException($"protobuf schema field {field.Number} of kind Inline must be a single message");
            }
        }
        foreach (var kind in _roots.Values.Where(k => !_messages.ContainsKey(k)))
        {
            throw new InvalidOperationException($"protobuf schema root {kind} has no message schema");
        }
    }

    public IReadOnlyCollection<ProtoMessage> Messages => _messages.Values;

    /// <summary>The kinds this set decodes, as "apiVersion Kind" ("*" for any apiVersion), in the order given.</summary>
    public IReadOnlyList<string> RootNames { get; }

    public ProtoMessage Message(string name) => _messages[name];

    /// <summary>The schema of a top-level body, or null when this set has none for that apiVersion and kind.</summary>
    public ProtoMessage? Root(string apiVersion, string kind) =>
        _roots.TryGetValue(RootKey(apiVersion, kind), out var name) || _roots.TryGetValue(RootKey("*", kind), out name)
            ? _messages[name]
            : null;

    private static string RootKey(string apiVersion, string kind) => $"{apiVersion} {kind}";
}
