using System.Text.Json;
using System.Text.Json.Nodes;

namespace Lowbit.LocalCluster.Store;

/// <summary>
/// One immutable stored version of an object: its UTF-8 JSON (what lists and watches write out as is)
/// plus the few fields selectors and the garbage collector read without parsing.
/// </summary>
public sealed class StoredObject
{
    private static readonly IReadOnlyDictionary<string, string> NoLabels = new Dictionary<string, string>();

    private StoredObject(string ns, string name, string uid, long resourceVersion, byte[] json,
        IReadOnlyDictionary<string, string> labels, IReadOnlyList<string> ownerUids, bool deleting, string? nodeName, string? phase)
    {
        Namespace = ns;
        Name = name;
        Uid = uid;
        ResourceVersion = resourceVersion;
        Json = json;
        Labels = labels;
        OwnerUids = ownerUids;
        IsDeleting = deleting;
        NodeName = nodeName;
        Phase = phase;
    }

    /// <summary>Namespace, or empty for cluster-scoped objects.</summary>
    public string Namespace { get; }

    public string Name { get; }

    public string Uid { get; }

    public long ResourceVersion { get; }

    /// <summary>The object as UTF-8 JSON (metadata.resourceVersion included).</summary>
    public byte[] Json { get; }

    public IReadOnlyDictionary<string, string> Labels { get; }

    public IReadOnlyList<string> OwnerUids { get; }

    /// <summary>True once metadata.deletionTimestamp is set.</summary>
    public bool IsDeleting { get; }

    /// <summary>Pods: spec.nodeName.</summary>
    public string? NodeName { get; }

    /// <summary>Pods and namespaces: status.phase.</summary>
    public string? Phase { get; }

    public string Key => KeyOf(Namespace, Name);

    public static string KeyOf(string? ns, string name) => $"{ns}/{name}";

    /// <summary>A fresh, mutable copy of the object.</summary>
    public JsonObject ToJsonObject() => JsonNode.Parse(Json)!.AsObject();

    public static StoredObject From(JsonObject obj, long resourceVersion)
    {
        var meta = obj["metadata"]!.AsObject();
        var labels = NoLabels;
        if (meta["labels"] is JsonObject labelObj && labelObj.Count > 0)
        {
            var dict = new Dictionary<string, string>(labelObj.Count, StringComparer.Ordinal);
            foreach (var (k, v) in labelObj)
            {
                dict[k] = v?.GetValue<string>() ?? "";
            }
            labels = dict;
        }
        IReadOnlyList<string> owners = [];
        if (meta["ownerReferences"] is JsonArray refs && refs.Count > 0)
        {
            owners = refs.Select(r => (string?)r?["uid"] ?? "").Where(u => u.Length > 0).ToArray();
        }
        var nodeName = (string?)obj["spec"]?["nodeName"];
        var phase = obj["status"] is JsonObject status && status["phase"] is JsonValue p && p.GetValueKind() == JsonValueKind.String ? (string?)p : null;
        return new StoredObject(
            (string?)meta["namespace"] ?? "",
            (string?)meta["name"] ?? "",
            (string?)meta["uid"] ?? "",
            resourceVersion,
            JsonSerializer.SerializeToUtf8Bytes(obj),
            labels,
            owners,
            meta["deletionTimestamp"] is not null,
            nodeName,
            phase);
    }
}

/// <summary>The kind of a watch event.</summary>
public enum WatchEventKind
{
    Added,
    Modified,
    Deleted,
    Bookmark,
}

/// <summary>
/// One change: the object after it (for DELETED, the last state with the deletion's resourceVersion) and,
/// for MODIFIED and DELETED, the state before, so selector watches can turn a change into ADDED or DELETED.
/// A BOOKMARK carries no object, only <see cref="ResourceVersion"/>.
/// </summary>
public sealed record WatchEvent(WatchEventKind Type, StoredObject? Object, StoredObject? Previous, long ResourceVersion)
{
    /// <summary>Set on the bookmark that ends the initial events of a <c>sendInitialEvents=true</c> watch.</summary>
    public bool InitialEventsEnd { get; init; }

    /// <summary>The object as a fresh JsonObject (null for bookmarks).</summary>
    public JsonObject? ToJsonObject() => Object?.ToJsonObject();
}
