using System.Globalization;
using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Store;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Lowbit.LocalCluster.Patching;

/// <summary>YAML (and JSON, which is YAML) to JsonNode, with YAML 1.2 core-schema scalars.</summary>
public static class Yaml
{
    public static JsonObject ParseObject(string text)
    {
        try
        {
            var stream = new YamlStream();
            stream.Load(new StringReader(text));
            var budget = new Budget();
            if (stream.Documents.Count == 0 || ToJson(stream.Documents[0].RootNode, budget, 0) is not JsonObject obj)
            {
                throw ApiException.BadRequest("the apply body must be a YAML or JSON object");
            }
            return obj;
        }
        catch (YamlException ex)
        {
            throw ApiException.BadRequest($"the apply body is not valid YAML: {ex.Message}");
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
        {
            // Duplicate keys (JsonObject) and YamlDotNet's own state errors on malformed input.
            throw ApiException.BadRequest($"the apply body is not valid YAML: {ex.Message}");
        }
    }

    /// <summary>Bounds on the JSON a YAML document may expand to: aliases can repeat (or contain) their anchor.</summary>
    private sealed class Budget
    {
        public const int MaxDepth = 100;
        public const int MaxNodes = 1_000_000;
        public int Nodes;
    }

    private static JsonNode? ToJson(YamlNode node, Budget budget, int depth)
    {
        if (depth > Budget.MaxDepth || ++budget.Nodes > Budget.MaxNodes)
        {
            throw ApiException.BadRequest($"the apply body nests deeper than {Budget.MaxDepth} levels or expands to more than {Budget.MaxNodes} nodes (YAML aliases?)");
        }
        return node switch
        {
            YamlMappingNode map => new JsonObject(map.Children.Select(kv => KeyValuePair.Create(
                kv.Key is YamlScalarNode key ? key.Value ?? "" : throw ApiException.BadRequest("the apply body has a mapping key that is not a scalar"),
                ToJson(kv.Value, budget, depth + 1)))),
            YamlSequenceNode seq => new JsonArray(seq.Children.Select(c => ToJson(c, budget, depth + 1)).ToArray()),
            YamlScalarNode scalar => Scalar(scalar),
            _ => null,
        };
    }

    private static JsonNode? Scalar(YamlScalarNode scalar)
    {
        var value = scalar.Value ?? "";
        if (scalar.Style is ScalarStyle.SingleQuoted or ScalarStyle.DoubleQuoted or ScalarStyle.Literal or ScalarStyle.Folded)
        {
            return JsonValue.Create(value);
        }
        switch (value)
        {
            case "" or "~" or "null" or "Null" or "NULL":
                return null;
            case "true" or "True" or "TRUE":
                return JsonValue.Create(true);
            case "false" or "False" or "FALSE":
                return JsonValue.Create(false);
        }
        if (long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l))
        {
            return JsonValue.Create(l);
        }
        if (System.Text.RegularExpressions.Regex.IsMatch(value, @"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
            && double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var d))
        {
            return JsonValue.Create(d);
        }
        return JsonValue.Create(value);
    }
}
