using System.Globalization;
using System.Net;
using System.Text;
using k8s;
using k8s.Autorest;
using k8s.Models;

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

    /// <summary>
    /// Server-side apply of <paramref name="desired"/> (any kind, built-in or ours) as <paramref name="fieldManager"/>:
    /// <c>PATCH application/apply-patch+yaml</c> with <c>force</c>. Send only the fields you own. With
    /// <paramref name="subresource"/> <c>"status"</c> it applies the status (spec is ignored by the server there).
    /// A 409 (conflict with another manager when not forced) surfaces as <see cref="HttpOperationException"/>,
    /// which the controller turns into a requeue.
    /// </summary>
    public async Task<T> ApplyAsync<T>(T desired, string fieldManager, string? subresource = null, bool force = true, CancellationToken cancellationToken = default)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        ArgumentNullException.ThrowIfNull(desired);
        ArgumentException.ThrowIfNullOrEmpty(fieldManager);
        var type = ResourceType.For<T>();
        desired.ApiVersion ??= type.ApiVersion;
        desired.Kind ??= type.Kind;
        var meta = desired.Metadata ?? throw new ArgumentException("desired object has no metadata", nameof(desired));
        var path = Query(
            type.ItemPath(string.IsNullOrEmpty(meta.NamespaceProperty) ? null : meta.NamespaceProperty, meta.Name, subresource),
            ("fieldManager", fieldManager),
            ("force", force ? "true" : null));
        using var content = new StringContent(KubernetesJson.Serialize(desired), Encoding.UTF8);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/apply-patch+yaml");
        using var response = await SendAsync(HttpMethod.Patch, path, content, cancellationToken).ConfigureAwait(false);
        await EnsureSuccessAsync(response, cancellationToken).ConfigureAwait(false);
        var body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        return KubernetesJson.Deserialize<T>(body);
    }

    /// <summary>Sends one request (bounded by the client's HttpClientTimeout) and returns the buffered response.</summary>
    public async Task<HttpResponseMessage> SendAsync(HttpMethod method, string pathAndQuery, HttpContent? content, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_client.HttpClientTimeout);
        var request = new HttpRequestMessage(method, new Uri(_client.BaseUri, pathAndQuery)) { Content = content };
        if (_client.Credentials is { } credentials)
        {
            await credentials.ProcessHttpRequestAsync(request, timeout.Token).ConfigureAwait(false);
        }

        return await _client.HttpClient.SendAsync(request, HttpCompletionOption.ResponseContentRead, timeout.Token).ConfigureAwait(false);
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

    /// <summary>
    /// True for an HTTP 404 whose Status names object <paramref name="name"/> of <paramref name="type"/> (the API
    /// server's NotFound details carry the name, the group and, in <c>kind</c>, the resource plural), not some other
    /// object a reconcile happened to read.
    /// </summary>
    public static bool IsNotFound(Exception exception, ResourceType type, string name)
    {
        ArgumentNullException.ThrowIfNull(type);
        if (exception is not HttpOperationException { Response: { StatusCode: HttpStatusCode.NotFound, Content: { Length: > 0 } body } })
        {
            return false;
        }

        try
        {
            var details = KubernetesJson.Deserialize<V1Status>(body)?.Details;
            return details?.Name == name && (details.Group ?? string.Empty) == type.Group && details.Kind == type.Plural;
        }
        catch (System.Text.Json.JsonException)
        {
            return false;
        }
    }

    /// <summary>True for an HTTP 409 Conflict (optimistic-concurrency failure or AlreadyExists).</summary>
    public static bool IsConflict(Exception exception) =>
        exception is HttpOperationException { Response.StatusCode: HttpStatusCode.Conflict };
}
