using System.Globalization;
using System.Net;
using System.Text;
using k8s;
using k8s.Autorest;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// Raw REST calls through the Kubernetes client's own <see cref="HttpClient"/> (its TLS, credentials and handler
/// chain, including <see cref="ClientRetryHandler"/>), for what the generated API does not give generically:
/// list and watch of any kind with <c>resourceVersion</c>, <c>allowWatchBookmarks</c> and <c>timeoutSeconds</c>,
/// and the watch stream as raw lines so ERROR events and undecodable lines are seen rather than swallowed.
/// </summary>
public sealed class KubernetesRest
{
    private readonly Kubernetes _client;

    public KubernetesRest(IKubernetes client)
    {
        _client = client as Kubernetes
            ?? throw new ArgumentException("the runtime needs the k8s.Kubernetes client (its HttpClient and credentials)", nameof(client));
    }

    public IKubernetes Client => _client;

    /// <summary>Sends a GET for <paramref name="pathAndQuery"/> (relative to the API server) and returns once headers arrive.</summary>
    public async Task<HttpResponseMessage> GetAsync(string pathAndQuery, CancellationToken cancellationToken)
    {
        // Not disposed here: the response (read after this returns) still refers to it.
        var request = new HttpRequestMessage(HttpMethod.Get, new Uri(_client.BaseUri, pathAndQuery));
        if (_client.Credentials is { } credentials)
        {
            await credentials.ProcessHttpRequestAsync(request, cancellationToken).ConfigureAwait(false);
        }

        return await _client.HttpClient.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Throws <see cref="HttpOperationException"/> (the client's own exception type) for a non-success response.</summary>
    public static async Task EnsureSuccessAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(response);
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        var body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        throw new HttpOperationException(string.Create(CultureInfo.InvariantCulture, $"{response.RequestMessage?.Method} {response.RequestMessage?.RequestUri?.AbsolutePath} returned {(int)response.StatusCode} {response.StatusCode}"))
        {
            Response = new HttpResponseMessageWrapper(response, body),
        };
    }

    /// <summary>Builds <c>path?watch=true&amp;...</c> or a list query; null values are left out.</summary>
    public static string Query(string path, params (string Name, string? Value)[] parameters)
    {
        var builder = new StringBuilder(path);
        var separator = '?';
        foreach (var (name, value) in parameters)
        {
            if (value is null)
            {
                continue;
            }

            builder.Append(separator).Append(name).Append('=').Append(Uri.EscapeDataString(value));
            separator = '&';
        }

        return builder.ToString();
    }

    /// <summary>True for an HTTP 410 Gone from the client or our own raw calls.</summary>
    public static bool IsGone(Exception exception) =>
        exception is HttpOperationException { Response.StatusCode: HttpStatusCode.Gone };

    /// <summary>True for an HTTP 409 Conflict (optimistic-concurrency failure or AlreadyExists).</summary>
    public static bool IsConflict(Exception exception) =>
        exception is HttpOperationException { Response.StatusCode: HttpStatusCode.Conflict };
}
