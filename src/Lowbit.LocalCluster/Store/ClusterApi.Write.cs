using System.Globalization;
using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Patching;

namespace Lowbit.LocalCluster.Store;

public sealed partial class ClusterApi
{
    private const string ForegroundFinalizer = "foregroundDeletion";
    private const string OrphanFinalizer = "orphan";

    /// <summary>Creates an object (POST). The argument is not modified; the stored object is returned.</summary>
    public JsonObject Create(ResourceType type, string? ns, JsonObject obj, WriteOptions? options = null) =>
        CreateStored(type, ns, obj.DeepClone().AsObject(), options).ToJsonObject();

    /// <summary>Create without copying the argument (which it then owns); returns the stored version.</summary>
    internal StoredObject CreateStored(ResourceType type, string? ns, JsonObject candidate, WriteOptions? options = null)
    {
        options ??= WriteOptions.Default;
        PrepareIdentity(type, ns, candidate);
        lock (_gate)
        {
            return CreateLocked(type, candidate, options, "Update");
        }
    }

    /// <summary>
    /// Replaces an object (PUT). <paramref name="subresource"/> "status" changes only status; otherwise status
    /// is kept as stored (for resources with a status subresource). A non-empty metadata.resourceVersion must
    /// match the stored one (409 otherwise).
    /// </summary>
    public JsonObject Update(ResourceType type, string? ns, string name, JsonObject obj, WriteOptions? options = null, string? subresource = null) =>
        UpdateStored(type, ns, name, obj.DeepClone().AsObject(), options, subresource).ToJsonObject();

    /// <summary>Update without copying the argument (which it then owns); returns the stored version.</summary>
    internal StoredObject UpdateStored(ResourceType type, string? ns, string name, JsonObject candidate, WriteOptions? options = null, string? subresource = null)
    {
        options ??= WriteOptions.Default;
        PrepareIdentity(type, ns, candidate);
        if ((string?)candidate["metadata"]!["name"] != name)
        {
            throw ApiException.BadRequest($"the name of the object ({(string?)candidate["metadata"]!["name"]}) does not match the name on the URL ({name})");
        }
        if (type.IsCustom && string.IsNullOrEmpty((string?)candidate["metadata"]!["resourceVersion"]))
        {
            // Custom resources do not allow unconditional updates (kube-apiserver: AllowUnconditionalUpdate is false).
            throw ApiException.Invalid(type, name, [new StatusCause("FieldValueInvalid", "Invalid value: 0x0: must be specified for an update", "metadata.resourceVersion")]);
        }
        lock (_gate)
        {
            var current = GetStoredLocked(type, ns, name);
            return UpdateLocked(type, current, candidate, options, subresource, "Update");
        }
    }

    /// <summary>Patches an object: JSON patch, merge patch, strategic merge patch or server-side apply (which creates when missing).</summary>
    public JsonObject Patch(ResourceType type, string? ns, string name, PatchKind kind, string body, WriteOptions? options = null, string? subresource = null)
    {
        options ??= WriteOptions.Default;
        CheckScope(type, ns);
        if (kind == PatchKind.Apply)
        {
            return Apply(type, ns, name, YamlBody.ParseObject(body), options, subresource);
        }
        lock (_gate)
        {
            var current = GetStoredLocked(type, ns, name);
            var patched = current.ToJsonObject();
            JsonNode? result = kind switch
            {
                PatchKind.Json => JsonPatch.Apply(patched, body),
                PatchKind.Merge => MergePatch.Apply(patched, ParseBody(body)),
                PatchKind.StrategicMerge => type.IsCustom
                    ? throw new ApiException(415, "UnsupportedMediaType", "strategic merge patch is not supported for custom resources; use --type=merge or --type=json")
                    : StrategicMergePatch.Apply(patched, ParseBody(body)),
                _ => throw ApiException.BadRequest($"unknown patch type {kind}"),
            };
            if (result is not JsonObject patchedObject)
            {
                throw ApiException.BadRequest("the patch did not produce an object");
            }
            if ((string?)patchedObject["metadata"]?["resourceVersion"] == current.ResourceVersion.ToString(CultureInfo.InvariantCulture))
            {
                patchedObject["metadata"]!.AsObject().Remove("resourceVersion");
            }
            PrepareIdentity(type, ns, patchedObject);
            return UpdateLocked(type, current, patchedObject, options, subresource, "Update").ToJsonObject();
        }
    }

    /// <summary>
    /// Server-side apply of a full desired configuration: creates the object when missing, otherwise merges the
    /// applied fields into it and removes the fields this manager applied before and no longer applies.
    /// Conflicts with other managers are not detected (force is accepted and ignored).
    /// </summary>
    public JsonObject Apply(ResourceType type, string? ns, string name, JsonObject applied, WriteOptions options, string? subresource = null)
    {
        if (string.IsNullOrEmpty(options.FieldManager))
        {
            throw ApiException.BadRequest("fieldManager is required for apply requests (accepted: any non-empty name, e.g. ?fieldManager=my-controller)");
        }
        var desired = applied.DeepClone().AsObject();
        PrepareIdentity(type, ns, desired);
        if ((string?)desired["metadata"]!["name"] != name)
        {
            throw ApiException.BadRequest($"the name of the object ({(string?)desired["metadata"]!["name"]}) does not match the name on the URL ({name})");
        }
        lock (_gate)
        {
            var current = TryGetStoredLocked(type, ns, name);
            if (current is null)
            {
                if (subresource is not null)
                {
                    throw ApiException.NotFound(type, name);
                }
                var fresh = desired.DeepClone().AsObject();
                fresh["metadata"]!.AsObject().Remove("managedFields");
                ServerSideApply.RecordManager(fresh, options.FieldManager, desired, type.ApiVersion, NowString(), subresource);
                return CreateLocked(type, fresh, options, null).ToJsonObject();
            }
            var live = current.ToJsonObject();
            var merged = ServerSideApply.Merge(live, desired, options.FieldManager, subresource, type.IsCustom);
            merged["metadata"]!.AsObject().Remove("resourceVersion");
            if ((string?)desired["metadata"]!["resourceVersion"] is { Length: > 0 } rv)
            {
                merged["metadata"]!["resourceVersion"] = rv;
            }
            ServerSideApply.RecordManager(merged, options.FieldManager, desired, type.ApiVersion, NowString(), subresource);
            return UpdateLocked(type, current, merged, options, subresource, null).ToJsonObject();
        }
    }

    private StoredObject CreateLocked(ResourceType type, JsonObject obj, WriteOptions options, string? managerOperation)
    {
        var meta = obj["metadata"]!.AsObject();
        var ns = (string?)meta["namespace"];
        if (type.Namespaced)
        {
            var nsObject = BucketOf(BuiltinResources.Namespaces).Items.GetValueOrDefault(StoredObject.KeyOf("", ns!))
                ?? throw new ApiException(404, "NotFound", $"namespaces \"{ns}\" not found", ns, "", "namespaces");
            if (nsObject.IsDeleting)
            {
                throw ApiException.Forbidden(type, (string?)meta["name"] ?? "", $"unable to create new content in namespace {ns} because it is being terminated");
            }
        }
        if (string.IsNullOrEmpty((string?)meta["name"]))
        {
            if ((string?)meta["generateName"] is { Length: > 0 } prefix)
            {
                meta["name"] = prefix + RandomSuffix();
            }
            else
            {
                throw ApiException.Invalid(type, "", [new StatusCause("FieldValueRequired", "Required value: name or generateName is required", "metadata.name")]);
            }
        }
        var name = (string)meta["name"]!;
        var bucket = BucketOf(type);
        if (bucket.Items.ContainsKey(StoredObject.KeyOf(ns ?? "", name)))
        {
            throw ApiException.AlreadyExists(type, name);
        }
        meta["uid"] = Guid.NewGuid().ToString();
        meta["creationTimestamp"] = NowString();
        meta["generation"] = 1;
        meta.Remove("deletionTimestamp");
        meta.Remove("deletionGracePeriodSeconds");
        meta.Remove("resourceVersion");
        if (type.HasStatus && !KeepsStatusOnCreate(type))
        {
            obj.Remove("status");
        }
        BuiltinSemantics.Default(type, obj, (string)meta["uid"]!);
        ValidateLocked(type, obj, name, options);
        if (managerOperation is not null)
        {
            ServerSideApply.RecordUpdateManager(obj, options.FieldManager, type.ApiVersion, NowString());
        }
        if (type == BuiltinResources.CustomResourceDefinitions)
        {
            CustomResources.Establish(obj, NowString());
        }
        if (options.DryRun)
        {
            return StoredObject.From(obj, 0);
        }
        var stored = CommitLocked(type, obj, WatchEventKind.Added, null);
        if (type == BuiltinResources.CustomResourceDefinitions)
        {
            ActivateCrdLocked(obj);
        }
        return stored;
    }

    private StoredObject UpdateLocked(ResourceType type, StoredObject current, JsonObject candidate, WriteOptions options, string? subresource,
        string? managerOperation)
    {
        var old = current.ToJsonObject();
        var name = current.Name;
        var meta = candidate["metadata"]!.AsObject();
        if ((string?)meta["resourceVersion"] is { Length: > 0 } rv && rv != current.ResourceVersion.ToString(CultureInfo.InvariantCulture))
        {
            throw ApiException.StaleResourceVersion(type, name);
        }
        if ((string?)meta["uid"] is { Length: > 0 } uid && uid != current.Uid)
        {
            throw ApiException.Conflict(type, name, $"Precondition failed: UID in precondition: {uid}, UID in object meta: {current.Uid}");
        }
        JsonObject next;
        if (subresource == "status")
        {
            if (!type.HasStatus)
            {
                throw ApiException.NotFound(type, name);
            }
            next = old.DeepClone().AsObject();
            next["status"] = candidate["status"]?.DeepClone();
            if (next["status"] is null)
            {
                next.Remove("status");
            }
            if (candidate["metadata"]?["managedFields"] is JsonNode mf)
            {
                next["metadata"]!["managedFields"] = mf.DeepClone();
            }
        }
        else
        {
            next = candidate;
            var nextMeta = next["metadata"]!.AsObject();
            var oldMeta = old["metadata"]!.AsObject();
            foreach (var key in new[] { "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "namespace" })
            {
                if (oldMeta[key] is { } value)
                {
                    nextMeta[key] = value.DeepClone();
                }
                else
                {
                    nextMeta.Remove(key);
                }
            }
            if (oldMeta["generateName"] is { } gn && nextMeta["generateName"] is null)
            {
                nextMeta["generateName"] = gn.DeepClone();
            }
            if (type.HasStatus)
            {
                if (old["status"] is { } status)
                {
                    next["status"] = status.DeepClone();
                }
                else
                {
                    next.Remove("status");
                }
            }
            if (type == BuiltinResources.CustomResourceDefinitions && old["status"] is { } crdStatus)
            {
                next["status"] = crdStatus.DeepClone();
            }
            if (SpecChanged(old, next))
            {
                nextMeta["generation"] = ((long?)oldMeta["generation"] ?? 1) + 1;
            }
            BuiltinSemantics.Default(type, next, current.Uid);
        }
        next["metadata"]!["resourceVersion"] = current.ResourceVersion.ToString(CultureInfo.InvariantCulture);
        ValidateLocked(type, next, name, options, old, subresource);
        if (old["metadata"]?["deletionTimestamp"] is not null && subresource is null)
        {
            var oldFinalizers = old["metadata"]?["finalizers"] as JsonArray;
            var newFinalizers = next["metadata"]?["finalizers"] as JsonArray;
            var added = (newFinalizers ?? []).Select(f => (string?)f).Except((oldFinalizers ?? []).Select(f => (string?)f)).ToList();
            if (added.Count > 0)
            {
                throw ApiException.Forbidden(type, name, $"no new finalizers can be added if the object is being deleted, found new finalizers [{string.Join(" ", added)}]");
            }
        }
        if (managerOperation is not null)
        {
            CopyManagedFields(old, next);
        }
        if (JsonNode.DeepEquals(old, next))
        {
            return current;
        }
        if (managerOperation is not null)
        {
            ServerSideApply.RecordUpdateManager(next, options.FieldManager, type.ApiVersion, NowString(), subresource);
        }
        if (options.DryRun)
        {
            return StoredObject.From(next, current.ResourceVersion);
        }
        if (next["metadata"]?["deletionTimestamp"] is not null && (next["metadata"]?["finalizers"] as JsonArray ?? []).Count == 0)
        {
            return RemoveLocked(type, next, current);
        }
        var stored = CommitLocked(type, next, WatchEventKind.Modified, current);
        if (type == BuiltinResources.CustomResourceDefinitions)
        {
            ActivateCrdLocked(next);
        }
        return stored;
    }

    private static void CopyManagedFields(JsonObject from, JsonObject to)
    {
        if (from["metadata"]?["managedFields"] is { } mf)
        {
            to["metadata"]!["managedFields"] = mf.DeepClone();
        }
        else
        {
            to["metadata"]!.AsObject().Remove("managedFields");
        }
    }

    private static void ValidateLocked(ResourceType type, JsonObject obj, string name, WriteOptions options, JsonObject? old = null, string? subresource = null)
    {
        var causes = new List<StatusCause>();
        if (type.IsCustom && type.Schema is not null)
        {
            var checkUnknown = options.FieldValidation is "Strict" or "Warn";
            var before = checkUnknown ? obj.DeepClone().AsObject() : null;
            causes.AddRange(CustomResourceSchema.Apply(obj, type.Schema));
            if (before is not null)
            {
                var unknown = UnknownFields(before, obj, "").Where(f => !f.StartsWith("metadata.", StringComparison.Ordinal)
                    && (subresource == "status" ? f.StartsWith("status.", StringComparison.Ordinal) : !f.StartsWith("status.", StringComparison.Ordinal))).ToList();
                if (unknown.Count > 0 && options.FieldValidation == "Strict")
                {
                    throw ApiException.BadRequest($"{type.Kind} in version \"{type.Version}\" cannot be handled as a {type.Kind}: strict decoding error: {string.Join(", ", unknown.Select(f => $"unknown field \"{f}\""))}");
                }
                foreach (var field in unknown)
                {
                    options.Warnings?.Add($"unknown field \"{field}\"");
                }
            }
            if (causes.Count == 0 && subresource is null)
            {
                causes.AddRange(CustomResourceSchema.ValidateRules(obj, old));
            }
        }
        causes.AddRange(BuiltinSemantics.Validate(type, obj));
        if (causes.Count > 0)
        {
            throw ApiException.Invalid(type, name, causes);
        }
    }

    /// <summary>Object fields present in <paramref name="before"/> but pruned from <paramref name="after"/>.</summary>
    private static IEnumerable<string> UnknownFields(JsonNode? before, JsonNode? after, string path)
    {
        switch (before)
        {
            case JsonObject b:
                var a = after as JsonObject;
                foreach (var (key, value) in b)
                {
                    var childPath = path.Length == 0 ? key : $"{path}.{key}";
                    if (a is null || !a.ContainsKey(key))
                    {
                        if (value is not null)
                        {
                            yield return childPath;
                        }
                        continue;
                    }
                    foreach (var nested in UnknownFields(value, a[key], childPath))
                    {
                        yield return nested;
                    }
                }
                break;
            case JsonArray list when after is JsonArray afterList && afterList.Count == list.Count:
                for (var i = 0; i < list.Count; i++)
                {
                    foreach (var nested in UnknownFields(list[i], afterList[i], $"{path}[{i}]"))
                    {
                        yield return nested;
                    }
                }
                break;
        }
    }

    /// <summary>Checks and fills apiVersion, kind and namespace from the URL.</summary>
    private static void PrepareIdentity(ResourceType type, string? ns, JsonObject obj)
    {
        CheckScope(type, ns);
        var apiVersion = (string?)obj["apiVersion"];
        var kind = (string?)obj["kind"];
        if (!string.IsNullOrEmpty(kind) && kind != type.Kind)
        {
            throw ApiException.BadRequest($"the kind of the object ({kind}) does not match the resource {type.GroupResource} (kind {type.Kind})");
        }
        if (!string.IsNullOrEmpty(apiVersion) && apiVersion != type.ApiVersion)
        {
            var group = apiVersion.Contains('/', StringComparison.Ordinal) ? apiVersion[..apiVersion.IndexOf('/', StringComparison.Ordinal)] : "";
            if (group != type.Group)
            {
                throw ApiException.BadRequest($"the API version of the object ({apiVersion}) does not match the resource {type.GroupResource} ({type.ApiVersion})");
            }
        }
        obj["apiVersion"] = string.IsNullOrEmpty(type.StorageVersion) || !type.IsCustom ? type.ApiVersion
            : type.Group + "/" + type.StorageVersion;
        obj["kind"] = type.Kind;
        if (obj["metadata"] is not JsonObject meta)
        {
            meta = new JsonObject();
            obj["metadata"] = meta;
        }
        if (type.Namespaced)
        {
            var bodyNs = (string?)meta["namespace"];
            if (!string.IsNullOrEmpty(bodyNs) && bodyNs != ns)
            {
                throw ApiException.BadRequest($"the namespace of the provided object ({bodyNs}) does not match the namespace sent on the request ({ns})");
            }
            meta["namespace"] = ns;
        }
        else
        {
            meta.Remove("namespace");
        }
    }

    private static bool KeepsStatusOnCreate(ResourceType type) =>
        type == BuiltinResources.Nodes || type == BuiltinResources.PersistentVolumes || type == BuiltinResources.CustomResourceDefinitions;

    /// <summary>True when anything besides metadata and status differs (what bumps metadata.generation).</summary>
    private static bool SpecChanged(JsonObject old, JsonObject next)
    {
        foreach (var (key, value) in next)
        {
            if (key is "metadata" or "status" or "apiVersion" or "kind")
            {
                continue;
            }
            if (!JsonNode.DeepEquals(value, old[key]))
            {
                return true;
            }
        }
        return old.Any(kv => kv.Key is not ("metadata" or "status" or "apiVersion" or "kind") && !next.ContainsKey(kv.Key));
    }

    private StoredObject GetStoredLocked(ResourceType type, string? ns, string name) =>
        TryGetStoredLocked(type, ns, name) ?? throw ApiException.NotFound(type, name);

    private StoredObject? TryGetStoredLocked(ResourceType type, string? ns, string name) =>
        BucketOf(type).Items.GetValueOrDefault(StoredObject.KeyOf(Scope(type, ns), name));

    internal string NowString() => _time.GetUtcNow().UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    private static string RandomSuffix()
    {
        const string Alphabet = "bcdfghjklmnpqrstvwxz2456789";
        return string.Create(5, 0, (span, _) =>
        {
            for (var i = 0; i < span.Length; i++)
            {
                span[i] = Alphabet[Random.Shared.Next(Alphabet.Length)];
            }
        });
    }

    private static JsonNode ParseBody(string body)
    {
        try
        {
            return JsonNode.Parse(body) ?? throw ApiException.BadRequest("empty patch body");
        }
        catch (System.Text.Json.JsonException ex)
        {
            throw ApiException.BadRequest($"the patch body is not valid JSON: {ex.Message}");
        }
    }
}

/// <summary>The patch types of PATCH requests (by Content-Type).</summary>
public enum PatchKind
{
    /// <summary>application/json-patch+json (RFC 6902).</summary>
    Json,

    /// <summary>application/merge-patch+json (RFC 7386).</summary>
    Merge,

    /// <summary>application/strategic-merge-patch+json (built-in kinds only).</summary>
    StrategicMerge,

    /// <summary>application/apply-patch+yaml (server-side apply).</summary>
    Apply,
}
