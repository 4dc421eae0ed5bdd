using System.Text;
using System.Text.Json;
using Lowbit.Planner;
using YamlDotNet.Core;
using YamlDotNet.Serialization;

namespace Lowbit.Cli.Plan;

/// <summary>
/// Reads a catalog override file (YAML or JSON) and hands its JSON form to <see cref="CatalogJson"/>: the
/// I/O and the YAML parsing live here so the planner stays free of packages.
/// </summary>
public static class CatalogFile
{
    public static GpuCatalog Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new PlanInputException("catalog", $"file '{path}' does not exist");
        }
        var text = File.ReadAllText(path);
        var json = path.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? text : YamlToJson(text);
        return CatalogJson.Parse(json);
    }

    /// <summary>Converts YAML to JSON with every scalar as a string (the planner parses numbers from strings).</summary>
    public static string YamlToJson(string yaml)
    {
        object? document;
        try
        {
            document = new DeserializerBuilder().Build().Deserialize<object>(yaml);
        }
        catch (YamlException ex)
        {
            throw new PlanInputException("catalog", $"not valid YAML at line {ex.Start.Line}: {ex.Message}");
        }
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream))
        {
            Write(writer, document);
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    private static void Write(Utf8JsonWriter writer, object? node)
    {
        switch (node)
        {
            case null:
                writer.WriteNullValue();
                break;
            case IDictionary<object, object> map:
                writer.WriteStartObject();
                foreach (var (key, value) in map)
                {
                    writer.WritePropertyName(key.ToString() ?? "");
                    Write(writer, value);
                }
                writer.WriteEndObject();
                break;
            case IList<object> list:
                writer.WriteStartArray();
                foreach (var item in list)
                {
                    Write(writer, item);
                }
                writer.WriteEndArray();
                break;
            default:
                writer.WriteStringValue(node.ToString());
                break;
        }
    }
}
