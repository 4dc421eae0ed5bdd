using System.Collections;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;

namespace Lowbit.Schema;

/// <summary>
/// Reads the loosely typed members of <see cref="V1JSONSchemaProps"/> (<c>items</c>, <c>additionalProperties</c>,
/// <c>default</c>, <c>enum</c> are <see cref="object"/>): depending on how the CRD was loaded they hold a
/// <see cref="V1JSONSchemaProps"/>, a <see cref="JsonElement"/> (JSON), a <see cref="JsonNode"/>, or YamlDotNet's
/// <c>Dictionary&lt;object, object&gt;</c> and boxed scalars (YAML). Conversions are cached per source object.
/// </summary>
public static class SchemaNodes
{
    private static readonly ConditionalWeakTable<object, V1JSONSchemaProps> SchemaCache = new();
    private static readonly ConditionalWeakTable<object, JsonNode> NodeCache = new();

    /// <summary>The schema of array elements, or null when there is none.</summary>
    public static V1JSONSchemaProps? Items(V1JSONSchemaProps schema) => AsSchema(schema.Items);

    /// <summary>The schema of map values (<c>additionalProperties</c>), or null when absent or a boolean.</summary>
    public static V1JSONSchemaProps? AdditionalProperties(V1JSONSchemaProps schema) => AsSchema(schema.AdditionalProperties);

    /// <summary>True when <c>additionalProperties: true</c> (any value allowed, nothing pruned).</summary>
    public static bool AllowsAnyAdditionalProperties(V1JSONSchemaProps schema) => schema.AdditionalProperties switch
    {
        bool b => b,
        JsonElement { ValueKind: JsonValueKind.True } => true,
        JsonValue v when v.GetValueKind() == JsonValueKind.True => true,
        _ => false,
    };

    /// <summary>The default value as a fresh JSON node (callers may attach it), or null when none.</summary>
    public static JsonNode? Default(V1JSONSchemaProps schema) =>
        schema.DefaultProperty is null ? null : CachedNode(schema.DefaultProperty)?.DeepClone();

    /// <summary>The allowed values as JSON nodes (shared, do not attach them).</summary>
    public static IReadOnlyList<JsonNode?> Enum(V1JSONSchemaProps schema) =>
        schema.EnumProperty is null ? [] : schema.EnumProperty.Select(CachedNode).ToList();

    /// <summary>Converts a CLR value of any of the shapes above to a JSON node.</summary>
    public static JsonNode? ToNode(object? value) => value switch
    {
        null => null,
        JsonNode node => node.DeepClone(),
        JsonElement element => JsonNode.Parse(element.GetRawText()),
        string s => JsonValue.Create(s),
        bool b => JsonValue.Create(b),
        IDictionary dictionary => ToObject(dictionary),
        IEnumerable sequence => new JsonArray(sequence.Cast<object?>().Select(ToNode).ToArray()),
        IConvertible convertible when IsNumber(convertible) =>
            JsonNode.Parse(Convert.ToString(convertible, CultureInfo.InvariantCulture)!),
        _ => JsonNode.Parse(KubernetesJson.Serialize(value)),
    };

    private static bool IsNumber(IConvertible value) => value.GetTypeCode() is >= TypeCode.SByte and <= TypeCode.Decimal;

    private static JsonObject ToObject(IDictionary dictionary)
    {
        var result = new JsonObject();
        foreach (DictionaryEntry entry in dictionary)
        {
            result[Convert.ToString(entry.Key, CultureInfo.InvariantCulture)!] = ToNode(entry.Value);
        }

        return result;
    }

    private static JsonNode? CachedNode(object? value)
    {
        if (value is null)
        {
            return null;
        }

        if (value is JsonNode node)
        {
            return node;
        }

        // Boxed values (JsonElement, YAML scalars) live in the schema's lists, so their box is a stable cache key.
        if (NodeCache.TryGetValue(value, out var cached))
        {
            return cached;
        }

        var converted = ToNode(value);
        if (converted is not null)
        {
            NodeCache.AddOrUpdate(value, converted);
        }

        return converted;
    }

    private static V1JSONSchemaProps? AsSchema(object? value) => value switch
    {
        V1JSONSchemaProps schema => schema,
        JsonElement { ValueKind: JsonValueKind.Object } or JsonObject or IDictionary =>
            SchemaCache.GetValue(value, v => KubernetesJson.Deserialize<V1JSONSchemaProps>(ToNode(v)!.ToJsonString())),
        _ => null,
    };
}
