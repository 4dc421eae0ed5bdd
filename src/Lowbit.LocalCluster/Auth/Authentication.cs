using System.Collections.Concurrent;
using System.Security.Cryptography;

namespace Lowbit.LocalCluster.Auth;

/// <summary>An authenticated user as TokenReview reports it (authentication.k8s.io/v1 UserInfo).</summary>
public sealed record UserInfo
{
    public required string Username { get; init; }

    public string Uid { get; init; } = "";

    public IReadOnlyList<string> Groups { get; init; } = [];
}

/// <summary>
/// The bearer tokens the embedded server knows, for TokenReview: the kubeconfig's token (an administrator in
/// <c>system:masters</c>) and tokens issued for service accounts or users with <see cref="Register"/> and
/// <see cref="IssueServiceAccountToken"/> (the local executor issues one per executed pod). The server accepts requests
/// with any of these tokens and authorizes them with <see cref="RbacAuthorizer"/> (the administrator is in system:masters).
/// </summary>
public sealed class TokenAuthenticator
{
    public const string AdminUser = "lowbit-admin";

    private readonly ConcurrentDictionary<string, UserInfo> _tokens = new(StringComparer.Ordinal);

    public void Register(string token, UserInfo user)
    {
        ArgumentException.ThrowIfNullOrEmpty(token);
        ArgumentNullException.ThrowIfNull(user);
        _tokens[token] = user;
    }

    /// <summary>A new token for <c>system:serviceaccount:&lt;ns&gt;:&lt;name&gt;</c> with the groups a real API server gives it.</summary>
    public string IssueServiceAccountToken(string ns, string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(ns);
        ArgumentException.ThrowIfNullOrEmpty(name);
        var token = Convert.ToHexString(RandomNumberGenerator.GetBytes(24)).ToLowerInvariant();
        Register(token, new UserInfo
        {
            Username = $"system:serviceaccount:{ns}:{name}",
            Uid = Guid.NewGuid().ToString(),
            Groups = ["system:serviceaccounts", $"system:serviceaccounts:{ns}", "system:authenticated"],
        });
        return token;
    }

    /// <summary>Forgets a token (its pod is gone): TokenReview no longer authenticates it and the server refuses it.</summary>
    public void Revoke(string token) => _tokens.TryRemove(token, out _);

    public UserInfo? Authenticate(string? token) => token is { Length: > 0 } && _tokens.TryGetValue(token, out var user) ? user : null;
}
