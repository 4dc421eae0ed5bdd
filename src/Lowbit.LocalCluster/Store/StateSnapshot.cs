using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Lowbit.LocalCluster.Store;

/// <summary>
/// The store on disk: one JSON line with the resourceVersion, then one line per object
/// (<c>{"bucket": "group/plural", "object": {...}}</c>). Written to a temporary file and renamed, so a crash
/// leaves the previous snapshot intact. Watch history is not saved: after a restore, resuming a watch from an
/// older resourceVersion gets 410 Gone (and a relist), as after an etcd compaction.
/// </summary>
public static class StateSnapshot
{
    public const string FileName = "state.jsonl";

    public static void Save(ClusterApi api, string directory)
    {
        Directory.CreateDirectory(directory);
        var objects = api.SnapshotAll(out var rv);
        var path = Path.Combine(directory, FileName);
        // Mode 0600, flushed, renamed, and the directory synced: the snapshot holds every object (Secrets too).
        Security.PrivateFiles.Write(path, stream =>
        {
            stream.Write(Encoding.UTF8.GetBytes(new JsonObject { ["resourceVersion"] = rv }.ToJsonString()));
            stream.WriteByte((byte)'\n');
            foreach (var (bucket, obj) in objects.OrderBy(o => o.Bucket == BuiltinResources.CustomResourceDefinitions.BucketKey ? 0 : 1))
            {
                stream.Write(Encoding.UTF8.GetBytes($"{{\"bucket\":{JsonSerializer.Serialize(bucket)},\"object\":"));
                stream.Write(obj.Json);
                stream.Write("}\n"u8);
            }
        });
    }

    /// <summary>Reads a snapshot; null when the directory has none.</summary>
    public static (long ResourceVersion, List<(string Bucket, JsonObject Object)> Objects)? Load(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!File.Exists(path))
        {
            return null;
        }
        using var reader = new StreamReader(path, Encoding.UTF8);
        var header = JsonNode.Parse(reader.ReadLine() ?? "{}")!.AsObject();
        var objects = new List<(string, JsonObject)>();
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0)
            {
                continue;
            }
            var entry = JsonNode.Parse(line)!.AsObject();
            objects.Add(((string)entry["bucket"]!, entry["object"]!.AsObject()));
        }
        return ((long?)header["resourceVersion"] ?? 0, objects);
    }
}
