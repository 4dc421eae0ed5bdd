using System.Text.Json;
using System.Text.Json.Nodes;
using Lowbit.Schema;

namespace Lowbit.LocalCluster.Store;

/// <summary>
/// A request body or node config in YAML (or JSON, which is YAML) as a JSON object, through the repository's one codec
/// (<see cref="Yaml"/>); malformed input is a 400 Bad Request, as the real API server answers.
/// </summary>
public static class YamlBody
{
    /// <summary>The first document of <paramref name="text"/>, which must be a mapping.</summary>
    public static JsonObject ParseObject(string text)
    {
        IReadOnlyList<JsonNode> documents;
        try
        {
            documents = Yaml.ParseAll(text);
        }
        catch (Exception ex) when (ex is FormatException or JsonException)
        {
            throw ApiException.BadRequest($"the apply body is not valid: {ex.Message}");
        }
        return documents is [JsonObject obj, ..]
            ? obj
            : throw ApiException.BadRequest("the apply body must be a YAML or JSON object");
    }
}
