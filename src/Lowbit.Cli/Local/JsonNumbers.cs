using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Lowbit.Cli.Local;

/// <summary>
/// Numbers read from status and result JSON written by other programs: a JSON number in any form (12, 12.0, 1e3) or
/// a numeric string, else null. A cast like <c>(long?)node</c> throws on 12.0; a demo must not stop over that.
/// </summary>
public static class JsonNumbers
{
    public static double? Double(JsonNode? node)
    {
        if (node is not JsonValue value)
        {
            return null;
        }
        if (value.TryGetValue<JsonElement>(out var element))
        {
            return element.ValueKind switch
            {
                JsonValueKind.Number => element.GetDouble(),
                JsonValueKind.String when double.TryParse(element.GetString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
                _ => null,
            };
        }
        return value.TryGetValue<double>(out var v) ? v
            : value.TryGetValue<long>(out var l) ? l
            : value.TryGetValue<int>(out var i) ? i
            : value.TryGetValue<string>(out var s) && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var p) ? p
            : null;
    }

    public static long? Long(JsonNode? node) => Double(node) is { } d && !double.IsNaN(d) ? (long)Math.Round(d) : null;
}
