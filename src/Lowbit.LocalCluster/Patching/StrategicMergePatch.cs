using System.Text.Json.Nodes;

namespace Lowbit.LocalCluster.Patching;

/// <summary>
/// Strategic merge patch for the built-in kinds: like a merge patch, but lists of objects merge by their key
/// (containers, initContainers, volumes, env, imagePullSecrets by name; volumeMounts by mountPath; container
/// ports by containerPort and service ports by port; conditions by type; ownerReferences by uid), finalizers merge
/// as a set, and the directives <c>$patch: replace|delete|merge</c>, <c>$retainKeys</c>,
/// <c>$deleteFromPrimitiveList/&lt;field&gt;</c> and <c>$setElementOrder/&lt;field&gt;</c> (ordering ignored) work.
/// Other lists are replaced, as their Go types declare no patch strategy.
/// </summary>
public static class StrategicMergePatch
{
    private const string Directive = "$patch";
    private const string RetainKeys = "$retainKeys";
    private const string DeleteFromPrimitiveList = "$deleteFromPrimitiveList/";
    private const string SetElementOrder = "$setElementOrder/";

    private static readonly HashSet<string> PrimitiveSetLists = new(StringComparer.Ordinal) { "finalizers" };

    public static JsonNode Apply(JsonObject target, JsonNode patch)
    {
        if (patch is not JsonObject patchObject)
        {
            throw Store.ApiException.BadRequest("a strategic merge patch must be a JSON object");
        }
        return MergeObject(target, patchObject);
    }

    /// <summary>The merge key of a list field, or null when the list is replaced as a whole.</summary>
    public static string? MergeKey(string field, JsonArray? a, JsonArray? b) => field switch
    {
        "containers" or "initContainers" or "ephemeralContainers" or "volumes" or "env" or "imagePullSecrets" or "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => HasKey(a, "containerPort") || HasKey(b, "containerPort") ? "containerPort" : "port",
        _ => null,
    };

    private static bool HasKey(JsonArray? list, string key) => list?.OfType<JsonObject>().Any(o => o.ContainsKey(key)) == true;

    private static JsonObject MergeObject(JsonObject target, JsonObject patch)
    {
        var directive = (string?)patch[Directive];
        if (directive == "replace")
        {
            return Clean(patch);
        }
        foreach (var (key, value) in patch.ToList())
        {
            if (key == Directive || key == RetainKeys || key.StartsWith(SetElementOrder, StringComparison.Ordinal))
            {
                continue;
            }
            if (key.StartsWith(DeleteFromPrimitiveList, StringComparison.Ordinal))
            {
                var field = key[DeleteFromPrimitiveList.Length..];
                if (target[field] is JsonArray list && value is JsonArray remove)
                {
                    var kept = list.Where(item => !remove.Any(r => JsonNode.DeepEquals(r, item))).Select(i => i?.DeepClone()).ToArray();
                    target[field] = new JsonArray(kept);
                }
                continue;
            }
            if (value is null)
            {
                target.Remove(key);
                continue;
            }
            var existing = target.TryGetPropertyValue(key, out var current) ? current : null;
            switch (value)
            {
                case JsonObject patchChild when (string?)patchChild[Directive] == "delete":
                    target.Remove(key);
                    break;
                case JsonObject patchChild when existing is JsonObject targetChild:
                    var merged = MergeObject(targetChild, patchChild);
                    if (!ReferenceEquals(merged, targetChild))
                    {
                        target[key] = merged;
                    }
                    break;
                case JsonObject patchChild:
                    target[key] = Clean(patchChild);
                    break;
                case JsonArray patchList:
                    target[key] = MergeList(key, existing as JsonArray, patchList);
                    break;
                default:
                    target[key] = value.DeepClone();
                    break;
            }
        }
        if (patch[RetainKeys] is JsonArray retain)
        {
            var keep = retain.Select(k => (string?)k).ToHashSet(StringComparer.Ordinal);
            foreach (var key in target.Select(kv => kv.Key).Where(k => !keep.Contains(k)).ToList())
            {
                target.Remove(key);
            }
        }
        return target;
    }

    private static JsonArray MergeList(string field, JsonArray? target, JsonArray patch)
    {
        if (patch.Count == 1 && patch[0] is JsonObject only && (string?)only[Directive] == "replace")
        {
            return [];
        }
        if (PrimitiveSetLists.Contains(field) && target is not null)
        {
            var result = new JsonArray(target.Select(i => i?.DeepClone()).ToArray());
            foreach (var item in patch.Where(i => !result.Any(r => JsonNode.DeepEquals(r, i))))
            {
                result.Add(item?.DeepClone());
            }
            return result;
        }
        var mergeKey = MergeKey(field, target, patch);
        if (mergeKey is null || target is null || !patch.All(i => i is JsonObject))
        {
            return new JsonArray(patch.Where(i => !(i is JsonObject o && (string?)o[Directive] == "delete")).Select(i => i is JsonObject o ? Clean(o) : i?.DeepClone()).ToArray());
        }
        var merged = new JsonArray(target.Select(i => i?.DeepClone()).ToArray());
        foreach (var item in patch.OfType<JsonObject>())
        {
            var key = item[mergeKey];
            var index = -1;
            for (var i = 0; i < merged.Count; i++)
            {
                if (merged[i] is JsonObject candidate && JsonNode.DeepEquals(candidate[mergeKey], key))
                {
                    index = i;
                    break;
                }
            }
            var directive = (string?)item[Directive];
            if (directive == "delete")
            {
                if (index >= 0)
                {
                    merged.RemoveAt(index);
                }
                continue;
            }
            if (index >= 0)
            {
                var existing = merged[index]!.AsObject();
                var result = directive == "replace" ? Clean(item) : MergeObject(existing, item);
                if (!ReferenceEquals(result, existing))
                {
                    merged[index] = result;
                }
            }
            else
            {
                merged.Add(Clean(item));
            }
        }
        return merged;
    }

    /// <summary>A copy of a patch fragment without directives (what gets stored when there is nothing to merge into).</summary>
    private static JsonObject Clean(JsonObject patch)
    {
        var result = new JsonObject();
        foreach (var (key, value) in patch)
        {
            if (key.StartsWith('$'))
            {
                continue;
            }
            if (value is null)
            {
                continue;
            }
            result[key] = value switch
            {
                JsonObject o => Clean(o),
                JsonArray a => new JsonArray(a.Select(i => i is JsonObject o ? Clean(o) : i?.DeepClone()).ToArray()),
                _ => value.DeepClone(),
            };
        }
        return result;
    }
}
