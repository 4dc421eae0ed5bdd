using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using k8s;
using k8s.Models;
using Lowbit.Operator.Runtime;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Runtime.Tests.Support;

/// <summary>What the next watch connection does instead of (or before) streaming events.</summary>
public enum WatchScript
{
    /// <summary>Accept, send headers, then nothing at all (a half-open connection).</summary>
    Stall,

    /// <summary>Send an ERROR event with a 410 Status, then end the stream.</summary>
    Gone,

    /// <summary>Send one line that is not JSON, then stream normally.</summary>
    Malformed,
}

/// <summary>One request as the server saw it.</summary>
public sealed record JournalEntry(DateTimeOffset At, string Method, string Path, string Query)
{
    public bool IsWatch => Query.Contains("watch=true", StringComparison.Ordinal);

    public string? Parameter(string name) =>
        Microsoft.AspNetCore.WebUtilities.QueryHelpers.ParseQuery(Query).TryGetValue(name, out var v) ? v.ToString() : null;
}

/// <summary>
/// The T1 protocol server (reliability.md §0): Kestrel on 127.0.0.1 speaking enough of the Kubernetes REST API for
/// the runtime — list, chunked watch with bookmarks, create/get/replace with resourceVersion conflicts (Leases) —
/// plus scripted faults (429 with Retry-After, 5xx, ERROR 410, stalls, malformed lines), silent deletes and
/// history compaction, and a request journal.
/// </summary>
public sealed class FakeApiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Dictionary<(string Ns, string Name), JsonObject>> _store = [];
    private readonly List<StoredEvent> _log = [];
    private readonly List<Watch> _watches = [];
    private readonly ConcurrentQueue<WatchScript> _watchScripts = new();
    private readonly List<Fault> _faults = [];
    private long _resourceVersion;
    private long _compactedTo;
    private TaskCompletionSource _watchGate = CompletedGate();
    private TaskCompletionSource _listGate = CompletedGate();

    private FakeApiServer(WebApplication app) => _app = app;

    public Uri Url { get; private set; } = null!;

    public ConcurrentQueue<JournalEntry> Journal { get; } = new();

    public KubernetesClientConfiguration ClientConfiguration => new() { Host = Url.ToString() };

    public static async Task<FakeApiServer> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var server = new FakeApiServer(app);
        app.Run(server.HandleAsync);
        await app.StartAsync();
        server.Url = new Uri(app.Urls.First());
        return server;
    }

    public async ValueTask DisposeAsync()
    {
        CloseWatches();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    public string CurrentResourceVersion
    {
        get
        {
            lock (_lock)
            {
                return _resourceVersion.ToString(CultureInfo.InvariantCulture);
            }
        }
    }

    public int OpenWatches
    {
        get
        {
            lock (_lock)
            {
                return _watches.Count;
            }
        }
    }

    /// <summary>Creates or replaces an object and tells the watchers.</summary>
    public void Upsert<T>(T obj)
        where T : IKubernetesObject<V1ObjectMeta>
    {
        var type = ResourceType.For<T>();
        obj.ApiVersion = type.ApiVersion;
        obj.Kind = type.Kind;
        var node = JsonNode.Parse(KubernetesJson.Serialize(obj))!.AsObject();
        lock (_lock)
        {
            var key = (obj.Metadata.NamespaceProperty ?? string.Empty, obj.Metadata.Name);
            var exists = Collection(Prefix(type), type.Plural).ContainsKey(key);
            StoreLocked(Prefix(type), type.Plural, key, node, exists ? "MODIFIED" : "ADDED", notify: true);
        }
    }

    /// <summary>Deletes an object; with <paramref name="notify"/> false no watcher hears of it (a delete missed while disconnected).</summary>
    public void Delete<T>(string ns, string name, bool notify = true)
        where T : IKubernetesObject<V1ObjectMeta>
    {
        var type = ResourceType.For<T>();
        lock (_lock)
        {
            var collection = Collection(Prefix(type), type.Plural);
            if (!collection.Remove((ns, name), out var node))
            {
                throw new InvalidOperationException($"{type.Kind} {ns}/{name} does not exist");
            }

            _resourceVersion++;
            node["metadata"]!["resourceVersion"] = _resourceVersion.ToString(CultureInfo.InvariantCulture);
            if (notify)
            {
                AppendLocked(Prefix(type) + "/" + type.Plural, ns, "DELETED", node);
            }
        }
    }

    /// <summary>Forgets the event history: a watch from any earlier resourceVersion now gets 410 Gone.</summary>
    public void Compact()
    {
        lock (_lock)
        {
            _compactedTo = _resourceVersion;
            _log.Clear();
        }
    }

    /// <summary>Ends every open watch stream (as the server does at timeoutSeconds).</summary>
    public void CloseWatches()
    {
        lock (_lock)
        {
            foreach (var watch in _watches)
            {
                watch.Lines.Writer.TryComplete();
            }
        }
    }

    /// <summary>Advances the resourceVersion to <paramref name="resourceVersion"/> and sends a BOOKMARK to every open watch.</summary>
    public void Bookmark(long resourceVersion)
    {
        lock (_lock)
        {
            _resourceVersion = Math.Max(_resourceVersion, resourceVersion);
            foreach (var watch in _watches)
            {
                var bookmark = new JsonObject
                {
                    ["type"] = "BOOKMARK",
                    ["object"] = new JsonObject
                    {
                        ["kind"] = watch.Kind,
                        ["apiVersion"] = watch.ApiVersion,
                        ["metadata"] = new JsonObject { ["resourceVersion"] = _resourceVersion.ToString(CultureInfo.InvariantCulture) },
                    },
                };
                watch.Lines.Writer.TryWrite(bookmark.ToJsonString());
            }
        }
    }

    /// <summary>Holds new watch connections (the client is "disconnected") until <see cref="ResumeWatches"/>.</summary>
    public void PauseWatches()
    {
        lock (_lock)
        {
            _watchGate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
    }

    public void ResumeWatches()
    {
        lock (_lock)
        {
            _watchGate.TrySetResult();
        }
    }

    /// <summary>Holds list requests (a slow initial LIST) until <see cref="ResumeLists"/>.</summary>
    public void PauseLists()
    {
        lock (_lock)
        {
            _listGate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
    }

    public void ResumeLists()
    {
        lock (_lock)
        {
            _listGate.TrySetResult();
        }
    }

    /// <summary>Watch requests that arrived and are held by <see cref="PauseWatches"/>.</summary>
    public int HeldWatches => Volatile.Read(ref _heldWatches);

    private int _heldWatches;

    private static TaskCompletionSource CompletedGate()
    {
        var gate = new TaskCompletionSource();
        gate.SetResult();
        return gate;
    }

    /// <summary>The next watch connection follows <paramref name="script"/>.</summary>
    public void ScriptNextWatch(WatchScript script) => _watchScripts.Enqueue(script);

    /// <summary>The next <paramref name="times"/> requests matching <paramref name="match"/> get <paramref name="status"/> (with Retry-After seconds if given).</summary>
    public void Fail(Func<JournalEntry, bool> match, int status, int times = 1, int? retryAfterSeconds = null)
    {
        lock (_lock)
        {
            _faults.Add(new Fault(match, status, retryAfterSeconds) { Remaining = times });
        }
    }

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var entry = new JournalEntry(DateTimeOffset.UtcNow, request.Method, request.Path.Value!.TrimStart('/'), request.QueryString.Value?.TrimStart('?') ?? string.Empty);
        Journal.Enqueue(entry);

        Fault? fault;
        lock (_lock)
        {
            fault = _faults.FirstOrDefault(f => f.Remaining > 0 && f.Match(entry));
            if (fault is not null)
            {
                fault.Remaining--;
            }
        }

        if (fault is not null)
        {
            if (fault.RetryAfterSeconds is { } seconds)
            {
                context.Response.Headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
            }

            await WriteStatusAsync(context, fault.Status, "Injected", "injected fault");
            return;
        }

        if (!TryRoute(entry.Path, out var route))
        {
            await WriteStatusAsync(context, 404, "NotFound", $"no route for {entry.Path}");
            return;
        }

        switch (request.Method)
        {
            case "GET" when route.Name is null && entry.IsWatch:
                await WatchAsync(context, route, entry);
                break;
            case "GET" when route.Name is null:
                await ListAsync(context, route);
                break;
            case "GET":
                await GetAsync(context, route);
                break;
            case "POST" when route.Name is null:
                await CreateAsync(context, route);
                break;
            case "PUT" when route.Name is not null:
                await ReplaceAsync(context, route);
                break;
            default:
                await WriteStatusAsync(context, 405, "MethodNotAllowed", $"{request.Method} is not supported here");
                break;
        }
    }

    private async Task ListAsync(HttpContext context, Route route)
    {
        Task gate;
        lock (_lock)
        {
            gate = _listGate.Task;
        }

        await gate.WaitAsync(context.RequestAborted);
        JsonArray items;
        string rv;
        lock (_lock)
        {
            items = new JsonArray(Collection(route.Prefix, route.Plural)
                .Where(kv => route.Namespace is null || kv.Key.Ns == route.Namespace)
                .Select(kv => (JsonNode)kv.Value.DeepClone())
                .ToArray());
            rv = _resourceVersion.ToString(CultureInfo.InvariantCulture);
        }

        var list = new JsonObject
        {
            ["apiVersion"] = "v1",
            ["kind"] = "List",
            ["metadata"] = new JsonObject { ["resourceVersion"] = rv },
            ["items"] = items,
        };
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(list.ToJsonString());
    }

    private async Task GetAsync(HttpContext context, Route route)
    {
        JsonObject? node;
        lock (_lock)
        {
            node = Collection(route.Prefix, route.Plural).GetValueOrDefault((route.Namespace ?? string.Empty, route.Name!))?.DeepClone().AsObject();
        }

        if (node is null)
        {
            await WriteStatusAsync(context, 404, "NotFound", $"{route.Plural} \"{route.Name}\" not found");
            return;
        }

        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(node.ToJsonString());
    }

    private async Task CreateAsync(HttpContext context, Route route)
    {
        var node = (await JsonNode.ParseAsync(context.Request.Body))!.AsObject();
        var name = node["metadata"]?["name"]?.GetValue<string>() ?? throw new InvalidOperationException("create without a name");
        JsonObject stored;
        lock (_lock)
        {
            var key = (route.Namespace ?? string.Empty, name);
            if (Collection(route.Prefix, route.Plural).ContainsKey(key))
            {
                stored = null!;
            }
            else
            {
                node["metadata"]!["namespace"] = route.Namespace;
                stored = StoreLocked(route.Prefix, route.Plural, key, node, "ADDED", notify: true);
            }
        }

        if (stored is null)
        {
            await WriteStatusAsync(context, 409, "AlreadyExists", $"{route.Plural} \"{name}\" already exists");
            return;
        }

        context.Response.StatusCode = 201;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(stored.ToJsonString());
    }

    private async Task ReplaceAsync(HttpContext context, Route route)
    {
        var node = (await JsonNode.ParseAsync(context.Request.Body))!.AsObject();
        JsonObject? stored = null;
        int status;
        lock (_lock)
        {
            var key = (route.Namespace ?? string.Empty, route.Name!);
            var collection = Collection(route.Prefix, route.Plural);
            if (!collection.TryGetValue(key, out var current))
            {
                status = 404;
            }
            else if (node["metadata"]?["resourceVersion"]?.GetValue<string>() is { } rv && rv != current["metadata"]!["resourceVersion"]!.GetValue<string>())
            {
                status = 409;
            }
            else
            {
                node["metadata"]!["namespace"] = route.Namespace;
                node["metadata"]!["uid"] = current["metadata"]!["uid"]!.DeepClone();
                stored = StoreLocked(route.Prefix, route.Plural, key, node, "MODIFIED", notify: true);
                status = 200;
            }
        }

        if (stored is null)
        {
            await WriteStatusAsync(context, status, status == 409 ? "Conflict" : "NotFound", status == 409 ? "the object has been modified; please apply your changes to the latest version and try again" : "not found");
            return;
        }

        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(stored.ToJsonString());
    }

    private async Task WatchAsync(HttpContext context, Route route, JournalEntry entry)
    {
        var response = context.Response;
        response.ContentType = "application/json";
        var aborted = context.RequestAborted;
        Task gate;
        lock (_lock)
        {
            gate = _watchGate.Task;
        }

        if (!gate.IsCompleted)
        {
            Interlocked.Increment(ref _heldWatches);
            try
            {
                await gate.WaitAsync(aborted);
            }
            finally
            {
                Interlocked.Decrement(ref _heldWatches);
            }
        }

        await response.StartAsync(aborted);

        var hasScript = _watchScripts.TryDequeue(out var script);
        var since = long.TryParse(entry.Parameter("resourceVersion"), CultureInfo.InvariantCulture, out var parsed) ? parsed : (long?)null;
        var watch = new Watch(route.Prefix + "/" + route.Plural, route.Namespace, route.Kind, route.ApiVersion);
        List<string> replay;
        bool expired;
        lock (_lock)
        {
            expired = since is { } s && s < _compactedTo;
            replay = since is { } from
                ? _log.Where(e => e.Rv > from && watch.Sees(e.Collection, e.Ns)).Select(e => e.Line).ToList()
                : Collection(route.Prefix, route.Plural).Where(kv => route.Namespace is null || kv.Key.Ns == route.Namespace)
                    .Select(kv => EventLine("ADDED", kv.Value)).ToList();
            if (!expired && !(hasScript && script is WatchScript.Stall or WatchScript.Gone))
            {
                _watches.Add(watch);
            }
        }

        try
        {
            if (hasScript && script == WatchScript.Stall)
            {
                await Task.Delay(Timeout.Infinite, aborted).ContinueWith(_ => { }, TaskScheduler.Default);
                return;
            }

            if (expired || (hasScript && script == WatchScript.Gone))
            {
                var gone = new JsonObject
                {
                    ["type"] = "ERROR",
                    ["object"] = new JsonObject
                    {
                        ["kind"] = "Status",
                        ["apiVersion"] = "v1",
                        ["status"] = "Failure",
                        ["message"] = "too old resource version",
                        ["reason"] = "Expired",
                        ["code"] = 410,
                    },
                };
                await WriteLineAsync(response, gone.ToJsonString(), aborted);
                return;
            }

            if (hasScript && script == WatchScript.Malformed)
            {
                await WriteLineAsync(response, "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":", aborted);
            }

            foreach (var line in replay)
            {
                await WriteLineAsync(response, line, aborted);
            }

            var timeoutSeconds = int.TryParse(entry.Parameter("timeoutSeconds"), CultureInfo.InvariantCulture, out var t) ? t : 1800;
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(aborted);
            timeout.CancelAfter(TimeSpan.FromSeconds(timeoutSeconds));
            await foreach (var line in watch.Lines.Reader.ReadAllAsync(timeout.Token))
            {
                await WriteLineAsync(response, line, timeout.Token);
            }
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            lock (_lock)
            {
                _watches.Remove(watch);
            }
        }
    }

    private JsonObject StoreLocked(string prefix, string plural, (string Ns, string Name) key, JsonObject node, string type, bool notify)
    {
        var collection = Collection(prefix, plural);
        var metadata = node["metadata"]!.AsObject();
        var previous = collection.GetValueOrDefault(key);
        _resourceVersion++;
        metadata["resourceVersion"] = _resourceVersion.ToString(CultureInfo.InvariantCulture);
        metadata["uid"] ??= previous?["metadata"]?["uid"]?.DeepClone() ?? Guid.NewGuid().ToString();
        var generation = previous?["metadata"]?["generation"]?.GetValue<long>() ?? 0;
        var specChanged = previous is null || !JsonNode.DeepEquals(WithoutMetadataAndStatus(previous), WithoutMetadataAndStatus(node));
        metadata["generation"] = specChanged ? generation + 1 : generation;
        collection[key] = node;
        if (notify)
        {
            AppendLocked(prefix + "/" + plural, key.Ns, type, node);
        }

        return node.DeepClone().AsObject();
    }

    private void AppendLocked(string collection, string ns, string type, JsonObject node)
    {
        var line = EventLine(type, node);
        _log.Add(new StoredEvent(_resourceVersion, collection, ns, line));
        foreach (var watch in _watches.Where(w => w.Sees(collection, ns)))
        {
            watch.Lines.Writer.TryWrite(line);
        }
    }

    /// <summary>What metadata.generation tracks: everything but metadata and status.</summary>
    private static JsonObject WithoutMetadataAndStatus(JsonObject node)
    {
        var copy = node.DeepClone().AsObject();
        copy.Remove("metadata");
        copy.Remove("status");
        return copy;
    }

    public void ClearFaults()
    {
        lock (_lock)
        {
            _faults.Clear();
        }
    }

    private static string EventLine(string type, JsonObject node) =>
        new JsonObject { ["type"] = type, ["object"] = node.DeepClone() }.ToJsonString();

    private static async Task WriteLineAsync(HttpResponse response, string line, CancellationToken cancellationToken)
    {
        await response.WriteAsync(line + "\n", Encoding.UTF8, cancellationToken);
        await response.Body.FlushAsync(cancellationToken);
    }

    private static async Task WriteStatusAsync(HttpContext context, int code, string reason, string message)
    {
        context.Response.StatusCode = code;
        context.Response.ContentType = "application/json";
        var status = new JsonObject
        {
            ["kind"] = "Status",
            ["apiVersion"] = "v1",
            ["status"] = "Failure",
            ["message"] = message,
            ["reason"] = reason,
            ["code"] = code,
        };
        await context.Response.WriteAsync(status.ToJsonString());
    }

    private Dictionary<(string Ns, string Name), JsonObject> Collection(string prefix, string plural)
    {
        var key = prefix + "/" + plural;
        if (!_store.TryGetValue(key, out var collection))
        {
            collection = [];
            _store[key] = collection;
        }

        return collection;
    }

    private static string Prefix(ResourceType type) => type.Group.Length == 0 ? $"api/{type.Version}" : $"apis/{type.Group}/{type.Version}";

    private static bool TryRoute(string path, out Route route)
    {
        route = default;
        var segments = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        int rest;
        string prefix;
        string apiVersion;
        if (segments.Length >= 3 && segments[0] == "api")
        {
            prefix = $"api/{segments[1]}";
            apiVersion = segments[1];
            rest = 2;
        }
        else if (segments.Length >= 4 && segments[0] == "apis")
        {
            prefix = $"apis/{segments[1]}/{segments[2]}";
            apiVersion = $"{segments[1]}/{segments[2]}";
            rest = 3;
        }
        else
        {
            return false;
        }

        var tail = segments[rest..];
        string? ns = null;
        if (tail.Length >= 3 && tail[0] == "namespaces")
        {
            ns = tail[1];
            tail = tail[2..];
        }

        if (tail.Length is < 1 or > 3)
        {
            return false;
        }

        var plural = tail[0];
        var kind = KindOf(plural);
        route = new Route(prefix, apiVersion, plural, kind, ns, tail.Length > 1 ? tail[1] : null, tail.Length > 2 && tail[2] == "status");
        return true;
    }

    private static string KindOf(string plural) => plural switch
    {
        "configmaps" => "ConfigMap",
        "leases" => "Lease",
        "pods" => "Pod",
        "jobs" => "Job",
        "services" => "Service",
        "deployments" => "Deployment",
        _ => plural,
    };

    private readonly record struct Route(string Prefix, string ApiVersion, string Plural, string Kind, string? Namespace, string? Name, bool Status);

    private sealed record StoredEvent(long Rv, string Collection, string Ns, string Line);

    private sealed class Fault(Func<JournalEntry, bool> match, int status, int? retryAfterSeconds)
    {
        public Func<JournalEntry, bool> Match { get; } = match;

        public int Status { get; } = status;

        public int? RetryAfterSeconds { get; } = retryAfterSeconds;

        public int Remaining { get; set; }
    }

    private sealed class Watch(string collection, string? ns, string kind, string apiVersion)
    {
        public Channel<string> Lines { get; } = Channel.CreateUnbounded<string>();

        public string Kind { get; } = kind;

        public string ApiVersion { get; } = apiVersion;

        public bool Sees(string eventCollection, string eventNs) =>
            eventCollection == collection && (ns is null || ns == eventNs);
    }
}
