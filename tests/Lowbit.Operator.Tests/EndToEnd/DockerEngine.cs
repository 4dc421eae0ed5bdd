using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Lowbit.Operator.Tests.EndToEnd;

/// <summary>
/// Whether a Docker engine answers: DOCKER_HOST (unix:// or tcp://) or /var/run/docker.sock, then <c>GET /_ping</c>
/// with a 2 s budget. Checked once per test run; <see cref="Unreachable"/> is the reason to skip, or null.
/// </summary>
internal static class DockerEngine
{
    private const string DefaultSocket = "/var/run/docker.sock";
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(2);
    private static readonly Lazy<string?> Reason = new(Probe);

    /// <summary>Why no engine is usable (naming what was checked), or null when <c>/_ping</c> answered OK.</summary>
    public static string? Unreachable => Reason.Value;

    private static string? Probe()
    {
        var host = Environment.GetEnvironmentVariable("DOCKER_HOST");
        var target = string.IsNullOrWhiteSpace(host) ? "unix://" + DefaultSocket : host.Trim();
        var hint = "; run `make test-k3s` on a machine with Docker";
        EndPoint endpoint;
        if (target.StartsWith("unix://", StringComparison.Ordinal))
        {
            var path = target["unix://".Length..];
            if (!File.Exists(path))
            {
                return $"no Docker engine reachable ({path} missing{(host is null ? ", DOCKER_HOST unset" : "")}){hint}";
            }

            endpoint = new UnixDomainSocketEndPoint(path);
        }
        else if (target.StartsWith("tcp://", StringComparison.Ordinal) && Uri.TryCreate(target, UriKind.Absolute, out var uri))
        {
            endpoint = new DnsEndPoint(uri.Host, uri.Port < 0 ? 2375 : uri.Port);
        }
        else
        {
            return $"no Docker engine reachable (DOCKER_HOST={target}: only unix:// and tcp:// are probed){hint}";
        }

        try
        {
            using var cts = new CancellationTokenSource(Budget);
            using var socket = endpoint is UnixDomainSocketEndPoint
                ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
                : new Socket(SocketType.Stream, ProtocolType.Tcp);
            socket.ConnectAsync(endpoint, cts.Token).AsTask().GetAwaiter().GetResult();
            socket.SendAsync(Encoding.ASCII.GetBytes("GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"), SocketFlags.None, cts.Token).AsTask().GetAwaiter().GetResult();
            var buffer = new byte[512];
            var read = socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token).AsTask().GetAwaiter().GetResult();
            var answer = Encoding.ASCII.GetString(buffer, 0, read);
            return answer.StartsWith("HTTP/1.", StringComparison.Ordinal) && answer.Contains(" 200 ", StringComparison.Ordinal)
                ? null
                : $"no Docker engine reachable ({target} answered /_ping with '{answer.Split('\r')[0]}'){hint}";
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or IOException)
        {
            return $"no Docker engine reachable ({target}: /_ping failed within {Budget.TotalSeconds:0} s: {ex.Message}){hint}";
        }
    }
}

/// <summary>A fact that runs only when a Docker engine answers; otherwise it is reported as skipped with the reason.</summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false)]
public sealed class K3sFactAttribute : FactAttribute
{
    public K3sFactAttribute()
    {
        if (DockerEngine.Unreachable is { } reason)
        {
            Skip = reason;
        }
    }
}
