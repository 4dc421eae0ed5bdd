using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Auth;

/// <summary>What a request does, as SubjectAccessReview's resourceAttributes or nonResourceAttributes give it.</summary>
public sealed record AccessAttributes
{
    public required string Verb { get; init; }

    public string Group { get; init; } = "";

    public string? Resource { get; init; }

    public string Subresource { get; init; } = "";

    public string Namespace { get; init; } = "";

    public string Name { get; init; } = "";

    /// <summary>Set for a non-resource request (e.g. <c>/metrics</c>); then the resource fields are ignored.</summary>
    public string? Path { get; init; }
}

/// <summary>
/// Kubernetes RBAC over the stored Roles, ClusterRoles and their bindings, as the RBAC authorizer documents it
/// (https://kubernetes.io/docs/reference/access-authn-authz/rbac/): <c>system:masters</c> may do everything;
/// otherwise a ClusterRoleBinding grants its ClusterRole everywhere (non-resource URLs included) and a RoleBinding
/// grants its Role or ClusterRole inside its namespace. Rules match verbs, API groups, resources (<c>res/sub</c> for
/// a subresource), resourceNames and non-resource URLs (a trailing <c>*</c> is a prefix), with <c>*</c> as a wildcard.
/// Aggregated ClusterRoles are not expanded.
/// </summary>
public static class RbacAuthorizer
{
    public static (bool Allowed, string Reason) Authorize(ClusterApi api, UserInfo user, AccessAttributes request)
    {
        ArgumentNullException.ThrowIfNull(api);
        ArgumentNullException.ThrowIfNull(user);
        ArgumentNullException.ThrowIfNull(request);
        if (user.Groups.Contains("system:masters"))
        {
            return (true, "system:masters");
        }

        foreach (var binding in api.List(BuiltinResources.ClusterRoleBindings, null).Items.Select(i => i.ToJsonObject()))
        {
            if (Binds(binding, user, null) && RoleRules(api, binding, null).Any(rule => Matches(rule, request)))
            {
                return (true, $"RBAC: allowed by ClusterRoleBinding \"{binding["metadata"]?["name"]}\"");
            }
        }

        if (request.Path is null && request.Namespace.Length > 0)
        {
            foreach (var binding in api.List(BuiltinResources.RoleBindings, request.Namespace).Items.Select(i => i.ToJsonObject()))
            {
                if (Binds(binding, user, request.Namespace) && RoleRules(api, binding, request.Namespace).Any(rule => Matches(rule, request)))
                {
                    return (true, $"RBAC: allowed by RoleBinding \"{binding["metadata"]?["name"]}/{request.Namespace}\"");
                }
            }
        }

        return (false, "");
    }

    private static bool Binds(JsonObject binding, UserInfo user, string? bindingNamespace)
    {
        foreach (var subject in binding["subjects"] as JsonArray ?? [])
        {
            var kind = (string?)subject?["kind"];
            var name = (string?)subject?["name"];
            var matched = kind switch
            {
                "User" => name == user.Username,
                "Group" => name is not null && user.Groups.Contains(name),
                "ServiceAccount" => user.Username == $"system:serviceaccount:{(string?)subject?["namespace"] ?? bindingNamespace}:{name}",
                _ => false,
            };
            if (matched)
            {
                return true;
            }
        }

        return false;
    }

    private static IEnumerable<JsonObject> RoleRules(ClusterApi api, JsonObject binding, string? ns)
    {
        var kind = (string?)binding["roleRef"]?["kind"];
        var name = (string?)binding["roleRef"]?["name"];
        if (name is null)
        {
            return [];
        }

        var role = kind switch
        {
            "ClusterRole" => api.TryGet(BuiltinResources.ClusterRoles, null, name),
            "Role" when ns is not null => api.TryGet(BuiltinResources.Roles, ns, name),
            _ => null,
        };
        return (role?["rules"] as JsonArray ?? []).OfType<JsonObject>();
    }

    private static bool Matches(JsonObject rule, AccessAttributes request)
    {
        if (!AnyOf(rule["verbs"], request.Verb))
        {
            return false;
        }

        if (request.Path is not null)
        {
            return (rule["nonResourceURLs"] as JsonArray ?? []).Select(u => (string?)u).Any(u =>
                u == "*" || u == request.Path || (u is { Length: > 0 } && u.EndsWith('*') && request.Path.StartsWith(u[..^1], StringComparison.Ordinal)));
        }

        var resource = request.Subresource.Length > 0 ? $"{request.Resource}/{request.Subresource}" : request.Resource ?? "";
        if (!AnyOf(rule["apiGroups"], request.Group) || !(AnyOf(rule["resources"], resource)
            || (request.Subresource.Length > 0 && AnyOf(rule["resources"], $"*/{request.Subresource}"))))
        {
            return false;
        }

        var names = (rule["resourceNames"] as JsonArray ?? []).Select(n => (string?)n).ToList();
        return names.Count == 0 || names.Contains(request.Name);
    }

    private static bool AnyOf(JsonNode? list, string value) =>
        (list as JsonArray ?? []).Select(v => (string?)v).Any(v => v == "*" || v == value);
}
