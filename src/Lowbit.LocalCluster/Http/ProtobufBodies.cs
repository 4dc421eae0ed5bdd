using System.Text;
using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Http;

/// <summary>
/// kubectl's typed clients send some create bodies as Kubernetes protobuf (<c>k8s\0</c> + runtime.Unknown).
/// This decodes the kinds <c>kubectl create namespace|configmap|secret</c> send (metadata name, generateName,
/// namespace, labels, annotations, finalizers; configmap and secret data); anything else is 415.
/// </summary>
internal static class ProtobufBodies
{
    private static readonly byte[] Magic = "k8s\0"u8.ToArray();

    public static JsonObject Decode(byte[] body)
    {
        if (body.Length < 4 || !body.AsSpan(0, 4).SequenceEqual(Magic))
        {
            throw Unsupported("a protobuf body without the k8s envelope");
        }
        string? apiVersion = null, kind = null;
        byte[]? raw = null;
        foreach (var (field, _, bytes) in Fields(body.AsMemory(4)))
        {
            switch (field)
            {
                case 1:
                    foreach (var (f, _, b) in Fields(bytes))
                    {
                        if (f == 1)
                        {
                            apiVersion = Str(b);
                        }
                        else if (f == 2)
                        {
                            kind = Str(b);
                        }
                    }
                    break;
                case 2:
                    raw = bytes.ToArray();
                    break;
            }
        }
        if (kind == "DeleteOptions")
        {
            return DecodeDeleteOptions(raw ?? []);
        }
        var obj = new JsonObject { ["apiVersion"] = apiVersion, ["kind"] = kind };
        var metadata = new JsonObject();
        obj["metadata"] = metadata;
        foreach (var (field, _, bytes) in Fields(raw ?? []))
        {
            switch (kind, field)
            {
                case (_, 1):
                    DecodeMeta(bytes, metadata);
                    break;
                case ("Namespace", 2):
                    var finalizers = new JsonArray();
                    foreach (var (f, _, b) in Fields(bytes))
                    {
                        if (f == 1)
                        {
                            finalizers.Add(Str(b));
                        }
                    }
                    if (finalizers.Count > 0)
                    {
                        obj["spec"] = new JsonObject { ["finalizers"] = finalizers };
                    }
                    break;
                case ("Namespace", 3):
                    break;
                case ("ConfigMap", 2) or ("Secret", 4):
                    AddEntry(obj, field == 2 ? "data" : "stringData", bytes, base64: false);
                    break;
                case ("ConfigMap", 3) or ("Secret", 2):
                    AddEntry(obj, field == 2 ? "data" : "binaryData", bytes, base64: true);
                    break;
                case ("Secret", 3):
                    obj["type"] = Str(bytes);
                    break;
                case ("ConfigMap", 4) or ("Secret", 5):
                    obj["immutable"] = bytes.Length > 0 && bytes.Span[0] != 0;
                    break;
                default:
                    throw Unsupported($"protobuf {kind} bodies");
            }
        }
        if (kind is not ("Namespace" or "ConfigMap" or "Secret"))
        {
            throw Unsupported($"protobuf {kind} bodies");
        }
        return obj;
    }

    private static JsonObject DecodeDeleteOptions(ReadOnlyMemory<byte> raw)
    {
        var options = new JsonObject { ["kind"] = "DeleteOptions", ["apiVersion"] = "meta.k8s.io/v1" };
        foreach (var (field, _, b) in Fields(raw))
        {
            switch (field)
            {
                case 1:
                    var i = 0;
                    options["gracePeriodSeconds"] = (long)Varint(b.Span, ref i);
                    break;
                case 2:
                    var preconditions = new JsonObject();
                    foreach (var (f, _, v) in Fields(b))
                    {
                        preconditions[f == 1 ? "uid" : "resourceVersion"] = Str(v);
                    }
                    options["preconditions"] = preconditions;
                    break;
                case 3:
                    options["orphanDependents"] = b.Length > 0 && b.Span[0] != 0;
                    break;
                case 4:
                    options["propagationPolicy"] = Str(b);
                    break;
                case 5:
                    if (options["dryRun"] is not JsonArray dryRun)
                    {
                        dryRun = [];
                        options["dryRun"] = dryRun;
                    }
                    dryRun.Add(Str(b));
                    break;
            }
        }
        return options;
    }

    private static void DecodeMeta(ReadOnlyMemory<byte> bytes, JsonObject metadata)
    {
        foreach (var (field, _, b) in Fields(bytes))
        {
            if (b.Length == 0)
            {
                continue;
            }
            switch (field)
            {
                case 1:
                    metadata["name"] = Str(b);
                    break;
                case 2:
                    metadata["generateName"] = Str(b);
                    break;
                case 3:
                    metadata["namespace"] = Str(b);
                    break;
                case 11 or 12:
                    AddEntry(metadata, field == 11 ? "labels" : "annotations", b, base64: false);
                    break;
                case 14:
                    if (metadata["finalizers"] is not JsonArray list)
                    {
                        list = [];
                        metadata["finalizers"] = list;
                    }
                    list.Add(Str(b));
                    break;
            }
        }
    }

    private static void AddEntry(JsonObject parent, string name, ReadOnlyMemory<byte> entry, bool base64)
    {
        if (parent[name] is not JsonObject map)
        {
            map = [];
            parent[name] = map;
        }
        string key = "";
        string value = "";
        foreach (var (field, _, b) in Fields(entry))
        {
            if (field == 1)
            {
                key = Str(b);
            }
            else if (field == 2)
            {
                value = base64 ? Convert.ToBase64String(b.Span) : Str(b);
            }
        }
        map[key] = value;
    }

    private static string Str(ReadOnlyMemory<byte> b) => Encoding.UTF8.GetString(b.Span);

    private static List<(int Field, int WireType, ReadOnlyMemory<byte> Bytes)> Fields(ReadOnlyMemory<byte> data)
    {
        var result = new List<(int, int, ReadOnlyMemory<byte>)>();
        var span = data.Span;
        var i = 0;
        while (i < span.Length)
        {
            var key = Varint(span, ref i);
            var field = (int)(key >> 3);
            var wire = (int)(key & 7);
            switch (wire)
            {
                case 0:
                    var start = i;
                    Varint(span, ref i);
                    result.Add((field, wire, data[start..i]));
                    break;
                case 1:
                    result.Add((field, wire, data.Slice(i, 8)));
                    i += 8;
                    break;
                case 2:
                    var length = (int)Varint(span, ref i);
                    result.Add((field, wire, data.Slice(i, length)));
                    i += length;
                    break;
                case 5:
                    result.Add((field, wire, data.Slice(i, 4)));
                    i += 4;
                    break;
                default:
                    throw Unsupported("a malformed protobuf body");
            }
        }
        return result;
    }

    private static ulong Varint(ReadOnlySpan<byte> span, ref int i)
    {
        ulong value = 0;
        var shift = 0;
        while (i < span.Length)
        {
            var b = span[i++];
            value |= (ulong)(b & 0x7f) << shift;
            if ((b & 0x80) == 0)
            {
                return value;
            }
            shift += 7;
        }
        throw Unsupported("a truncated protobuf body");
    }

    private static ApiException Unsupported(string what) =>
        new(415, "UnsupportedMediaType", $"the embedded API server does not accept {what}; send application/json");
}
