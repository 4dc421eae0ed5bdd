using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Http;

/// <summary>
/// <c>meta.k8s.io/v1 Table</c> responses (what <c>kubectl get</c> prints): CRD additionalPrinterColumns
/// evaluated with simple JSONPath, and the usual columns of the built-in kinds.
/// </summary>
internal sealed class TableBuilder
{
    private readonly TimeProvider _time;

    public TableBuilder(TimeProvider time) => _time = time;

    private sealed record Column(string Name, string Type, string Format, string Description, int Priority, Func<JsonObject, JsonNode?> Cell);

    public JsonObject Build(ResourceType type, IEnumerable<JsonObject> objects, string? resourceVersion, string? continueToken, string includeObject)
    {
        var columns = ColumnsOf(type);
        var rows = new JsonArray();
        foreach (var obj in objects)
        {
            var row = new JsonObject { ["cells"] = new JsonArray(columns.Select(c => Safe(c, obj)).ToArray()) };
            switch (includeObject)
            {
                case "Object":
                    row["object"] = obj;
                    break;
                case "None":
                    break;
                default:
                    row["object"] = new JsonObject
                    {
                        ["kind"] = "PartialObjectMetadata",
                        ["apiVersion"] = "meta.k8s.io/v1",
                        ["metadata"] = obj["metadata"]?.DeepClone(),
                    };
                    break;
            }
            rows.Add(row);
        }
        var meta = new JsonObject();
        if (resourceVersion is not null)
        {
            meta["resourceVersion"] = resourceVersion;
        }
        if (continueToken is not null)
        {
            meta["continue"] = continueToken;
        }
        return new JsonObject
        {
            ["kind"] = "Table",
            ["apiVersion"] = "meta.k8s.io/v1",
            ["metadata"] = meta,
            ["columnDefinitions"] = new JsonArray(columns.Select(c => (JsonNode)new JsonObject
            {
                ["name"] = c.Name,
                ["type"] = c.Type,
                ["format"] = c.Format,
                ["description"] = c.Description,
                ["priority"] = c.Priority,
            }).ToArray()),
            ["rows"] = rows,
        };
    }

    private static JsonNode? Safe(Column column, JsonObject obj)
    {
        try
        {
            return column.Cell(obj)?.DeepClone();
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or JsonException)
        {
            return "<error>";
        }
    }

    private List<Column> ColumnsOf(ResourceType type)
    {
        var name = new Column("Name", "string", "name", "Name must be unique within a namespace.", 0, o => (string?)o["metadata"]?["name"]);
        var age = new Column("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0,
            o => Age((string?)o["metadata"]?["creationTimestamp"]));
        if (type.IsCustom)
        {
            var custom = type.PrinterColumns.Select(c => new Column(c.Name, c.Type, c.Format ?? "", c.Description ?? "", c.Priority ?? 0,
                o => CustomCell(c.Type, JsonPathQuery.Evaluate(o, c.JsonPath)))).ToList();
            return type.PrinterColumns.Count == 0 ? [name, age] : [name, .. custom];
        }
        Column Text(string title, Func<JsonObject, string?> f, int priority = 0) => new(title, "string", "", title, priority, o => f(o));
        return (type.Group, type.Kind) switch
        {
            ("", "Pod") =>
            [
                name,
                Text("Ready", o => $"{Count(o["status"]?["containerStatuses"], s => (bool?)s?["ready"] == true)}/{Count(o["spec"]?["containers"], _ => true)}"),
                Text("Status", PodStatus),
                Text("Restarts", o => Sum(o["status"]?["containerStatuses"], "restartCount").ToString(CultureInfo.InvariantCulture)),
                age,
                Text("IP", o => (string?)o["status"]?["podIP"] ?? "<none>", 1),
                Text("Node", o => (string?)o["spec"]?["nodeName"] ?? "<none>", 1),
            ],
            ("apps", "Deployment") =>
            [
                name,
                Text("Ready", o => $"{Int(o["status"]?["readyReplicas"])}/{Int(o["spec"]?["replicas"])}"),
                Text("Up-to-date", o => Int(o["status"]?["updatedReplicas"]).ToString(CultureInfo.InvariantCulture)),
                Text("Available", o => Int(o["status"]?["availableReplicas"]).ToString(CultureInfo.InvariantCulture)),
                age,
            ],
            ("apps", "ReplicaSet" or "StatefulSet") =>
            [
                name,
                Text("Desired", o => Int(o["spec"]?["replicas"]).ToString(CultureInfo.InvariantCulture)),
                Text("Current", o => Int(o["status"]?["replicas"]).ToString(CultureInfo.InvariantCulture)),
                Text("Ready", o => Int(o["status"]?["readyReplicas"]).ToString(CultureInfo.InvariantCulture)),
                age,
            ],
            ("batch", "Job") =>
            [
                name,
                Text("Status", JobStatus),
                Text("Completions", o => $"{Int(o["status"]?["succeeded"])}/{Int(o["spec"]?["completions"], 1)}"),
                Text("Duration", o => JobDuration(o)),
                age,
            ],
            ("", "Node") =>
            [
                name,
                Text("Status", o => Condition(o, "Ready") == "True" ? "Ready" : "NotReady"),
                Text("Roles", o => NodeRoles(o)),
                age,
                Text("Version", o => (string?)o["status"]?["nodeInfo"]?["kubeletVersion"] ?? ""),
            ],
            ("", "Namespace") => [name, Text("Status", o => (string?)o["status"]?["phase"] ?? "Active"), age],
            ("", "Service") =>
            [
                name,
                Text("Type", o => (string?)o["spec"]?["type"] ?? "ClusterIP"),
                Text("Cluster-IP", o => (string?)o["spec"]?["clusterIP"] ?? "<none>"),
                Text("External-IP", _ => "<none>"),
                Text("Port(s)", o => string.Join(',', (o["spec"]?["ports"] as JsonArray ?? []).Select(p => $"{p?["port"]}/{(string?)p?["protocol"] ?? "TCP"}"))),
                age,
            ],
            ("", "ConfigMap") => [name, Text("Data", o => ((o["data"] as JsonObject)?.Count ?? 0 + (o["binaryData"] as JsonObject)?.Count ?? 0).ToString(CultureInfo.InvariantCulture)), age],
            ("", "Secret") => [name, Text("Type", o => (string?)o["type"] ?? "Opaque"), Text("Data", o => ((o["data"] as JsonObject)?.Count ?? 0).ToString(CultureInfo.InvariantCulture)), age],
            ("", "PersistentVolumeClaim") => [name, Text("Status", o => (string?)o["status"]?["phase"] ?? "Pending"), age],
            ("" or "events.k8s.io", "Event") =>
            [
                Text("Last Seen", o => Age((string?)o["lastTimestamp"] ?? (string?)o["eventTime"] ?? (string?)o["deprecatedLastTimestamp"] ?? (string?)o["metadata"]?["creationTimestamp"])),
                Text("Type", o => (string?)o["type"] ?? ""),
                Text("Reason", o => (string?)o["reason"] ?? ""),
                Text("Object", o => (o["involvedObject"] ?? o["regarding"]) is { } r ? $"{((string?)r["kind"])?.ToLowerInvariant()}/{(string?)r["name"]}" : ""),
                Text("Message", o => (string?)o["message"] ?? (string?)o["note"] ?? ""),
                name with { Priority = 1 },
            ],
            ("coordination.k8s.io", "Lease") => [name, Text("Holder", o => (string?)o["spec"]?["holderIdentity"] ?? ""), age],
            ("apiextensions.k8s.io", "CustomResourceDefinition") => [name, Text("Created At", o => (string?)o["metadata"]?["creationTimestamp"])],
            _ => [name, age],
        };
    }

    private JsonNode? CustomCell(string type, JsonNode? value)
    {
        if (value is null)
        {
            return null;
        }
        if (type == "date" && value.GetValueKind() == JsonValueKind.String)
        {
            return Age((string?)value);
        }
        return value;
    }

    private static int Count(JsonNode? list, Func<JsonNode?, bool> predicate) => (list as JsonArray)?.Count(predicate) ?? 0;

    private static long Sum(JsonNode? list, string field) => (list as JsonArray)?.Sum(i => Int(i?[field])) ?? 0;

    private static long Int(JsonNode? node, long fallback = 0) =>
        node is JsonValue v && v.GetValueKind() == JsonValueKind.Number ? v.GetValue<long>() : fallback;

    private static string? Condition(JsonObject o, string type) =>
        (o["status"]?["conditions"] as JsonArray)?.FirstOrDefault(c => (string?)c?["type"] == type)?["status"]?.GetValue<string>();

    private static string PodStatus(JsonObject o)
    {
        if (o["metadata"]?["deletionTimestamp"] is not null)
        {
            return "Terminating";
        }
        foreach (var status in (o["status"]?["containerStatuses"] as JsonArray ?? []))
        {
            if ((string?)status?["state"]?["waiting"]?["reason"] is { Length: > 0 } waiting)
            {
                return waiting;
            }
            if ((string?)status?["state"]?["terminated"]?["reason"] is { Length: > 0 } terminated && (string?)o["status"]?["phase"] is not "Succeeded")
            {
                return terminated;
            }
        }
        var phase = (string?)o["status"]?["phase"] ?? "Pending";
        return phase == "Succeeded" ? "Completed" : phase == "Failed" ? "Error" : phase;
    }

    private static string JobStatus(JsonObject o)
    {
        if (Condition(o, "Complete") == "True")
        {
            return "Complete";
        }
        if (Condition(o, "Failed") == "True")
        {
            return "Failed";
        }
        return (bool?)o["spec"]?["suspend"] == true ? "Suspended" : "Running";
    }

    private string JobDuration(JsonObject o)
    {
        if (!DateTimeOffset.TryParse((string?)o["status"]?["startTime"], CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var start))
        {
            return "";
        }
        var end = DateTimeOffset.TryParse((string?)o["status"]?["completionTime"], CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var done)
            ? done : _time.GetUtcNow();
        return HumanDuration(end - start);
    }

    private static string NodeRoles(JsonObject o)
    {
        var roles = (o["metadata"]?["labels"] as JsonObject ?? [])
            .Where(kv => kv.Key.StartsWith("node-role.kubernetes.io/", StringComparison.Ordinal))
            .Select(kv => kv.Key["node-role.kubernetes.io/".Length..]).ToList();
        return roles.Count == 0 ? "<none>" : string.Join(',', roles);
    }

    private string Age(string? timestamp) =>
        DateTimeOffset.TryParse(timestamp, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var created)
            ? HumanDuration(_time.GetUtcNow() - created)
            : "<unknown>";

    /// <summary>Kubernetes' <c>duration.HumanDuration</c>: 45s, 3m20s, 12m, 5h3m, 30h, 3d4h, 200d, 3y.</summary>
    public static string HumanDuration(TimeSpan d)
    {
        if (d < TimeSpan.Zero)
        {
            d = TimeSpan.Zero;
        }
        var seconds = (long)d.TotalSeconds;
        if (seconds < 120)
        {
            return $"{seconds}s";
        }
        var minutes = (long)d.TotalMinutes;
        if (minutes < 10)
        {
            return seconds % 60 == 0 ? $"{minutes}m" : $"{minutes}m{seconds % 60}s";
        }
        if (minutes < 180)
        {
            return $"{minutes}m";
        }
        var hours = (long)d.TotalHours;
        if (hours < 8)
        {
            return minutes % 60 == 0 ? $"{hours}h" : $"{hours}h{minutes % 60}m";
        }
        if (hours < 48)
        {
            return $"{hours}h";
        }
        if (hours < 192)
        {
            return hours % 24 == 0 ? $"{hours / 24}d" : $"{hours / 24}d{hours % 24}h";
        }
        return hours < 24 * 365 * 2 ? $"{hours / 24}d" : $"{hours / 24 / 365}y";
    }
}

/// <summary>The JSONPath subset printer columns use: <c>.a.b</c>, <c>.a[0]</c>, <c>.a[*].b</c>, <c>.a[?(@.type=="Ready")].status</c>.</summary>
internal static class JsonPathQuery
{
    public static JsonNode? Evaluate(JsonNode root, string path)
    {
        var text = path.Trim();
        if (text.StartsWith('{') && text.EndsWith('}'))
        {
            text = text[1..^1];
        }
        if (text.StartsWith('$'))
        {
            text = text[1..];
        }
        IEnumerable<JsonNode?> current = [root];
        var i = 0;
        while (i < text.Length)
        {
            if (text[i] == '.')
            {
                i++;
                var start = i;
                while (i < text.Length && text[i] != '.' && text[i] != '[')
                {
                    i++;
                }
                var field = text[start..i];
                current = current.Select(n => n is JsonObject o ? o[field] : null).ToList();
            }
            else if (text[i] == '[')
            {
                var end = text.IndexOf(']', i);
                if (end < 0)
                {
                    return null;
                }
                var inner = text[(i + 1)..end];
                i = end + 1;
                if (inner == "*")
                {
                    current = current.SelectMany(n => n as JsonArray ?? []).ToList();
                }
                else if (int.TryParse(inner, out var index))
                {
                    current = current.Select(n => n is JsonArray a && index < a.Count && index >= 0 ? a[index] : null).ToList();
                }
                else
                {
                    var filter = System.Text.RegularExpressions.Regex.Match(inner, @"^\?\(@\.([\w.-]+)\s*==\s*[""']([^""']*)[""']\)$");
                    if (!filter.Success)
                    {
                        return null;
                    }
                    var key = filter.Groups[1].Value;
                    var value = filter.Groups[2].Value;
                    current = current.SelectMany(n => n as JsonArray ?? []).Where(item => (item as JsonObject)?[key]?.ToString() == value).ToList();
                }
            }
            else
            {
                i++;
            }
        }
        return current.FirstOrDefault(n => n is not null);
    }
}
