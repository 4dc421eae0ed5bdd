using System.Text.Json.Nodes;

namespace Lowbit.LocalCluster.Store;

/// <summary>One entry of a Status's <c>details.causes</c>: a Kubernetes cause type, a message and a field path.</summary>
public sealed record StatusCause(string Reason, string Message, string Field);

/// <summary>
/// A failed API call, carrying what a real API server puts in its <c>Status</c> object
/// (HTTP code, reason, details). The HTTP layer serializes it with <see cref="ToStatus"/>;
/// in-process callers catch it and inspect <see cref="Code"/> or <see cref="Reason"/>.
/// </summary>
public sealed class ApiException : Exception
{
    public ApiException(int code, string reason, string message, string? name = null, string? group = null, string? kind = null,
        IReadOnlyList<StatusCause>? causes = null)
        : base(message)
    {
        Code = code;
        Reason = reason;
        Name = name;
        Group = group;
        Kind = kind;
        Causes = causes ?? [];
    }

    public int Code { get; }

    /// <summary>The Status reason: NotFound, AlreadyExists, Conflict, Invalid, Gone, BadRequest, ...</summary>
    public string Reason { get; }

    public string? Name { get; }

    public string? Group { get; }

    public string? Kind { get; }

    public IReadOnlyList<StatusCause> Causes { get; }

    /// <summary>Seconds for a Retry-After header (429 and some 5xx).</summary>
    public int? RetryAfterSeconds { get; init; }

    public JsonObject ToStatus()
    {
        var status = new JsonObject
        {
            ["kind"] = "Status",
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject(),
            ["status"] = "Failure",
            ["message"] = Message,
            ["reason"] = Reason,
        };
        if (Name is not null || Kind is not null || Causes.Count > 0 || RetryAfterSeconds is not null)
        {
            var details = new JsonObject();
            if (Name is not null)
            {
                details["name"] = Name;
            }
            if (Group is not null)
            {
                details["group"] = Group;
            }
            if (Kind is not null)
            {
                details["kind"] = Kind;
            }
            if (Causes.Count > 0)
            {
                details["causes"] = new JsonArray(Causes.Select(c => (JsonNode)new JsonObject
                {
                    ["reason"] = c.Reason,
                    ["message"] = c.Message,
                    ["field"] = c.Field,
                }).ToArray());
            }
            if (RetryAfterSeconds is { } retry)
            {
                details["retryAfterSeconds"] = retry;
            }
            status["details"] = details;
        }
        status["code"] = Code;
        return status;
    }

    public static ApiException NotFound(ResourceType type, string name) =>
        new(404, "NotFound", $"{type.GroupResource} \"{name}\" not found", name, type.Group, type.Plural);

    public static ApiException AlreadyExists(ResourceType type, string name) =>
        new(409, "AlreadyExists", $"{type.GroupResource} \"{name}\" already exists", name, type.Group, type.Plural);

    public static ApiException Conflict(ResourceType type, string name, string why) =>
        new(409, "Conflict", $"Operation cannot be fulfilled on {type.GroupResource} \"{name}\": {why}", name, type.Group, type.Plural);

    public static ApiException StaleResourceVersion(ResourceType type, string name) =>
        Conflict(type, name, "the object has been modified; please apply your changes to the latest version and try again");

    public static ApiException Invalid(ResourceType type, string name, IReadOnlyList<StatusCause> causes)
    {
        var list = string.Join(", ", causes.Select(c => $"{c.Field}: {c.Message}"));
        var kindGroup = type.Group.Length == 0 ? type.Kind : $"{type.Kind}.{type.Group}";
        return new(422, "Invalid", $"{kindGroup} \"{name}\" is invalid: {(causes.Count == 1 ? list : $"[{list}]")}", name, type.Group, type.Kind, causes);
    }

    public static ApiException BadRequest(string message) => new(400, "BadRequest", message);

    public static ApiException Gone(string message) => new(410, "Expired", message);

    public static ApiException Forbidden(ResourceType type, string name, string why) =>
        new(403, "Forbidden", $"{type.GroupResource} \"{name}\" is forbidden: {why}", name, type.Group, type.Plural);

    public static ApiException MethodNotSupported(ResourceType type, string verb) =>
        new(405, "MethodNotAllowed", $"{verb} is not supported on resources of kind \"{type.GroupResource}\"", group: type.Group, kind: type.Plural);

    public static ApiException UnsupportedMediaType(string contentType) =>
        new(415, "UnsupportedMediaType", $"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got \"{contentType}\"");
}
