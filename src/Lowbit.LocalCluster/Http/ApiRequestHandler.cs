using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Patching;
using Lowbit.LocalCluster.Store;
using Lowbit.LocalCluster.Testing;
using Microsoft.AspNetCore.Http;

namespace Lowbit.LocalCluster.Http;

/// <summary>
/// Routes Kubernetes REST paths onto <see cref="ClusterApi"/>: discovery, OpenAPI v3, CRUD, subresources
/// (status, scale, log, binding, eviction), list with selectors and paging, chunked watch streams, Table output,
/// Status errors, the request journal and fault injection.
/// </summary>
internal sealed class ApiRequestHandler
{
    private static readonly byte[] NewLine = "\n"u8.ToArray();

    private readonly ClusterApi _api;
    private readonly FaultInjector _faults;
    private readonly RequestJournal _journal;
    private readonly PodLogStore _logs;
    private readonly TableBuilder _tables;
    private readonly ServiceProxy _proxy;
    private readonly Func<string> _serverAddress;

    public ApiRequestHandler(ClusterApi api, FaultInjector faults, RequestJournal journal, PodLogStore logs, Func<string> serverAddress)
    {
        _api = api;
        _faults = faults;
        _journal = journal;
        _logs = logs;
        _tables = new TableBuilder(api.Time);
        _proxy = new ServiceProxy(api);
        _serverAddress = serverAddress;
    }

    /// <summary>The tokens TokenReview knows (an empty set unless the server passes its own).</summary>
    public Auth.TokenAuthenticator Tokens { get; init; } = new();

    /// <summary>Called with unexpected exceptions (500 InternalError answers) for logging.</summary>
    public Action<Exception>? OnInternalError { get; set; }

    private sealed record Target(ResourceType Type, string? Namespace, string? Name, string? Subresource);

    public async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var path = request.Path.Value ?? "/";
        var verb = "get";
        var status = 200;
        try
        {
            var target = Route(path, out var nonResource);
            verb = VerbOf(request, target);
            if (target is not null)
            {
                Authorize(request, target, verb);
            }
            var fault = _faults.TakeRequestFault(verb, path);
            if (fault.Delay is { } delay)
            {
                await _faults.HoldAsync(delay, context.RequestAborted).ConfigureAwait(false);
            }
            if (fault.StatusCode is { } code)
            {
                throw new ApiException(code, ReasonOf(code), fault.Message ?? $"injected fault: {code}") { RetryAfterSeconds = fault.RetryAfterSeconds };
            }
            if (target is null)
            {
                await WriteJsonAsync(context, nonResource ?? throw new ApiException(404, "NotFound", "the server could not find the requested resource")).ConfigureAwait(false);
                return;
            }
            status = await HandleResourceAsync(context, target, verb).ConfigureAwait(false);
        }
        catch (ApiException ex)
        {
            status = ex.Code;
            await WriteErrorAsync(context, ex).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            status = 499;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            status = 500;
            OnInternalError?.Invoke(ex);
            await WriteErrorAsync(context, new ApiException(500, "InternalError", $"Internal error occurred: {ex.Message}")).ConfigureAwait(false);
        }
        finally
        {
            var query = request.Query;
            _journal.Add(new JournalEntry(_api.Time.GetUtcNow(), verb, request.Method, path,
                query.TryGetValue("fieldManager", out var fm) ? fm.ToString() : null,
                request.Headers.UserAgent.ToString(), status));
        }
    }

    /// <summary>
    /// RBAC for resource requests, as the real API server's RBAC authorizer decides (<see cref="Auth.RbacAuthorizer"/>):
    /// the kubeconfig's administrator is in system:masters and may do everything; a service account (the token the
    /// executor gives each pod) may do what its Roles and ClusterRoles grant, else 403 Forbidden with the real server's
    /// message. Non-resource requests (discovery, OpenAPI, version) are open to every authenticated caller, as the
    /// default system:discovery role makes them. Not checked: the extra <c>create</c> a server-side apply needs when it
    /// creates the object.
    /// </summary>
    private void Authorize(HttpRequest request, Target target, string verb)
    {
        const string Bearer = "Bearer ";
        var header = request.Headers.Authorization.ToString();
        if (!header.StartsWith(Bearer, StringComparison.OrdinalIgnoreCase) || Tokens.Authenticate(header[Bearer.Length..].Trim()) is not { } user)
        {
            return; // the server lets only known tokens through; a handler without the server's tokens does not authorize
        }
        var type = target.Type;
        var attributes = new Auth.AccessAttributes
        {
            Verb = verb,
            Group = type.Group,
            Resource = type.Plural,
            Subresource = target.Subresource ?? "",
            Namespace = target.Namespace ?? "",
            Name = target.Name ?? "",
        };
        if (Auth.RbacAuthorizer.Authorize(_api, user, attributes).Allowed)
        {
            return;
        }
        var resource = target.Subresource is null ? type.Plural : $"{type.Plural}/{target.Subresource}";
        var scope = target.Namespace is null ? "at the cluster scope" : $"in the namespace \"{target.Namespace}\"";
        var what = target.Name is null ? type.GroupResource : $"{type.GroupResource} \"{target.Name}\"";
        throw new ApiException(403, "Forbidden",
            $"{what} is forbidden: User \"{user.Username}\" cannot {verb} resource \"{resource}\" in API group \"{type.Group}\" {scope}",
            name: target.Name, group: type.Group, kind: type.Plural);
    }

    private static string ReasonOf(int code) => code switch
    {
        409 => "Conflict",
        429 => "TooManyRequests",
        410 => "Expired",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };

    private static string VerbOf(HttpRequest request, Target? target)
    {
        var watch = request.Query["watch"].ToString() is "1" or "true";
        return request.Method switch
        {
            "GET" when target?.Name is null && target is not null => watch ? "watch" : "list",
            "GET" => "get",
            "POST" => "create",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" when target?.Name is null => "deletecollection",
            "DELETE" => "delete",
            _ => request.Method.ToLowerInvariant(),
        };
    }

    /// <summary>Maps a path to a resource target, or to a non-resource document (discovery, version, OpenAPI).</summary>
    private Target? Route(string path, out JsonObject? nonResource)
    {
        nonResource = null;
        var segments = path.Trim('/').Split('/', StringSplitOptions.RemoveEmptyEntries);
        var catalog = _api.Resources;
        switch (segments)
        {
            case ["version"]:
                nonResource = Discovery.Version();
                return null;
            case ["healthz" or "livez" or "readyz", ..]:
                nonResource = new JsonObject { ["status"] = "ok" };
                return null;
            case ["api"]:
                nonResource = Discovery.CoreVersions(_serverAddress());
                return null;
            case ["apis"]:
                nonResource = Discovery.GroupList(catalog);
                return null;
            case ["api", var v]:
                nonResource = Discovery.ResourceList(catalog, "", v);
                return null;
            case ["apis", var g]:
                nonResource = Discovery.GroupOf(catalog, g);
                return null;
            case ["apis", var g, var v]:
                nonResource = Discovery.ResourceList(catalog, g, v);
                return null;
            case ["openapi", "v3"]:
                nonResource = OpenApi.Index(catalog);
                return null;
            case ["openapi", "v3", "api", var v]:
                nonResource = OpenApi.GroupVersion(catalog, "", v);
                return null;
            case ["openapi", "v3", "apis", var g, var v]:
                nonResource = OpenApi.GroupVersion(catalog, g, v);
                return null;
        }
        string group, version;
        string[] rest;
        if (segments.Length >= 3 && segments[0] == "api")
        {
            (group, version, rest) = ("", segments[1], segments[2..]);
        }
        else if (segments.Length >= 4 && segments[0] == "apis")
        {
            (group, version, rest) = (segments[1], segments[2], segments[3..]);
        }
        else
        {
            return null;
        }
        if (rest.Length > 0 && rest[0] == "watch")
        {
            rest = rest[1..];
        }
        if (rest.Length >= 3 && rest[0] == "namespaces" && catalog.Find(group, version, rest[2]) is { Namespaced: true } namespaced)
        {
            return new Target(namespaced, rest[1], rest.Length > 3 ? rest[3] : null, rest.Length > 4 ? string.Join('/', rest[4..]) : null);
        }
        if (rest.Length >= 1 && catalog.Find(group, version, rest[0]) is { } type)
        {
            if (type.Namespaced && rest.Length > 1)
            {
                return null;
            }
            return new Target(type, null, rest.Length > 1 ? rest[1] : null, rest.Length > 2 ? string.Join('/', rest[2..]) : null);
        }
        return null;
    }

    private async Task<int> HandleResourceAsync(HttpContext context, Target target, string verb)
    {
        var (type, ns, name, sub) = target;
        if (BuiltinResources.IsReview(type))
        {
            if (verb != "create" || name is not null)
            {
                throw new ApiException(405, "MethodNotAllowed", $"the server does not allow this method on the requested resource ({type.GroupResource} supports only create)");
            }

            var answer = Auth.AccessReviews.Answer(type, await ReadObjectAsync(context).ConfigureAwait(false), _api, Tokens);
            await WriteJsonAsync(context, answer, 201).ConfigureAwait(false);
            return 201;
        }

        var query = context.Request.Query;
        var asTable = context.Request.Headers.Accept.ToString().Contains("as=Table", StringComparison.Ordinal);
        var warnings = new List<string>();
        if (verb is "create" or "update" or "patch")
        {
            context.Response.OnStarting(() =>
            {
                foreach (var warning in warnings.Distinct())
                {
                    context.Response.Headers.Append("Warning", $"299 - \"{warning.Replace("\"", "\\\"", StringComparison.Ordinal)}\"");
                }
                return Task.CompletedTask;
            });
        }
        var writeOptions = new WriteOptions
        {
            Warnings = warnings,
            FieldValidation = query["fieldValidation"].ToString() is { Length: > 0 } fv ? fv : null,
            DryRun = query["dryRun"].ToString() == "All",
            FieldManager = query.TryGetValue("fieldManager", out var fm) ? fm.ToString() : DefaultManager(context.Request),
            Force = query["force"].ToString() is "true" or "1",
        };
        if (ServiceProxy.IsProxy(sub) && ns is not null && name is not null && (type == BuiltinResources.Services || type == BuiltinResources.Pods))
        {
            return await _proxy.ForwardAsync(context, type, ns, name, sub!).ConfigureAwait(false);
        }
        if (sub is not null and not ("status" or "scale" or "log" or "binding" or "eviction" or "finalize"))
        {
            throw new ApiException(404, "NotFound", $"the server could not find the requested resource ({sub} of {type.GroupResource})");
        }
        switch (verb)
        {
            case "list":
                await ListAsync(context, type, ns, asTable).ConfigureAwait(false);
                return 200;
            case "watch":
                await WatchAsync(context, type, ns, asTable).ConfigureAwait(false);
                return 200;
            case "get" when sub == "log":
                await LogAsync(context, ns!, name!).ConfigureAwait(false);
                return 200;
            case "get" when sub == "scale":
                await WriteJsonAsync(context, ScaleOf(type, _api.Get(type, ns, name!))).ConfigureAwait(false);
                return 200;
            case "get":
                var got = _api.Get(type, ns, name!);
                await WriteObjectAsync(context, type, got, asTable).ConfigureAwait(false);
                return 200;
            case "create" when sub == "binding":
                return await BindAsync(context, ns!, name!).ConfigureAwait(false);
            case "create" when sub == "eviction":
                _api.Delete(type, ns, name!);
                await WriteJsonAsync(context, Success(201), 201).ConfigureAwait(false);
                return 201;
            case "create":
                var body = await ReadObjectAsync(context).ConfigureAwait(false);
                var created = _api.CreateStored(type, ns, body, writeOptions);
                await WriteStoredAsync(context, type, created, 201).ConfigureAwait(false);
                return 201;
            case "update" when sub == "scale":
                var scaleBody = await ReadObjectAsync(context).ConfigureAwait(false);
                var scaled = SetReplicas(type, ns, name!, scaleBody["spec"]?["replicas"], writeOptions, (string?)scaleBody["metadata"]?["resourceVersion"]);
                await WriteJsonAsync(context, ScaleOf(type, scaled)).ConfigureAwait(false);
                return 200;
            case "update":
                var replacement = await ReadObjectAsync(context).ConfigureAwait(false);
                var updated = _api.UpdateStored(type, ns, name!, replacement, writeOptions, sub == "status" ? "status" : null);
                await WriteStoredAsync(context, type, updated, 200).ConfigureAwait(false);
                return 200;
            case "patch" when sub == "scale":
                var scaleNow = ScaleOf(type, _api.Get(type, ns, name!));
                var patchedScale = ApplyPatch(context, scaleNow, await ReadTextAsync(context).ConfigureAwait(false));
                var afterScale = SetReplicas(type, ns, name!, patchedScale["spec"]?["replicas"], writeOptions, null);
                await WriteJsonAsync(context, ScaleOf(type, afterScale)).ConfigureAwait(false);
                return 200;
            case "patch":
                var kind = PatchKindOf(context.Request.ContentType);
                var text = await ReadTextAsync(context).ConfigureAwait(false);
                var patched = _api.Patch(type, ns, name!, kind, text, writeOptions, sub == "status" ? "status" : null);
                await WriteObjectAsync(context, type, patched, false).ConfigureAwait(false);
                return 200;
            case "delete":
                var deleteOptions = await ReadDeleteOptionsAsync(context).ConfigureAwait(false);
                var deleted = _api.Delete(type, ns, name!, deleteOptions);
                await WriteObjectAsync(context, type, deleted, false).ConfigureAwait(false);
                return 200;
            case "deletecollection":
                var collectionOptions = await ReadDeleteOptionsAsync(context).ConfigureAwait(false);
                var victims = _api.List(type, ns, new ListOptions { LabelSelector = query["labelSelector"], FieldSelector = query["fieldSelector"] });
                var removed = new List<JsonObject>();
                foreach (var victim in victims.Items)
                {
                    try
                    {
                        removed.Add(_api.Delete(type, victim.Namespace.Length == 0 ? null : victim.Namespace, victim.Name, collectionOptions));
                    }
                    catch (ApiException ex) when (ex.Code == 404)
                    {
                        // Deleted meanwhile.
                    }
                }
                await WriteJsonAsync(context, ListObject(type, removed, victims.ResourceVersion.ToString(CultureInfo.InvariantCulture), null, null)).ConfigureAwait(false);
                return 200;
            default:
                throw ApiException.MethodNotSupported(type, context.Request.Method);
        }
    }

    private static string DefaultManager(HttpRequest request)
    {
        var agent = request.Headers.UserAgent.ToString();
        var slash = agent.IndexOf('/', StringComparison.Ordinal);
        var manager = slash > 0 ? agent[..slash] : agent;
        return manager.Length == 0 ? "unknown" : manager;
    }

    private static PatchKind PatchKindOf(string? contentType)
    {
        var media = (contentType ?? "").Split(';')[0].Trim();
        return media switch
        {
            "application/json-patch+json" => PatchKind.Json,
            "application/merge-patch+json" => PatchKind.Merge,
            "application/strategic-merge-patch+json" => PatchKind.StrategicMerge,
            "application/apply-patch+yaml" or "application/apply-patch+json" => PatchKind.Apply,
            _ => throw ApiException.UnsupportedMediaType(media),
        };
    }

    private static JsonObject ApplyPatch(HttpContext context, JsonObject target, string body)
    {
        var kind = PatchKindOf(context.Request.ContentType);
        var result = kind switch
        {
            PatchKind.Json => JsonPatch.Apply(target, body),
            _ => MergePatch.Apply(target, JsonNode.Parse(body)),
        };
        return result as JsonObject ?? throw ApiException.BadRequest("the patch did not produce an object");
    }

    private async Task ListAsync(HttpContext context, ResourceType type, string? ns, bool asTable)
    {
        var query = context.Request.Query;
        var options = new ListOptions
        {
            LabelSelector = query["labelSelector"],
            FieldSelector = query["fieldSelector"],
            Limit = int.TryParse(query["limit"], CultureInfo.InvariantCulture, out var limit) ? limit : null,
            Continue = query["continue"],
        };
        var list = _api.List(type, ns, options);
        var rv = list.ResourceVersion.ToString(CultureInfo.InvariantCulture);
        if (asTable)
        {
            var table = _tables.Build(type, list.Items.Select(o => Render(type, o)), rv, list.Continue, IncludeObject(context));
            await WriteJsonAsync(context, table).ConfigureAwait(false);
            return;
        }
        context.Response.ContentType = "application/json";
        var meta = new JsonObject { ["resourceVersion"] = rv };
        if (list.Continue is not null)
        {
            meta["continue"] = list.Continue;
            meta["remainingItemCount"] = list.RemainingItemCount;
        }
        var head = Encoding.UTF8.GetBytes($"{{\"kind\":\"{type.Kind}List\",\"apiVersion\":\"{type.ApiVersion}\",\"metadata\":{meta.ToJsonString()},\"items\":[");
        var body = context.Response.BodyWriter;
        await body.WriteAsync(head).ConfigureAwait(false);
        for (var i = 0; i < list.Items.Count; i++)
        {
            if (i > 0)
            {
                await body.WriteAsync(","u8.ToArray()).ConfigureAwait(false);
            }
            await body.WriteAsync(RenderBytes(type, list.Items[i])).ConfigureAwait(false);
        }
        await body.WriteAsync("]}"u8.ToArray()).ConfigureAwait(false);
    }

    private async Task WatchAsync(HttpContext context, ResourceType type, string? ns, bool asTable)
    {
        var query = context.Request.Query;
        var options = new WatchOptions
        {
            ResourceVersion = query["resourceVersion"],
            LabelSelector = query["labelSelector"],
            FieldSelector = query["fieldSelector"],
            AllowBookmarks = query["allowWatchBookmarks"].ToString() is "true" or "1",
            SendInitialEvents = query.TryGetValue("sendInitialEvents", out var sie) ? sie.ToString() is "true" or "1" : null,
        };
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        if (int.TryParse(query["timeoutSeconds"], CultureInfo.InvariantCulture, out var seconds) && seconds > 0)
        {
            timeout.CancelAfter(TimeSpan.FromSeconds(seconds));
        }
        var fault = _faults.TakeWatchFault(context.Request.Path.Value ?? "");
        var response = context.Response;
        response.ContentType = "application/json";
        response.Headers.CacheControl = "no-cache, private";
        var includeObject = IncludeObject(context);
        var sent = 0;
        try
        {
            await response.StartAsync(timeout.Token).ConfigureAwait(false);
            await response.Body.FlushAsync(timeout.Token).ConfigureAwait(false);
            if (fault is { AfterEvents: 0 } immediate)
            {
                await ApplyWatchFaultAsync(context, immediate.Fault, timeout.Token).ConfigureAwait(false);
                return;
            }
            await foreach (var e in _api.WatchAsync(type, ns, options, timeout.Token).ConfigureAwait(false))
            {
                var payload = e.Type == WatchEventKind.Bookmark
                    ? Encoding.UTF8.GetBytes(Bookmark(type, e).ToJsonString())
                    : asTable
                        ? Encoding.UTF8.GetBytes(_tables.Build(type, [Render(type, e.Object!)], null, null, includeObject).ToJsonString())
                        : RenderBytes(type, e.Object!);
                await WriteEventAsync(response, e.Type.ToString().ToUpperInvariant(), payload, timeout.Token).ConfigureAwait(false);
                if (e.Type != WatchEventKind.Bookmark && ++sent == fault?.AfterEvents)
                {
                    await ApplyWatchFaultAsync(context, fault.Value.Fault, timeout.Token).ConfigureAwait(false);
                    return;
                }
            }
        }
        catch (ApiException ex) when (ex.Code == 410 || ex.Code == 400)
        {
            await WriteEventAsync(response, "ERROR", Encoding.UTF8.GetBytes(ex.ToStatus().ToJsonString()), timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Timeout or client gone: end the stream.
        }
    }

    private static async Task ApplyWatchFaultAsync(HttpContext context, WatchFault fault, CancellationToken cancellationToken)
    {
        switch (fault)
        {
            case WatchFault.Drop:
                context.Abort();
                break;
            case WatchFault.Stall:
                await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
                break;
            case WatchFault.Expire:
                var status = ApiException.Gone("too old resource version (injected)").ToStatus();
                await WriteEventAsync(context.Response, "ERROR", Encoding.UTF8.GetBytes(status.ToJsonString()), cancellationToken).ConfigureAwait(false);
                break;
        }
    }

    private static async Task WriteEventAsync(HttpResponse response, string type, byte[] payload, CancellationToken cancellationToken)
    {
        var head = Encoding.UTF8.GetBytes($"{{\"type\":\"{type}\",\"object\":");
        var writer = response.BodyWriter;
        writer.Write(head);
        writer.Write(payload);
        writer.Write("}"u8);
        writer.Write(NewLine);
        await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    private static JsonObject Bookmark(ResourceType type, WatchEvent e)
    {
        var meta = new JsonObject { ["resourceVersion"] = e.ResourceVersion.ToString(CultureInfo.InvariantCulture) };
        if (e.InitialEventsEnd)
        {
            meta["annotations"] = new JsonObject { ["k8s.io/initial-events-end"] = "true" };
        }
        return new JsonObject { ["kind"] = type.Kind, ["apiVersion"] = type.ApiVersion, ["metadata"] = meta };
    }

    private async Task LogAsync(HttpContext context, string ns, string pod)
    {
        var query = context.Request.Query;
        var obj = _api.Get(BuiltinResources.Pods, ns, pod);
        var containers = (obj["spec"]?["containers"] as JsonArray ?? []).Select(c => (string?)c?["name"] ?? "").ToList();
        var container = query["container"].ToString();
        if (container.Length == 0)
        {
            if (containers.Count != 1)
            {
                throw ApiException.BadRequest($"a container name must be specified for pod {pod}, choose one of: [{string.Join(" ", containers)}]");
            }
            container = containers[0];
        }
        else if (!containers.Contains(container) && !(obj["spec"]?["initContainers"] as JsonArray ?? []).Any(c => (string?)c?["name"] == container))
        {
            throw ApiException.BadRequest($"container {container} is not valid for pod {pod}");
        }
        int? tail = int.TryParse(query["tailLines"], CultureInfo.InvariantCulture, out var t) ? t : null;
        context.Response.ContentType = "text/plain";
        var text = _logs.Read(ns, pod, container, tail, timestamps: query["timestamps"].ToString() is "true" or "1");
        await context.Response.WriteAsync(text, context.RequestAborted).ConfigureAwait(false);
        if (query["follow"].ToString() is "true" or "1")
        {
            await context.Response.Body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
            var offset = _logs.Read(ns, pod, container).Length;
            await foreach (var chunk in _logs.FollowAsync(ns, pod, container, offset, context.RequestAborted).ConfigureAwait(false))
            {
                await context.Response.WriteAsync(chunk, context.RequestAborted).ConfigureAwait(false);
                await context.Response.Body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
            }
        }
    }

    private async Task<int> BindAsync(HttpContext context, string ns, string pod)
    {
        var binding = await ReadObjectAsync(context).ConfigureAwait(false);
        var node = (string?)binding["target"]?["name"] ?? throw ApiException.BadRequest("binding.target.name is required");
        var current = _api.Get(BuiltinResources.Pods, ns, pod);
        if ((string?)current["spec"]?["nodeName"] is { Length: > 0 } existing)
        {
            throw ApiException.Conflict(BuiltinResources.Pods, pod, $"pod {pod} is already assigned to node \"{existing}\"");
        }
        current["spec"]!["nodeName"] = node;
        _api.Update(BuiltinResources.Pods, ns, pod, current, new WriteOptions { FieldManager = DefaultManager(context.Request) });
        await WriteJsonAsync(context, Success(201), 201).ConfigureAwait(false);
        return 201;
    }

    private JsonObject SetReplicas(ResourceType type, string? ns, string name, JsonNode? replicas, WriteOptions options, string? resourceVersion)
    {
        if (type.Scale is null)
        {
            throw new ApiException(404, "NotFound", $"the server could not find the requested resource (scale of {type.GroupResource})");
        }
        if (replicas is null)
        {
            throw ApiException.Invalid(type, name, [new StatusCause("FieldValueRequired", "Required value", "spec.replicas")]);
        }
        var obj = _api.Get(type, ns, name);
        if (resourceVersion is { Length: > 0 } && resourceVersion != (string?)obj["metadata"]?["resourceVersion"])
        {
            throw ApiException.StaleResourceVersion(type, name);
        }
        SetPath(obj, type.Scale.SpecReplicasPath, replicas.DeepClone());
        return _api.Update(type, ns, name, obj, options);
    }

    private static JsonObject ScaleOf(ResourceType type, JsonObject obj)
    {
        if (type.Scale is null)
        {
            throw new ApiException(404, "NotFound", $"the server could not find the requested resource (scale of {type.GroupResource})");
        }
        var meta = obj["metadata"]!;
        var status = new JsonObject { ["replicas"] = JsonPathQuery.Evaluate(obj, type.Scale.StatusReplicasPath)?.DeepClone() ?? 0 };
        if (type.Scale.LabelSelectorPath is { } selectorPath && JsonPathQuery.Evaluate(obj, selectorPath) is { } selector)
        {
            status["selector"] = selector.GetValueKind() == JsonValueKind.String ? selector.DeepClone() : SelectorString(obj["spec"]?["selector"]);
        }
        else if (obj["spec"]?["selector"] is JsonObject specSelector)
        {
            status["selector"] = SelectorString(specSelector);
        }
        return new JsonObject
        {
            ["kind"] = "Scale",
            ["apiVersion"] = "autoscaling/v1",
            ["metadata"] = new JsonObject
            {
                ["name"] = meta["name"]?.DeepClone(),
                ["namespace"] = meta["namespace"]?.DeepClone(),
                ["uid"] = meta["uid"]?.DeepClone(),
                ["resourceVersion"] = meta["resourceVersion"]?.DeepClone(),
                ["creationTimestamp"] = meta["creationTimestamp"]?.DeepClone(),
            },
            ["spec"] = new JsonObject { ["replicas"] = JsonPathQuery.Evaluate(obj, type.Scale.SpecReplicasPath)?.DeepClone() ?? 0 },
            ["status"] = status,
        };
    }

    private static string SelectorString(JsonNode? selector) =>
        string.Join(',', (selector?["matchLabels"] as JsonObject ?? []).Select(kv => $"{kv.Key}={kv.Value}"));

    private static void SetPath(JsonObject obj, string path, JsonNode? value)
    {
        var parts = path.TrimStart('.').Split('.');
        var node = obj;
        foreach (var part in parts[..^1])
        {
            if (node[part] is not JsonObject child)
            {
                child = new JsonObject();
                node[part] = child;
            }
            node = child;
        }
        node[parts[^1]] = value;
    }

    private static string IncludeObject(HttpContext context) =>
        context.Request.Query["includeObject"].ToString() is { Length: > 0 } v ? v : "Metadata";

    /// <summary>The object as the requested version (multi-version CRDs are served without conversion).</summary>
    private static JsonObject Render(ResourceType type, StoredObject obj)
    {
        var json = obj.ToJsonObject();
        json["apiVersion"] = type.ApiVersion;
        return json;
    }

    private static byte[] RenderBytes(ResourceType type, StoredObject obj) =>
        !type.IsCustom || type.Version == type.StorageVersion ? obj.Json : JsonSerializer.SerializeToUtf8Bytes(Render(type, obj));

    private static async Task WriteStoredAsync(HttpContext context, ResourceType type, StoredObject stored, int status)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await context.Response.BodyWriter.WriteAsync(RenderBytes(type, stored)).ConfigureAwait(false);
    }

    private async Task WriteObjectAsync(HttpContext context, ResourceType type, JsonObject obj, bool asTable, int status = 200)
    {
        obj["apiVersion"] = type.ApiVersion;
        if (asTable)
        {
            await WriteJsonAsync(context, _tables.Build(type, [obj], null, null, IncludeObject(context)), status).ConfigureAwait(false);
            return;
        }
        await WriteJsonAsync(context, obj, status).ConfigureAwait(false);
    }

    private static JsonObject ListObject(ResourceType type, IEnumerable<JsonObject> items, string rv, string? cont, long? remaining)
    {
        var meta = new JsonObject { ["resourceVersion"] = rv };
        if (cont is not null)
        {
            meta["continue"] = cont;
            meta["remainingItemCount"] = remaining;
        }
        return new JsonObject
        {
            ["kind"] = type.Kind + "List",
            ["apiVersion"] = type.ApiVersion,
            ["metadata"] = meta,
            ["items"] = new JsonArray(items.Select(i => (JsonNode)i).ToArray()),
        };
    }

    private static JsonObject Success(int code) => new()
    {
        ["kind"] = "Status",
        ["apiVersion"] = "v1",
        ["metadata"] = new JsonObject(),
        ["status"] = "Success",
        ["code"] = code,
    };

    private static async Task WriteJsonAsync(HttpContext context, JsonObject obj, int status = 200)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await context.Response.BodyWriter.WriteAsync(JsonSerializer.SerializeToUtf8Bytes(obj)).ConfigureAwait(false);
    }

    private static async Task WriteErrorAsync(HttpContext context, ApiException ex)
    {
        if (context.Response.HasStarted)
        {
            return;
        }
        if (ex.RetryAfterSeconds is { } retry)
        {
            context.Response.Headers.RetryAfter = retry.ToString(CultureInfo.InvariantCulture);
        }
        await WriteJsonAsync(context, ex.ToStatus(), ex.Code).ConfigureAwait(false);
    }

    private static async Task<string> ReadTextAsync(HttpContext context)
    {
        var media = (context.Request.ContentType ?? "").Split(';')[0].Trim();
        if (media.Contains("protobuf", StringComparison.Ordinal) || media.Contains("cbor", StringComparison.Ordinal))
        {
            throw new ApiException(415, "UnsupportedMediaType", $"the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {media})");
        }
        using var reader = new StreamReader(context.Request.Body, Encoding.UTF8);
        return await reader.ReadToEndAsync(context.RequestAborted).ConfigureAwait(false);
    }

    private static async Task<JsonObject> ReadObjectAsync(HttpContext context)
    {
        if ((context.Request.ContentType ?? "").StartsWith("application/vnd.kubernetes.protobuf", StringComparison.Ordinal))
        {
            using var buffer = new MemoryStream();
            await context.Request.Body.CopyToAsync(buffer, context.RequestAborted).ConfigureAwait(false);
            return ProtobufBodies.Decode(buffer.ToArray());
        }
        var media = (context.Request.ContentType ?? "application/json").Split(';')[0].Trim();
        if (media.Contains("yaml", StringComparison.Ordinal))
        {
            return Yaml.ParseObject(await ReadTextAsync(context).ConfigureAwait(false));
        }
        if (media.Contains("protobuf", StringComparison.Ordinal) || media.Contains("cbor", StringComparison.Ordinal))
        {
            await ReadTextAsync(context).ConfigureAwait(false);
        }
        try
        {
            return await JsonNode.ParseAsync(context.Request.Body, cancellationToken: context.RequestAborted).ConfigureAwait(false) as JsonObject
                ?? throw ApiException.BadRequest("the request body must be a JSON object");
        }
        catch (JsonException ex)
        {
            throw ApiException.BadRequest($"the request body is not valid JSON: {ex.Message}");
        }
    }

    private static async Task<DeleteOptions> ReadDeleteOptionsAsync(HttpContext context)
    {
        var query = context.Request.Query;
        JsonObject body = [];
        var isProtobuf = (context.Request.ContentType ?? "").StartsWith("application/vnd.kubernetes.protobuf", StringComparison.Ordinal);
        var text = isProtobuf ? "" : await ReadTextAsync(context).ConfigureAwait(false);
        if (isProtobuf)
        {
            body = await ReadObjectAsync(context).ConfigureAwait(false);
        }
        else if (!string.IsNullOrWhiteSpace(text))
        {
            try
            {
                body = JsonNode.Parse(text) as JsonObject ?? [];
            }
            catch (JsonException ex)
            {
                throw ApiException.BadRequest($"the DeleteOptions body is not valid JSON: {ex.Message}");
            }
        }
        var policyText = (string?)body["propagationPolicy"] ?? query["propagationPolicy"].ToString();
        PropagationPolicy? policy = policyText switch
        {
            "" => (bool?)body["orphanDependents"] == true ? PropagationPolicy.Orphan : null,
            "Background" => PropagationPolicy.Background,
            "Foreground" => PropagationPolicy.Foreground,
            "Orphan" => PropagationPolicy.Orphan,
            _ => throw ApiException.BadRequest($"invalid propagationPolicy \"{policyText}\" (accepted: Background, Foreground, Orphan)"),
        };
        var dryRun = body["dryRun"] is JsonArray dr ? dr.Any(d => (string?)d == "All") : query["dryRun"].ToString() == "All";
        long? grace = (long?)body["gracePeriodSeconds"] ?? (long.TryParse(query["gracePeriodSeconds"], CultureInfo.InvariantCulture, out var g) ? g : null);
        return new DeleteOptions
        {
            PropagationPolicy = policy,
            DryRun = dryRun,
            PreconditionUid = (string?)body["preconditions"]?["uid"],
            PreconditionResourceVersion = (string?)body["preconditions"]?["resourceVersion"],
            GracePeriodSeconds = grace,
        };
    }
}
