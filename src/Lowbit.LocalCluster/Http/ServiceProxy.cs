using System.Globalization;
using k8s.Models;
using Lowbit.LocalCluster.Store;
using Microsoft.AspNetCore.Http;

namespace Lowbit.LocalCluster.Http;

/// <summary>
/// The API server's proxy subresource, as kube-apiserver serves it:
/// <c>/api/v1/namespaces/{ns}/services/{name}[:{port}]/proxy/{path}</c> forwards to a ready address of the Service's
/// Endpoints, <c>/api/v1/namespaces/{ns}/pods/{name}[:{port}]/proxy/{path}</c> to the pod's IP. Method, query, body and
/// headers (less the caller's credentials and hop-by-hop headers) pass through; the answer streams back as it comes,
/// so server-sent events (an OpenAI stream) arrive token by token. <c>kubectl get --raw</c> and
/// <c>curl -H "Authorization: Bearer …"</c> reach a pod's HTTP server this way without a port-forward.
/// </summary>
public sealed class ServiceProxy(ClusterApi api)
{
    private static readonly HttpClient Client = new(new SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = false })
    {
        Timeout = Timeout.InfiniteTimeSpan,
    };

    private static readonly HashSet<string> HopByHop = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
        "Authorization", "Host",
    };

    private int _next;

    public static bool IsProxy(string? subresource) => subresource is "proxy" || subresource?.StartsWith("proxy/", StringComparison.Ordinal) == true;

    public async Task<int> ForwardAsync(HttpContext context, ResourceType type, string ns, string nameAndPort, string subresource)
    {
        var (name, port) = Split(nameAndPort);
        var (host, targetPort) = type == BuiltinResources.Services ? ResolveService(ns, name, port) : ResolvePod(ns, name, port);
        var path = subresource.Length > "proxy".Length ? subresource["proxy".Length..] : "/";
        var uri = new Uri($"http://{host}:{targetPort.ToString(CultureInfo.InvariantCulture)}{path}{context.Request.QueryString}");
        using var request = new HttpRequestMessage(new HttpMethod(context.Request.Method), uri);
        if (context.Request.ContentLength is > 0 || context.Request.Headers.TransferEncoding.Count > 0)
        {
            request.Content = new StreamContent(context.Request.Body);
        }
        foreach (var (key, values) in context.Request.Headers)
        {
            if (HopByHop.Contains(key))
            {
                continue;
            }
            if (!request.Headers.TryAddWithoutValidation(key, values.ToArray()))
            {
                request.Content?.Headers.TryAddWithoutValidation(key, values.ToArray());
            }
        }
        HttpResponseMessage response;
        try
        {
            response = await Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, context.RequestAborted).ConfigureAwait(false);
        }
        catch (HttpRequestException ex)
        {
            throw new ApiException(503, "ServiceUnavailable", $"error trying to reach {type.Kind.ToLowerInvariant()} {ns}/{name} at {host}:{targetPort}: {ex.Message}");
        }
        using (response)
        {
            context.Response.StatusCode = (int)response.StatusCode;
            foreach (var (key, values) in response.Headers.Concat(response.Content.Headers))
            {
                if (!HopByHop.Contains(key))
                {
                    context.Response.Headers[key] = values.ToArray();
                }
            }
            await using var body = await response.Content.ReadAsStreamAsync(context.RequestAborted).ConfigureAwait(false);
            var buffer = new byte[16 * 1024];
            int read;
            while ((read = await body.ReadAsync(buffer, context.RequestAborted).ConfigureAwait(false)) > 0)
            {
                await context.Response.Body.WriteAsync(buffer.AsMemory(0, read), context.RequestAborted).ConfigureAwait(false);
                await context.Response.Body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
            }
            return (int)response.StatusCode;
        }
    }

    private static (string Name, string? Port) Split(string nameAndPort)
    {
        // kube-apiserver accepts name, name:port and scheme:name:port; only http is proxied here.
        var parts = nameAndPort.Split(':');
        return parts switch
        {
            [var n] => (n, null),
            [var n, var p] => (n, p.Length == 0 ? null : p),
            ["http", var n, var p] => (n, p.Length == 0 ? null : p),
            _ => throw new ApiException(400, "BadRequest", $"invalid proxy target \"{nameAndPort}\": expected name, name:port or http:name:port"),
        };
    }

    private (string Host, int Port) ResolveService(string ns, string name, string? port)
    {
        var endpoints = api.TryGet<V1Endpoints>(ns, name)
            ?? throw new ApiException(503, "ServiceUnavailable", $"no endpoints available for service \"{name}\"");
        var subsets = (endpoints.Subsets ?? []).Where(s => s.Addresses is { Count: > 0 }).ToList();
        var candidates = subsets
            .SelectMany(s => s.Addresses.SelectMany(a => (s.Ports ?? []).Where(p => port is null || p.Name == port || p.Port.ToString(CultureInfo.InvariantCulture) == port)
                .Select(p => (a.Ip, p.Port))))
            .ToList();
        if (candidates.Count == 0)
        {
            throw new ApiException(503, "ServiceUnavailable", port is null
                ? $"no endpoints available for service \"{name}\""
                : $"no endpoints available for service \"{name}\" on port \"{port}\"");
        }
        return candidates[(int)((uint)Interlocked.Increment(ref _next) % (uint)candidates.Count)];
    }

    private (string Host, int Port) ResolvePod(string ns, string name, string? port)
    {
        var pod = api.TryGet<V1Pod>(ns, name) ?? throw new ApiException(404, "NotFound", $"pods \"{name}\" not found");
        var ip = pod.Status?.PodIP ?? throw new ApiException(503, "ServiceUnavailable", $"pod {ns}/{name} has no IP yet");
        var ports = pod.Spec.Containers.SelectMany(c => c.Ports ?? []).ToList();
        int number;
        if (port is null)
        {
            number = ports.FirstOrDefault()?.ContainerPort ?? 80;
        }
        else if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out number))
        {
            number = ports.FirstOrDefault(p => p.Name == port)?.ContainerPort
                ?? throw new ApiException(400, "BadRequest", $"pod {ns}/{name} has no container port named \"{port}\"");
        }
        return (ip, number);
    }
}
