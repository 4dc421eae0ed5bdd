using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using k8s.Models;

namespace Lowbit.Schema;

/// <summary>
/// The structural-schema semantics of the Kubernetes API server for custom resources, in C#: pruning of unknown
/// fields, defaulting and OpenAPI v3 validation against a CRD version's <c>openAPIV3Schema</c>.
/// CEL rules (<c>x-kubernetes-validations</c>) are not evaluated here; the typed spec validators mirror them.
/// </summary>
public static class StructuralSchema
{
    private const int MaxShownValueLength = 80;
    private static readonly string[] RootMetaFields = ["apiVersion", "kind", "metadata"];
    private static readonly ConcurrentDictionary<string, Regex> Patterns = new(StringComparer.Ordinal);
    private static readonly JsonSerializerOptions ShowOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>
    /// Prunes unknown fields (keeping <c>apiVersion</c>, <c>kind</c>, <c>metadata</c> at the root and anything under
    /// <c>x-kubernetes-preserve-unknown-fields</c>), drops non-nullable nulls, applies defaults, then validates.
    /// Mutates <paramref name="obj"/>. Returns every error; an empty list means valid.
    /// </summary>
    public static IReadOnlyList<SchemaError> Apply(JsonObject obj, V1JSONSchemaProps schema)
    {
        ArgumentNullException.ThrowIfNull(obj);
        ArgumentNullException.ThrowIfNull(schema);
        Prune(obj, schema, isRoot: true);
        ApplyDefaults(obj, schema, isRoot: true);
        return Validate(obj, schema);
    }

    /// <summary>Validates without mutating. <paramref name="rootPath"/> prefixes every field path.</summary>
    public static IReadOnlyList<SchemaError> Validate(JsonNode? obj, V1JSONSchemaProps schema, string rootPath = "")
    {
        ArgumentNullException.ThrowIfNull(schema);
        var errors = new List<SchemaError>();
        ValidateNode(obj, schema, rootPath, errors, isRoot: rootPath.Length == 0);
        return errors;
    }

    /// <summary>Removes fields the schema does not know, and nulls where the schema does not allow them.</summary>
    public static void Prune(JsonNode? node, V1JSONSchemaProps schema, bool isRoot = false)
    {
        switch (node)
        {
            case JsonObject obj:
                PruneObject(obj, schema, isRoot);
                break;
            case JsonArray array when SchemaNodes.Items(schema) is { } items:
                foreach (var element in array)
                {
                    Prune(element, items);
                }

                break;
        }
    }

    private static void PruneObject(JsonObject obj, V1JSONSchemaProps schema, bool isRoot)
    {
        var keepMeta = isRoot || schema.XKubernetesEmbeddedResource == true;
        var preserve = schema.XKubernetesPreserveUnknownFields == true || SchemaNodes.AllowsAnyAdditionalProperties(schema);
        var additional = SchemaNodes.AdditionalProperties(schema);
        foreach (var key in obj.Select(p => p.Key).ToList())
        {
            var value = obj[key];
            if (keepMeta && RootMetaFields.Contains(key, StringComparer.Ordinal))
            {
                continue;
            }

            var child = schema.Properties is not null && schema.Properties.TryGetValue(key, out var p) ? p : additional;
            if (child is null)
            {
                if (!preserve)
                {
                    obj.Remove(key);
                }

                continue;
            }

            if (value is null && child.Nullable != true)
            {
                obj.Remove(key);
                continue;
            }

            Prune(value, child);
        }
    }

    /// <summary>Sets schema defaults on unset fields, top-down, recursing into defaulted values too.</summary>
    public static void ApplyDefaults(JsonNode? node, V1JSONSchemaProps schema, bool isRoot = false)
    {
        switch (node)
        {
            case JsonObject obj:
                if (schema.Properties is not null)
                {
                    foreach (var (name, property) in schema.Properties)
                    {
                        if (isRoot && name == "metadata")
                        {
                            continue;
                        }

                        if (!obj.ContainsKey(name) && SchemaNodes.Default(property) is { } value)
                        {
                            obj[name] = value;
                        }

                        if (obj.TryGetPropertyValue(name, out var child))
                        {
                            ApplyDefaults(child, property);
                        }
                    }
                }

                if (SchemaNodes.AdditionalProperties(schema) is { } values)
                {
                    foreach (var key in obj.Select(p => p.Key).ToList())
                    {
                        if (schema.Properties?.ContainsKey(key) != true)
                        {
                            ApplyDefaults(obj[key], values);
                        }
                    }
                }

                break;
            case JsonArray array when SchemaNodes.Items(schema) is { } items:
                foreach (var element in array)
                {
                    ApplyDefaults(element, items);
                }

                break;
        }
    }

    private static void ValidateNode(JsonNode? node, V1JSONSchemaProps s, string path, List<SchemaError> errors, bool isRoot = false)
    {
        if (node is null)
        {
            if (s.Nullable != true && !IsUntyped(s))
            {
                errors.Add(new(path, SchemaErrorReasons.TypeInvalid, $"Invalid value: \"null\": must be of type {ExpectedType(s)}"));
            }

            return;
        }

        var kind = node.GetValueKind();
        if (!TypeMatches(node, kind, s))
        {
            errors.Add(new(path, SchemaErrorReasons.TypeInvalid, $"Invalid value: {Show(node)}: must be of type {ExpectedType(s)}"));
            return;
        }

        var errorsBefore = errors.Count;
        ValidateEnum(node, s, path, errors);
        switch (node)
        {
            case JsonObject obj:
                ValidateObject(obj, s, path, errors, isRoot);
                break;
            case JsonArray array:
                ValidateArray(array, s, path, errors);
                break;
            case JsonValue value when kind == JsonValueKind.String:
                ValidateString(value.GetValue<string>(), node, s, path, errors);
                break;
            case JsonValue when kind == JsonValueKind.Number:
                ValidateNumber(node, s, path, errors);
                break;
        }

        if (errors.Count == errorsBefore)
        {
            ValidateCombinators(node, s, path, errors);
        }
    }

    private static bool IsUntyped(V1JSONSchemaProps s) =>
        string.IsNullOrEmpty(s.Type) && s.XKubernetesIntOrString != true &&
        (s.XKubernetesPreserveUnknownFields == true || s.Properties is null);

    private static string ExpectedType(V1JSONSchemaProps s) =>
        s.XKubernetesIntOrString == true ? "integer or string" : string.IsNullOrEmpty(s.Type) ? "any" : s.Type;

    private static bool TypeMatches(JsonNode node, JsonValueKind kind, V1JSONSchemaProps s)
    {
        if (s.XKubernetesIntOrString == true)
        {
            return kind == JsonValueKind.String || (kind == JsonValueKind.Number && IsWhole(node));
        }

        return s.Type switch
        {
            null or "" => true,
            "object" => node is JsonObject,
            "array" => node is JsonArray,
            "string" => kind == JsonValueKind.String,
            "boolean" => kind is JsonValueKind.True or JsonValueKind.False,
            "number" => kind == JsonValueKind.Number,
            "integer" => kind == JsonValueKind.Number && IsWhole(node),
            _ => false,
        };
    }

    private static double Number(JsonNode node) =>
        double.Parse(node.ToJsonString(), NumberStyles.Float, CultureInfo.InvariantCulture);

    private static bool IsWhole(JsonNode node)
    {
        var value = Number(node);
        return double.IsFinite(value) && Math.Floor(value) == value;
    }

    private static void ValidateEnum(JsonNode node, V1JSONSchemaProps s, string path, List<SchemaError> errors)
    {
        var allowed = SchemaNodes.Enum(s);
        if (allowed.Count == 0 || allowed.Any(a => JsonNode.DeepEquals(a, node)))
        {
            return;
        }

        var supported = string.Join(", ", allowed.Select(a => a?.ToJsonString() ?? "null"));
        errors.Add(new(path, SchemaErrorReasons.NotSupported, $"Unsupported value: {Show(node)}: supported values: {supported}"));
    }

    private static void ValidateObject(JsonObject obj, V1JSONSchemaProps s, string path, List<SchemaError> errors, bool isRoot)
    {
        if (s.Required is not null)
        {
            foreach (var name in s.Required.Where(name => !obj.ContainsKey(name)))
            {
                errors.Add(new(Join(path, name), SchemaErrorReasons.Required, "Required value"));
            }
        }

        if (s.MaxProperties is { } maxProperties && obj.Count > maxProperties)
        {
            errors.Add(new(path, SchemaErrorReasons.TooMany, $"Too many: {obj.Count}: must have at most {maxProperties} properties"));
        }

        if (s.MinProperties is { } minProperties && obj.Count < minProperties)
        {
            errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {obj.Count}: must have at least {minProperties} properties"));
        }

        var additional = SchemaNodes.AdditionalProperties(s);
        foreach (var (key, value) in obj)
        {
            if (isRoot && RootMetaFields.Contains(key, StringComparer.Ordinal) && s.Properties?.ContainsKey(key) != true)
            {
                continue;
            }

            if (s.Properties is not null && s.Properties.TryGetValue(key, out var property))
            {
                ValidateNode(value, property, Join(path, key), errors);
            }
            else if (additional is not null)
            {
                ValidateNode(value, additional, $"{path}[{key}]", errors);
            }
        }
    }

    private static void ValidateArray(JsonArray array, V1JSONSchemaProps s, string path, List<SchemaError> errors)
    {
        if (s.MaxItems is { } maxItems && array.Count > maxItems)
        {
            errors.Add(new(path, SchemaErrorReasons.TooMany, $"Too many: {array.Count}: must have at most {maxItems} items"));
        }

        if (s.MinItems is { } minItems && array.Count < minItems)
        {
            errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {array.Count}: should have at least {minItems} items"));
        }

        var items = SchemaNodes.Items(s);
        for (var i = 0; i < array.Count; i++)
        {
            if (items is not null)
            {
                ValidateNode(array[i], items, $"{path}[{i}]", errors);
            }
        }

        switch (s.XKubernetesListType)
        {
            case "set":
                ValidateUnique(array, path, errors, element => element?.ToJsonString() ?? "null", element => Show(element));
                break;
            case "map" when s.XKubernetesListMapKeys is { Count: > 0 } keys:
                ValidateUnique(array, path, errors, element => MapKey(element, keys), element => MapKey(element, keys));
                break;
        }

        if (s.UniqueItems == true && s.XKubernetesListType is null)
        {
            ValidateUnique(array, path, errors, element => element?.ToJsonString() ?? "null", element => Show(element));
        }
    }

    private static string MapKey(JsonNode? element, IList<string> keys)
    {
        var key = new JsonObject();
        foreach (var name in keys)
        {
            key[name] = element is JsonObject obj && obj.TryGetPropertyValue(name, out var v) ? v?.DeepClone() : null;
        }

        return key.ToJsonString();
    }

    private static void ValidateUnique(JsonArray array, string path, List<SchemaError> errors, Func<JsonNode?, string> key, Func<JsonNode?, string> show)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < array.Count; i++)
        {
            if (!seen.Add(key(array[i])))
            {
                errors.Add(new($"{path}[{i}]", SchemaErrorReasons.Duplicate, $"Duplicate value: {show(array[i])}"));
            }
        }
    }

    private static void ValidateString(string value, JsonNode node, V1JSONSchemaProps s, string path, List<SchemaError> errors)
    {
        var length = CountRunes(value);
        if (s.MaxLength is { } maxLength && length > maxLength)
        {
            errors.Add(new(path, SchemaErrorReasons.TooLong, $"Too long: may not be more than {maxLength} bytes"));
        }

        if (s.MinLength is { } minLength && length < minLength)
        {
            errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {Show(node)}: should be at least {minLength} chars long"));
        }

        if (!string.IsNullOrEmpty(s.Pattern) && !PatternOf(s.Pattern).IsMatch(value))
        {
            errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {Show(node)}: should match '{s.Pattern}'"));
        }

        if (s.Format == "date-time" && !DateTimeOffset.TryParse(value, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out _))
        {
            errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {Show(node)}: must be a date-time (RFC 3339)"));
        }
    }

    private static int CountRunes(string value)
    {
        var count = 0;
        foreach (var _ in value.EnumerateRunes())
        {
            count++;
        }

        return count;
    }

    private static Regex PatternOf(string pattern) =>
        Patterns.GetOrAdd(pattern, p => new Regex(p, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1)));

    private static void ValidateNumber(JsonNode node, V1JSONSchemaProps s, string path, List<SchemaError> errors)
    {
        var value = Number(node);
        if (s.Minimum is { } minimum)
        {
            var exclusive = s.ExclusiveMinimum == true;
            if (exclusive ? value <= minimum : value < minimum)
            {
                var relation = exclusive ? "greater than" : "greater than or equal to";
                errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {Show(node)}: should be {relation} {Format(minimum)}"));
            }
        }

        if (s.Maximum is { } maximum)
        {
            var exclusive = s.ExclusiveMaximum == true;
            if (exclusive ? value >= maximum : value > maximum)
            {
                var relation = exclusive ? "less than" : "less than or equal to";
                errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {Show(node)}: should be {relation} {Format(maximum)}"));
            }
        }

        if (s.MultipleOf is { } multipleOf && multipleOf > 0 && Math.Abs(Math.IEEERemainder(value, multipleOf)) > 1e-9 * Math.Max(1, Math.Abs(value)))
        {
            errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {Show(node)}: should be a multiple of {Format(multipleOf)}"));
        }

        var (low, high) = s.Format switch
        {
            "int32" => (int.MinValue, (double)int.MaxValue),
            "int64" => (long.MinValue, (double)long.MaxValue),
            "float" => (float.MinValue, (double)float.MaxValue),
            _ => (double.MinValue, double.MaxValue),
        };
        if (value < low || value > high)
        {
            errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {Show(node)}: out of range for format {s.Format}"));
        }
    }

    private static void ValidateCombinators(JsonNode node, V1JSONSchemaProps s, string path, List<SchemaError> errors)
    {
        if (s.AllOf is not null)
        {
            foreach (var part in s.AllOf)
            {
                errors.AddRange(Validate(node, part, path));
            }
        }

        if (s.AnyOf is { Count: > 0 } anyOf && !anyOf.Any(part => Validate(node, part, path).Count == 0))
        {
            errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {Show(node)}: must match at least one of the allowed schemas (anyOf)"));
        }

        if (s.OneOf is { Count: > 0 } oneOf && oneOf.Count(part => Validate(node, part, path).Count == 0) != 1)
        {
            errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {Show(node)}: must match exactly one of the allowed schemas (oneOf)"));
        }

        if (s.Not is { } not && Validate(node, not, path).Count == 0)
        {
            errors.Add(new(path, SchemaErrorReasons.Invalid, $"Invalid value: {Show(node)}: must not match the forbidden schema (not)"));
        }
    }

    private static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";

    private static string Format(double value) => value.ToString(CultureInfo.InvariantCulture);

    private static string Show(JsonNode? node)
    {
        if (node is JsonObject or JsonArray)
        {
            return node.GetValueKind() == JsonValueKind.Object ? "\"object\"" : "\"array\"";
        }

        var text = node?.ToJsonString(ShowOptions) ?? "null";
        if (text.Length <= MaxShownValueLength)
        {
            return text;
        }

        var builder = new StringBuilder(text, 0, MaxShownValueLength, MaxShownValueLength + 4);
        return builder.Append("...").ToString();
    }
}
