using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Auth;

/// <summary>
/// <c>POST /apis/authentication.k8s.io/v1/tokenreviews</c> and <c>POST /apis/authorization.k8s.io/v1/subjectaccessreviews</c>:
/// the request object comes back with its <c>status</c> filled (TokenReview from <see cref="TokenAuthenticator"/>,
/// SubjectAccessReview from <see cref="RbacAuthorizer"/>), as the real API server answers; nothing is stored.
/// </summary>
public static class AccessReviews
{
    public static JsonObject Answer(ResourceType type, JsonObject review, ClusterApi api, TokenAuthenticator tokens)
    {
        ArgumentNullException.ThrowIfNull(type);
        ArgumentNullException.ThrowIfNull(review);
        ArgumentNullException.ThrowIfNull(tokens);
        var spec = review["spec"] as JsonObject ?? throw new ApiException(422, "Invalid", $"{type.Kind}.spec: Required value");
        var answer = review.DeepClone().AsObject();
        answer["apiVersion"] = type.ApiVersion;
        answer["kind"] = type.Kind;
        answer["metadata"] ??= new JsonObject();
        answer["status"] = type == BuiltinResources.TokenReviews ? TokenStatus(spec, tokens) : AccessStatus(type, spec, api);
        return answer;
    }

    private static JsonObject TokenStatus(JsonObject spec, TokenAuthenticator tokens)
    {
        var token = (string?)spec["token"];
        if (string.IsNullOrEmpty(token))
        {
            throw new ApiException(422, "Invalid", "TokenReview.spec.token: Required value");
        }

        if (tokens.Authenticate(token) is not { } user)
        {
            return new JsonObject { ["authenticated"] = false, ["error"] = "invalid bearer token" };
        }

        return new JsonObject
        {
            ["authenticated"] = true,
            ["user"] = new JsonObject
            {
                ["username"] = user.Username,
                ["uid"] = user.Uid,
                ["groups"] = new JsonArray([.. user.Groups.Select(g => (JsonNode?)g)]),
            },
            ["audiences"] = spec["audiences"]?.DeepClone() ?? new JsonArray("https://kubernetes.default.svc"),
        };
    }

    private static JsonObject AccessStatus(ResourceType type, JsonObject spec, ClusterApi api)
    {
        var user = (string?)spec["user"] ?? "";
        var groups = (spec["groups"] as JsonArray ?? []).Select(g => (string?)g ?? "").ToList();
        if (user.Length == 0 && groups.Count == 0)
        {
            throw new ApiException(422, "Invalid", $"{type.Kind}.spec.user: at least one of user or group must be specified");
        }

        AccessAttributes attributes;
        if (spec["nonResourceAttributes"] is JsonObject nonResource)
        {
            attributes = new AccessAttributes { Verb = (string?)nonResource["verb"] ?? "", Path = (string?)nonResource["path"] ?? "" };
        }
        else if (spec["resourceAttributes"] is JsonObject resource)
        {
            attributes = new AccessAttributes
            {
                Verb = (string?)resource["verb"] ?? "",
                Group = (string?)resource["group"] ?? "",
                Resource = (string?)resource["resource"] ?? "",
                Subresource = (string?)resource["subresource"] ?? "",
                Namespace = (string?)resource["namespace"] ?? "",
                Name = (string?)resource["name"] ?? "",
            };
        }
        else
        {
            throw new ApiException(422, "Invalid", $"{type.Kind}.spec: exactly one of nonResourceAttributes or resourceAttributes must be specified");
        }

        var (allowed, reason) = RbacAuthorizer.Authorize(api, new UserInfo { Username = user, Uid = (string?)spec["uid"] ?? "", Groups = groups }, attributes);
        var status = new JsonObject { ["allowed"] = allowed };
        if (reason.Length > 0)
        {
            status["reason"] = reason;
        }

        return status;
    }
}
