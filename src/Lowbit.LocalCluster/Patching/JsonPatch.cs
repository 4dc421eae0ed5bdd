using System.Text.Json;
using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Patching;

/// <summary>RFC 6902 JSON Patch: add, remove, replace, move, copy, test.</summary>
public static class JsonPatch
{
    public static JsonNode Apply(JsonNode document, string patch)
    {
        JsonArray operations;
        try
        {
            operations = JsonNode.Parse(patch) as JsonArray ?? throw ApiException.BadRequest("a JSON patch must be a JSON array of operations");
        }
        catch (JsonException ex)
        {
            throw ApiException.BadRequest($"the JSON patch is not valid JSON: {ex.Message}");
        }
        var root = document;
        foreach (var operation in operations)
        {
            if (operation is not JsonObject)
            {
                throw ApiException.BadRequest("each JSON patch operation must be an object");
            }
            var op = (string?)operation["op"] ?? throw ApiException.BadRequest("JSON patch operation without \"op\" (accepted: add, remove, replace, move, copy, test)");
            var path = (string?)operation["path"] ?? throw ApiException.BadRequest($"JSON patch operation \"{op}\" without \"path\"");
            switch (op)
            {
                case "add":
                    root = Add(root, path, operation["value"]?.DeepClone());
                    break;
                case "remove":
                    root = Remove(root, path, out _);
                    break;
                case "replace":
                    root = Remove(root, path, out _);
                    root = Add(root, path, operation["value"]?.DeepClone());
                    break;
                case "move":
                    root = Remove(root, From(operation), out var moved);
                    root = Add(root, path, moved);
                    break;
                case "copy":
                    root = Add(root, path, Resolve(root, From(operation))?.DeepClone());
                    break;
                case "test":
                    if (!JsonNode.DeepEquals(Resolve(root, path), operation["value"]))
                    {
                        throw new ApiException(422, "Invalid", $"the JSON patch test operation failed at {path}");
                    }
                    break;
                default:
                    throw ApiException.BadRequest($"unknown JSON patch operation \"{op}\" (accepted: add, remove, replace, move, copy, test)");
            }
        }
        return root;
    }

    private static string From(JsonNode operation) =>
        (string?)operation["from"] ?? throw ApiException.BadRequest($"JSON patch operation \"{operation["op"]}\" without \"from\"");

    private static List<string> Tokens(string path)
    {
        if (path.Length == 0)
        {
            return [];
        }
        if (path[0] != '/')
        {
            throw ApiException.BadRequest($"invalid JSON pointer \"{path}\": it must start with /");
        }
        return path[1..].Split('/').Select(t => t.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal)).ToList();
    }

    private static JsonNode? Resolve(JsonNode? node, string path)
    {
        foreach (var token in Tokens(path))
        {
            node = node switch
            {
                JsonObject obj => obj.TryGetPropertyValue(token, out var child) ? child : throw Missing(path),
                JsonArray array when int.TryParse(token, out var i) && i >= 0 && i < array.Count => array[i],
                _ => throw Missing(path),
            };
        }
        return node;
    }

    private static JsonNode Add(JsonNode root, string path, JsonNode? value)
    {
        var tokens = Tokens(path);
        if (tokens.Count == 0)
        {
            return value ?? throw ApiException.BadRequest("cannot replace the whole document with null");
        }
        var parent = Resolve(root, "/" + string.Join('/', tokens.Take(tokens.Count - 1).Select(Escape)));
        var last = tokens[^1];
        switch (parent)
        {
            case JsonObject obj:
                obj[last] = value;
                break;
            case JsonArray array:
                if (last == "-")
                {
                    array.Add(value);
                }
                else if (int.TryParse(last, out var index) && index >= 0 && index <= array.Count)
                {
                    array.Insert(index, value);
                }
                else
                {
                    throw Missing(path);
                }
                break;
            default:
                throw Missing(path);
        }
        return root;
    }

    private static JsonNode Remove(JsonNode root, string path, out JsonNode? removed)
    {
        var tokens = Tokens(path);
        if (tokens.Count == 0)
        {
            throw ApiException.BadRequest("cannot remove the whole document");
        }
        var parent = Resolve(root, "/" + string.Join('/', tokens.Take(tokens.Count - 1).Select(Escape)));
        var last = tokens[^1];
        switch (parent)
        {
            case JsonObject obj when obj.TryGetPropertyValue(last, out removed):
                obj.Remove(last);
                removed = removed?.DeepClone();
                break;
            case JsonArray array when int.TryParse(last, out var index) && index >= 0 && index < array.Count:
                removed = array[index]?.DeepClone();
                array.RemoveAt(index);
                break;
            default:
                throw Missing(path);
        }
        return root;
    }

    private static string Escape(string token) => token.Replace("~", "~0", StringComparison.Ordinal).Replace("/", "~1", StringComparison.Ordinal);

    private static ApiException Missing(string path) =>
        new(422, "Invalid", $"the server rejected our request due to an error in our request: jsonpatch: path {path} does not exist");
}

/// <summary>RFC 7386 JSON Merge Patch: objects merge recursively, null deletes, everything else replaces.</summary>
public static class MergePatch
{
    public static JsonNode? Apply(JsonNode? target, JsonNode? patch)
    {
        if (patch is not JsonObject patchObject)
        {
            return patch?.DeepClone();
        }
        if (target is not JsonObject targetObject)
        {
            targetObject = new JsonObject();
        }
        foreach (var (key, value) in patchObject)
        {
            if (value is null)
            {
                targetObject.Remove(key);
            }
            else
            {
                var existing = targetObject.TryGetPropertyValue(key, out var current) ? current : null;
                var merged = Apply(existing, value);
                if (!ReferenceEquals(merged, existing))
                {
                    targetObject[key] = merged;
                }
            }
        }
        return targetObject;
    }
}
