using System.Text.Json.Nodes;
using k8s;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Http;

/// <summary>Legacy discovery documents (/api, /api/v1, /apis, /apis/{g}, /apis/{g}/{v}) and /version.</summary>
internal static class Discovery
{
    public const string KubernetesVersion = "v1.33.0";

    private static readonly JsonArray AllVerbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

    public static JsonObject Version() => new()
    {
        ["major"] = "1",
        ["minor"] = "33",
        ["gitVersion"] = KubernetesVersion + "-lowbit",
        ["gitCommit"] = "0000000000000000000000000000000000000000",
        ["gitTreeState"] = "clean",
        ["buildDate"] = "2026-01-01T00:00:00Z",
        ["goVersion"] = "go1.24.0",
        ["compiler"] = "gc",
        ["platform"] = "linux/amd64",
    };

    public static JsonObject CoreVersions(string serverAddress) => new()
    {
        ["kind"] = "APIVersions",
        ["versions"] = new JsonArray("v1"),
        ["serverAddressByClientCIDRs"] = new JsonArray(new JsonObject { ["clientCIDR"] = "0.0.0.0/0", ["serverAddress"] = serverAddress }),
    };

    public static JsonObject GroupList(ResourceCatalog catalog) => new()
    {
        ["kind"] = "APIGroupList",
        ["apiVersion"] = "v1",
        ["groups"] = new JsonArray(catalog.Groups().Select(g => (JsonNode)Group(g.Group, g.Versions)).ToArray()),
    };

    public static JsonObject? GroupOf(ResourceCatalog catalog, string group)
    {
        var found = catalog.Groups().FirstOrDefault(g => g.Group == group);
        return found.Group is null ? null : Group(found.Group, found.Versions);
    }

    private static JsonObject Group(string name, IReadOnlyList<string> versions)
    {
        var result = new JsonObject
        {
            ["kind"] = "APIGroup",
            ["apiVersion"] = "v1",
            ["name"] = name,
            ["versions"] = new JsonArray(versions.Select(v => (JsonNode)new JsonObject { ["groupVersion"] = $"{name}/{v}", ["version"] = v }).ToArray()),
            ["preferredVersion"] = new JsonObject { ["groupVersion"] = $"{name}/{versions[0]}", ["version"] = versions[0] },
        };
        return result;
    }

    public static JsonObject? ResourceList(ResourceCatalog catalog, string group, string version)
    {
        var types = catalog.All.Where(t => t.Group == group && t.Version == version).ToList();
        if (types.Count == 0)
        {
            return null;
        }
        var resources = new JsonArray();
        foreach (var t in types)
        {
            var entry = new JsonObject
            {
                ["name"] = t.Plural,
                ["singularName"] = t.Singular,
                ["namespaced"] = t.Namespaced,
                ["kind"] = t.Kind,
                ["verbs"] = BuiltinResources.IsReview(t) ? new JsonArray("create") : AllVerbs.DeepClone(),
            };
            if (t.ShortNames.Count > 0)
            {
                entry["shortNames"] = new JsonArray(t.ShortNames.Select(s => (JsonNode)s).ToArray());
            }
            if (t.Categories.Count > 0)
            {
                entry["categories"] = new JsonArray(t.Categories.Select(s => (JsonNode)s).ToArray());
            }
            entry["storageVersionHash"] = Convert.ToBase64String(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(t.ToString())))[..11];
            resources.Add(entry);
            if (t.HasStatus)
            {
                resources.Add(Sub(t, "status", t.Kind, null, null, ["get", "patch", "update"]));
            }
            if (t.Scale is not null)
            {
                resources.Add(Sub(t, "scale", "Scale", "autoscaling", "v1", ["get", "patch", "update"]));
            }
            if (t == BuiltinResources.Pods)
            {
                resources.Add(Sub(t, "log", "Pod", null, null, ["get"]));
                resources.Add(Sub(t, "binding", "Binding", null, null, ["create"]));
                resources.Add(Sub(t, "eviction", "Eviction", "policy", "v1", ["create"]));
            }
        }
        return new JsonObject
        {
            ["kind"] = "APIResourceList",
            ["apiVersion"] = "v1",
            ["groupVersion"] = group.Length == 0 ? version : $"{group}/{version}",
            ["resources"] = resources,
        };
    }

    private static JsonObject Sub(ResourceType t, string sub, string kind, string? group, string? version, string[] verbs)
    {
        var entry = new JsonObject
        {
            ["name"] = $"{t.Plural}/{sub}",
            ["singularName"] = "",
            ["namespaced"] = t.Namespaced,
            ["kind"] = kind,
            ["verbs"] = new JsonArray(verbs.Select(v => (JsonNode)v).ToArray()),
        };
        if (group is not null)
        {
            entry["group"] = group;
            entry["version"] = version;
        }
        return entry;
    }
}

/// <summary>
/// OpenAPI v3 per group-version (/openapi/v3 and /openapi/v3/apis/{g}/{v}): a PATCH operation per resource that
/// advertises the <c>fieldValidation</c> parameter (so kubectl and helm validate on the server instead of
/// downloading OpenAPI v2), and the CRD schemas with <c>x-kubernetes-group-version-kind</c> for <c>kubectl explain</c>.
/// Strategic merge patch is deliberately not advertised: kubectl then computes it from its compiled-in types.
/// </summary>
internal static class OpenApi
{
    public static JsonObject Index(ResourceCatalog catalog)
    {
        var paths = new JsonObject();
        foreach (var gv in catalog.All.Select(t => (t.Group, t.Version)).Distinct())
        {
            var key = gv.Group.Length == 0 ? $"api/{gv.Version}" : $"apis/{gv.Group}/{gv.Version}";
            paths[key] = new JsonObject { ["serverRelativeURL"] = $"/openapi/v3/{key}?hash={Hash(catalog, gv.Group, gv.Version)}" };
        }
        return new JsonObject { ["paths"] = paths };
    }

    private static string Hash(ResourceCatalog catalog, string group, string version)
    {
        var text = string.Join("|", catalog.All.Where(t => t.Group == group && t.Version == version)
            .Select(t => $"{t.Plural}:{(t.Schema is null ? "" : KubernetesJson.Serialize(t.Schema))}:{t.Namespaced}"));
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(text)))[..32];
    }

    public static JsonObject? GroupVersion(ResourceCatalog catalog, string group, string version)
    {
        var types = catalog.All.Where(t => t.Group == group && t.Version == version).ToList();
        if (types.Count == 0)
        {
            return null;
        }
        var paths = new JsonObject();
        var schemas = new JsonObject();
        foreach (var t in types)
        {
            var schemaName = SchemaName(t);
            var gvk = new JsonObject { ["group"] = t.Group, ["version"] = t.Version, ["kind"] = t.Kind };
            var prefix = t.Group.Length == 0 ? $"/api/{t.Version}" : $"/apis/{t.Group}/{t.Version}";
            var path = t.Namespaced ? $"{prefix}/namespaces/{{namespace}}/{t.Plural}/{{name}}" : $"{prefix}/{t.Plural}/{{name}}";
            var reference = new JsonObject { ["$ref"] = $"#/components/schemas/{schemaName}" };
            paths[path] = new JsonObject
            {
                ["get"] = Operation($"read{t.Kind}", gvk, "get", reference, null),
                ["put"] = Operation($"replace{t.Kind}", gvk, "put", reference, new JsonObject { ["application/json"] = new JsonObject { ["schema"] = reference.DeepClone() } }),
                ["patch"] = Operation($"patch{t.Kind}", gvk, "patch", reference, new JsonObject
                {
                    ["application/json-patch+json"] = new JsonObject { ["schema"] = new JsonObject { ["type"] = "object" } },
                    ["application/merge-patch+json"] = new JsonObject { ["schema"] = new JsonObject { ["type"] = "object" } },
                    ["application/apply-patch+yaml"] = new JsonObject { ["schema"] = new JsonObject { ["type"] = "object" } },
                }),
            };
            var schema = t.Schema is not null
                ? JsonNode.Parse(KubernetesJson.Serialize(t.Schema))!.AsObject()
                : new JsonObject
                {
                    ["type"] = "object",
                    ["description"] = $"{t.Kind} (a built-in kind of the Lowbit embedded API server; schema not published).",
                    ["x-kubernetes-preserve-unknown-fields"] = true,
                };
            schema["x-kubernetes-group-version-kind"] = new JsonArray(gvk.DeepClone());
            if (schema["properties"] is JsonObject props)
            {
                props["apiVersion"] ??= new JsonObject { ["type"] = "string", ["description"] = "APIVersion defines the versioned schema of this representation of an object." };
                props["kind"] ??= new JsonObject { ["type"] = "string", ["description"] = "Kind is a string value representing the REST resource this object represents." };
                props["metadata"] = new JsonObject { ["type"] = "object", ["description"] = "Standard object's metadata." };
            }
            schemas[schemaName] = schema;
        }
        return new JsonObject
        {
            ["openapi"] = "3.0.0",
            ["info"] = new JsonObject { ["title"] = "Kubernetes", ["version"] = Discovery.KubernetesVersion },
            ["paths"] = paths,
            ["components"] = new JsonObject { ["schemas"] = schemas },
        };
    }

    private static JsonObject Operation(string id, JsonObject gvk, string action, JsonObject reference, JsonObject? content)
    {
        var parameters = new JsonArray(
            Param("dryRun"), Param("fieldManager"), Param("fieldValidation"), Param("pretty"));
        if (action == "patch")
        {
            parameters.Add(Param("force", "boolean"));
        }
        var op = new JsonObject
        {
            ["operationId"] = id,
            ["parameters"] = parameters,
            ["responses"] = new JsonObject
            {
                ["200"] = new JsonObject
                {
                    ["description"] = "OK",
                    ["content"] = new JsonObject { ["application/json"] = new JsonObject { ["schema"] = reference.DeepClone() } },
                },
            },
            ["x-kubernetes-action"] = action,
            ["x-kubernetes-group-version-kind"] = gvk.DeepClone(),
        };
        if (content is not null)
        {
            op["requestBody"] = new JsonObject { ["content"] = content, ["required"] = true };
        }
        return op;
    }

    private static JsonObject Param(string name, string type = "string") => new()
    {
        ["name"] = name,
        ["in"] = "query",
        ["schema"] = new JsonObject { ["type"] = type, ["uniqueItems"] = true },
    };

    private static string SchemaName(ResourceType t)
    {
        var group = t.Group.Length == 0 ? "io.k8s.api.core" : string.Join('.', t.Group.Split('.').Reverse());
        return $"{group}.{t.Version}.{t.Kind}";
    }
}
