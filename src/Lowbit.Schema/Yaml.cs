using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Lowbit.Schema;

/// <summary>
/// YAML ⇄ JSON nodes, the way the Kubernetes tooling reads and writes manifests: plain scalars are resolved
/// (YAML 1.2 core schema: null, booleans, integers, floats), quoted scalars stay strings. The writer emits keys in
/// the order of the node (deterministic) and quotes every string that would otherwise read back as something else.
/// The one YAML codec of the repository: the CRD writer, CRD and manifest loading, and the local cluster's request
/// bodies and node configs. Every malformed input is a <see cref="FormatException"/> (a duplicate key, a non-scalar key,
/// YAML syntax, or a document nesting deeper than <see cref="MaxDepth"/> or expanding — through aliases — to more than
/// <see cref="MaxNodes"/> nodes).
/// </summary>
public static partial class Yaml
{
    /// <summary>The deepest nesting a document may have.</summary>
    public const int MaxDepth = 100;

    /// <summary>The most nodes a text may expand to (aliases can repeat, or contain, their anchor).</summary>
    public const int MaxNodes = 1_000_000;

    private static readonly JsonSerializerOptions StringEscaping = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Parses every document of a (multi-document) YAML text; empty documents are skipped.</summary>
    public static IReadOnlyList<JsonNode> ParseAll(string yaml)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(yaml));
        }
        catch (YamlException ex)
        {
            throw new FormatException($"not valid YAML: {ex.Message}", ex);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
        {
            // YamlDotNet's own state errors on malformed input (e.g. a duplicate anchor).
            throw new FormatException($"not valid YAML: {ex.Message}", ex);
        }
        var budget = new Budget();
        return stream.Documents.Select(d => ToNode(d.RootNode, budget, 0)).OfType<JsonNode>().ToList();
    }

    /// <summary>Parses a single-document YAML text to a JSON object.</summary>
    public static JsonObject ParseObject(string yaml)
    {
        var documents = ParseAll(yaml);
        return documents is [JsonObject obj]
            ? obj
            : throw new FormatException($"expected exactly one YAML document holding a mapping, found {documents.Count} document(s)");
    }

    private static JsonNode? ToNode(YamlNode node, Budget budget, int depth)
    {
        if (depth > MaxDepth || ++budget.Nodes > MaxNodes)
        {
            throw new FormatException($"nests deeper than {MaxDepth} levels or expands to more than {MaxNodes} nodes (YAML aliases?)");
        }

        return node switch
        {
            YamlMappingNode mapping => ToObject(mapping, budget, depth),
            YamlSequenceNode sequence => new JsonArray(sequence.Children.Select(c => ToNode(c, budget, depth + 1)).ToArray()),
            YamlScalarNode scalar => ToScalar(scalar),
            _ => throw new FormatException($"unsupported YAML node at {node.Start}"),
        };
    }

    private static JsonObject ToObject(YamlMappingNode mapping, Budget budget, int depth)
    {
        var result = new JsonObject();
        foreach (var (key, value) in mapping.Children)
        {
            var name = key is YamlScalarNode scalar ? scalar.Value ?? "" : throw new FormatException($"a mapping key that is not a scalar at {key.Start}");
            if (result.ContainsKey(name))
            {
                throw new FormatException($"duplicate key '{name}' at {key.Start}");
            }

            result[name] = ToNode(value, budget, depth + 1);
        }

        return result;
    }

    private sealed class Budget
    {
        public int Nodes;
    }

    private static JsonNode? ToScalar(YamlScalarNode scalar)
    {
        var text = scalar.Value ?? "";
        if (scalar.Style is not ScalarStyle.Plain || scalar.Tag == "tag:yaml.org,2002:str")
        {
            return JsonValue.Create(text);
        }

        if (text is "" or "~" or "null" or "Null" or "NULL")
        {
            return null;
        }

        if (text is "true" or "True" or "TRUE")
        {
            return JsonValue.Create(true);
        }

        if (text is "false" or "False" or "FALSE")
        {
            return JsonValue.Create(false);
        }

        if (IntegerPattern().IsMatch(text) && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var integer))
        {
            return JsonValue.Create(integer);
        }

        if (FloatPattern().IsMatch(text) && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var real) && double.IsFinite(real))
        {
            return JsonNode.Parse(real.ToString("R", CultureInfo.InvariantCulture));
        }

        return JsonValue.Create(text);
    }

    /// <summary>Writes a JSON node as block-style YAML (objects keep their key order).</summary>
    public static string Write(JsonNode? node)
    {
        var builder = new StringBuilder();
        WriteValue(builder, node, indent: 0, inSequence: false);
        if (builder.Length == 0 || builder[^1] != '\n')
        {
            builder.Append('\n');
        }

        return builder.ToString();
    }

    private static void WriteValue(StringBuilder builder, JsonNode? node, int indent, bool inSequence)
    {
        switch (node)
        {
            case JsonObject obj when obj.Count > 0:
                var first = true;
                foreach (var (key, value) in obj)
                {
                    if (!(first && inSequence))
                    {
                        builder.Append(' ', indent);
                    }

                    first = false;
                    builder.Append(Scalar(key)).Append(':');
                    WriteChild(builder, value, indent);
                }

                break;
            case JsonArray array when array.Count > 0:
                var firstItem = true;
                foreach (var item in array)
                {
                    if (!(firstItem && inSequence))
                    {
                        builder.Append(' ', indent);
                    }

                    firstItem = false;
                    builder.Append("- ");
                    if (item is JsonObject { Count: > 0 } or JsonArray { Count: > 0 })
                    {
                        WriteValue(builder, item, indent + 2, inSequence: true);
                    }
                    else
                    {
                        builder.Append(Inline(item)).Append('\n');
                    }
                }

                break;
            default:
                builder.Append(Inline(node)).Append('\n');
                break;
        }
    }

    private static void WriteChild(StringBuilder builder, JsonNode? value, int indent)
    {
        switch (value)
        {
            case JsonObject { Count: > 0 }:
                builder.Append('\n');
                WriteValue(builder, value, indent + 2, inSequence: false);
                break;
            case JsonArray { Count: > 0 }:
                builder.Append('\n');
                WriteValue(builder, value, indent, inSequence: false);
                break;
            default:
                builder.Append(' ').Append(Inline(value)).Append('\n');
                break;
        }
    }

    private static string Inline(JsonNode? node) => node switch
    {
        null => "null",
        JsonObject => "{}",
        JsonArray => "[]",
        _ when node.GetValueKind() == JsonValueKind.String => Scalar(node.GetValue<string>()),
        _ => node.ToJsonString(),
    };

    /// <summary>A string as a YAML scalar: plain when it reads back as the same string, else double-quoted.</summary>
    private static string Scalar(string text) =>
        PlainSafe().IsMatch(text) && ToScalar(new YamlScalarNode(text) { Style = ScalarStyle.Plain }) is JsonValue v &&
        v.GetValueKind() == JsonValueKind.String
            ? text
            : JsonSerializer.Serialize(text, StringEscaping);

    [GeneratedRegex(@"^[-+]?(0|[1-9][0-9]*)$")]
    private static partial Regex IntegerPattern();

    [GeneratedRegex(@"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")]
    private static partial Regex FloatPattern();

    // Conservative: starts with a letter, digit, '/', '.' or '_', contains no YAML indicator that could change meaning.
    [GeneratedRegex(@"^[A-Za-z0-9_./(][A-Za-z0-9 _./(),'=<>|&!+*-]*(?<! )$")]
    private static partial Regex PlainSafe();
}
