using System.Text.Json.Nodes;

namespace Lowbit.LocalCluster.Patching;

/// <summary>
/// Server-side apply, simplified for controllers and tools that apply their full desired configuration:
/// the applied fields are merged into the live object (lists of built-in kinds merge by key, like strategic
/// merge; other lists are atomic), and fields this manager applied last time but no longer applies are removed.
/// Each manager's applied field set is recorded in <c>metadata.managedFields</c> (FieldsV1). Conflicts between
/// managers are not reported: applying always wins, as with <c>force=true</c>.
/// </summary>
public static class ServerSideApply
{
    private static readonly HashSet<string> UnmanagedMetadata = new(StringComparer.Ordinal)
    {
        "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
        "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
    };

    /// <summary>Merges <paramref name="applied"/> into a copy of <paramref name="live"/>, removing fields this manager gave up.</summary>
    public static JsonObject Merge(JsonObject live, JsonObject applied, string manager, string? subresource, bool atomicLists)
    {
        var result = live.DeepClone().AsObject();
        var previous = FindEntry(live, manager, "Apply", subresource)?["fieldsV1"] as JsonObject;
        var next = FieldsOf(applied);
        MergeInto(result, applied, atomicLists);
        if (previous is not null)
        {
            RemoveGivenUp(result, previous, next);
        }
        return result;
    }

    /// <summary>Records (or refreshes) the manager's Apply entry with the fields of <paramref name="applied"/>.</summary>
    public static void RecordManager(JsonObject obj, string manager, JsonObject applied, string apiVersion, string? now, string? subresource)
    {
        var fields = FieldsOf(applied);
        var entries = ManagedFields(obj);
        var entry = FindEntry(obj, manager, "Apply", subresource);
        if (entry is not null && JsonNode.DeepEquals(entry["fieldsV1"], fields) && (string?)entry["apiVersion"] == apiVersion)
        {
            return;
        }
        var fresh = Entry(manager, "Apply", apiVersion, now ?? (string?)entry?["time"] ?? "", fields, subresource);
        if (entry is not null)
        {
            entries[entries.IndexOf(entry)] = fresh;
        }
        else
        {
            entries.Add(fresh);
        }
    }

    /// <summary>Records that a manager updated the object (an Update entry with its time); skipped without a manager name.</summary>
    public static void RecordUpdateManager(JsonObject obj, string? manager, string apiVersion, string now, string? subresource = null)
    {
        if (string.IsNullOrEmpty(manager))
        {
            return;
        }
        var entries = ManagedFields(obj);
        var entry = FindEntry(obj, manager, "Update", subresource);
        var fresh = Entry(manager, "Update", apiVersion, now, (entry?["fieldsV1"] as JsonObject)?.DeepClone().AsObject() ?? new JsonObject(), subresource);
        if (entry is not null)
        {
            entries[entries.IndexOf(entry)] = fresh;
        }
        else
        {
            entries.Add(fresh);
        }
    }

    /// <summary>The FieldsV1 set of a configuration: <c>f:field</c> for object fields, <c>k:{key}</c> for keyed list items.</summary>
    public static JsonObject FieldsOf(JsonObject applied)
    {
        var fields = new JsonObject();
        foreach (var (key, value) in applied)
        {
            if (key is "apiVersion" or "kind")
            {
                continue;
            }
            if (key == "metadata" && value is JsonObject meta)
            {
                var metaFields = new JsonObject();
                foreach (var (mk, mv) in meta)
                {
                    if (!UnmanagedMetadata.Contains(mk))
                    {
                        metaFields["f:" + mk] = FieldsOfNode(mk, mv);
                    }
                }
                if (metaFields.Count > 0)
                {
                    fields["f:metadata"] = metaFields;
                }
                continue;
            }
            fields["f:" + key] = FieldsOfNode(key, value);
        }
        return fields;
    }

    private static JsonObject FieldsOfNode(string field, JsonNode? value)
    {
        switch (value)
        {
            case JsonObject obj:
                var result = new JsonObject();
                foreach (var (k, v) in obj)
                {
                    result["f:" + k] = FieldsOfNode(k, v);
                }
                return result;
            case JsonArray list when StrategicMergePatch.MergeKey(field, list, null) is { } key && list.All(i => i is JsonObject o && o.ContainsKey(key)):
                var items = new JsonObject();
                foreach (var item in list.OfType<JsonObject>())
                {
                    var itemFields = FieldsOfNode("", item);
                    itemFields["."] = new JsonObject();
                    items[ItemKey(key, item[key])] = itemFields;
                }
                return items;
            default:
                return new JsonObject();
        }
    }

    private static string ItemKey(string key, JsonNode? value) => "k:" + new JsonObject { [key] = value?.DeepClone() }.ToJsonString();

    private static void MergeInto(JsonObject target, JsonObject applied, bool atomicLists)
    {
        foreach (var (key, value) in applied)
        {
            if (key == "metadata" && value is JsonObject meta && target["metadata"] is JsonObject targetMeta)
            {
                foreach (var (mk, mv) in meta)
                {
                    if (mk is "resourceVersion" or "managedFields" or "uid" or "creationTimestamp" or "generation")
                    {
                        continue;
                    }
                    if (mv is JsonObject mo && targetMeta[mk] is JsonObject existing)
                    {
                        MergeInto(existing, mo, atomicLists);
                    }
                    else if (mk == "finalizers" && mv is JsonArray add && targetMeta[mk] is JsonArray have)
                    {
                        foreach (var f in add.Where(f => !have.Any(h => JsonNode.DeepEquals(h, f))))
                        {
                            have.Add(f?.DeepClone());
                        }
                    }
                    else
                    {
                        targetMeta[mk] = mv?.DeepClone();
                    }
                }
                continue;
            }
            switch (value)
            {
                case JsonObject obj when target[key] is JsonObject existing:
                    MergeInto(existing, obj, atomicLists);
                    break;
                case JsonArray list when !atomicLists && target[key] is JsonArray existingList
                    && StrategicMergePatch.MergeKey(key, existingList, list) is { } mergeKey
                    && list.All(i => i is JsonObject o && o.ContainsKey(mergeKey)):
                    foreach (var item in list.OfType<JsonObject>())
                    {
                        var match = existingList.OfType<JsonObject>().FirstOrDefault(e => JsonNode.DeepEquals(e[mergeKey], item[mergeKey]));
                        if (match is null)
                        {
                            existingList.Add(item.DeepClone());
                        }
                        else
                        {
                            MergeInto(match, item, atomicLists);
                        }
                    }
                    break;
                default:
                    target[key] = value?.DeepClone();
                    break;
            }
        }
    }

    private static void RemoveGivenUp(JsonNode? node, JsonObject previous, JsonObject next)
    {
        foreach (var (key, prevChild) in previous)
        {
            if (key == ".")
            {
                continue;
            }
            var nextChild = next[key] as JsonObject;
            if (key.StartsWith("f:", StringComparison.Ordinal) && node is JsonObject obj)
            {
                var field = key[2..];
                if (nextChild is null)
                {
                    if (!(obj == obj.Root && field is "apiVersion" or "kind" or "metadata"))
                    {
                        obj.Remove(field);
                    }
                }
                else if (prevChild is JsonObject { Count: > 0 } prevFields)
                {
                    RemoveGivenUp(obj[field], prevFields, nextChild);
                }
            }
            else if (key.StartsWith("k:", StringComparison.Ordinal) && node is JsonArray list)
            {
                var itemKey = JsonNode.Parse(key[2..]) as JsonObject;
                var (name, value) = itemKey!.First();
                var index = list.Select((item, i) => (item, i)).FirstOrDefault(p => JsonNode.DeepEquals(p.item?[name], value)).i;
                var found = index < list.Count && JsonNode.DeepEquals(list[index]?[name], value);
                if (!found)
                {
                    continue;
                }
                if (nextChild is null)
                {
                    list.RemoveAt(index);
                }
                else if (prevChild is JsonObject prevFields)
                {
                    RemoveGivenUp(list[index], prevFields, nextChild);
                }
            }
        }
    }

    private static JsonArray ManagedFields(JsonObject obj)
    {
        var meta = obj["metadata"]!.AsObject();
        if (meta["managedFields"] is not JsonArray entries)
        {
            entries = [];
            meta["managedFields"] = entries;
        }
        return entries;
    }

    private static JsonObject? FindEntry(JsonObject obj, string manager, string operation, string? subresource) =>
        (obj["metadata"]?["managedFields"] as JsonArray)?.OfType<JsonObject>().FirstOrDefault(e =>
            (string?)e["manager"] == manager && (string?)e["operation"] == operation && (string?)e["subresource"] == subresource);

    private static JsonObject Entry(string manager, string operation, string apiVersion, string time, JsonObject fields, string? subresource)
    {
        var entry = new JsonObject
        {
            ["manager"] = manager,
            ["operation"] = operation,
            ["apiVersion"] = apiVersion,
            ["time"] = time,
            ["fieldsType"] = "FieldsV1",
            ["fieldsV1"] = fields,
        };
        if (subresource is not null)
        {
            entry["subresource"] = subresource;
        }
        return entry;
    }
}
