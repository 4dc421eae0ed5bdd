using System.Net;
using System.Security.Cryptography;
using System.Text;
using k8s;
using Lowbit.LocalCluster.Http;
using Lowbit.LocalCluster.Security;
using Lowbit.LocalCluster.Store;
using Lowbit.LocalCluster.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster;

/// <summary>Settings of <see cref="LocalClusterServer"/>.</summary>
public sealed record LocalClusterOptions
{
    /// <summary>TCP port on 127.0.0.1; 0 picks a free one.</summary>
    public int Port { get; init; }

    /// <summary>Where state (snapshot, CA) lives; null keeps everything in memory (a restart then starts empty).</summary>
    public string? StateDirectory { get; init; }

    /// <summary>Where to write the kubeconfig; null writes <c>kubeconfig</c> in the state directory (or a temp folder).</summary>
    public string? KubeconfigPath { get; init; }

    /// <summary>Serve HTTPS (HTTP/1.1 and HTTP/2) with the generated CA; false serves plain HTTP/1.1.</summary>
    public bool Https { get; init; } = true;

    /// <summary>Interval of periodic snapshots when a state directory is set (also saved on stop).</summary>
    public TimeSpan SnapshotInterval { get; init; } = TimeSpan.FromSeconds(30);

    public ClusterApiOptions Store { get; init; } = new();

    public TimeProvider Time { get; init; } = TimeProvider.System;

    public ILoggerFactory? LoggerFactory { get; init; }
}

/// <summary>
/// The embedded Kubernetes-compatible API server: Kestrel on 127.0.0.1 in front of a <see cref="ClusterApi"/>,
/// with a kubeconfig for kubectl, helm and KubernetesClient. Tests use <see cref="Faults"/> and
/// <see cref="Journal"/>; controllers in the same process use <see cref="Api"/> directly.
/// </summary>
public sealed partial class LocalClusterServer : IAsyncDisposable
{
    private readonly LocalClusterOptions _options;
    private readonly string _stateDirectory;
    private readonly bool _ownsStateDirectory;
    private WebApplication? _app;
    private ClusterCertificates? _certificates;
    private ITimer? _snapshotTimer;
    private readonly ILogger _logger;

    private LocalClusterServer(LocalClusterOptions options)
    {
        _options = options;
        _ownsStateDirectory = options.StateDirectory is null;
        _stateDirectory = options.StateDirectory ?? Directory.CreateTempSubdirectory("lowbit-cluster-").FullName;
        KubeconfigPath = Path.GetFullPath(options.KubeconfigPath ?? Path.Combine(_stateDirectory, "kubeconfig"));
        Token = options.StateDirectory is null ? NewToken() : PersistentToken(_stateDirectory);
        Tokens.Register(Token, new Auth.UserInfo { Username = Auth.TokenAuthenticator.AdminUser, Groups = ["system:masters", "system:authenticated"] });
        Api = null!;
        _logger = (options.LoggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance).CreateLogger<LocalClusterServer>();
    }

    /// <summary>The store with API semantics (replaced by a restored one on <see cref="RestartAsync"/>).</summary>
    public ClusterApi Api { get; private set; }

    /// <summary>Raised after a restart with the new <see cref="Api"/> (in-process controllers re-attach to it).</summary>
    public event Action<ClusterApi>? ApiReplaced;

    public FaultInjector Faults { get; } = new();

    public RequestJournal Journal { get; } = new();

    /// <summary>Container logs served by <c>pods/{name}/log</c>.</summary>
    public PodLogStore Logs { get; } = new();

    public int Port { get; private set; }

    public Uri Url => new($"{(_options.Https ? "https" : "http")}://127.0.0.1:{Port}");

    public string KubeconfigPath { get; }

    /// <summary>The bearer token written into the kubeconfig; every request but /version, /healthz, /livez and /readyz
    /// must carry it (401 otherwise). With a state directory it is kept there (mode 0600), so a restarted server
    /// accepts the kubeconfig clients already hold.</summary>
    public string Token { get; }

    /// <summary>The tokens TokenReview authenticates: <see cref="Token"/> as an administrator, plus those issued by tests.</summary>
    public Auth.TokenAuthenticator Tokens { get; } = new();

    /// <summary>The CA certificate (PEM) clients trust; null over plain HTTP.</summary>
    public string? CaPem => _certificates?.AuthorityPem;

    public static async Task<LocalClusterServer> StartAsync(LocalClusterOptions? options = null, CancellationToken cancellationToken = default)
    {
        var server = new LocalClusterServer(options ?? new LocalClusterOptions());
        await server.StartCoreAsync(server._options.Port, cancellationToken).ConfigureAwait(false);
        return server;
    }

    /// <summary>A KubernetesClient for this server, from the written kubeconfig.</summary>
    public Kubernetes CreateClient() => new(KubernetesClientConfiguration.BuildConfigFromConfigFile(KubeconfigPath));

    /// <summary>Writes the state snapshot now.</summary>
    public void SaveState() => StateSnapshot.Save(Api, _stateDirectory);

    /// <summary>Stops and starts again on the same port, restoring the saved state (watches end; clients reconnect).</summary>
    public async Task RestartAsync(CancellationToken cancellationToken = default)
    {
        await StopCoreAsync().ConfigureAwait(false);
        await StartCoreAsync(Port, cancellationToken).ConfigureAwait(false);
        ApiReplaced?.Invoke(Api);
    }

    private async Task StartCoreAsync(int port, CancellationToken cancellationToken)
    {
        Api = new ClusterApi(_options.Store, _options.Time, _stateDirectory);
        if (_options.Https)
        {
            _certificates ??= ClusterCertificates.Create(_stateDirectory, _options.Time);
        }
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        if (_options.LoggerFactory is not null)
        {
            builder.Services.AddSingleton(_options.LoggerFactory);
        }
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = 64 * 1024 * 1024;
            kestrel.Limits.Http2.MaxStreamsPerConnection = 1000;
            kestrel.Listen(IPAddress.Loopback, port, listen =>
            {
                if (_certificates is not null)
                {
                    listen.Protocols = HttpProtocols.Http1AndHttp2;
                    listen.UseHttps(new HttpsConnectionAdapterOptions
                    {
                        ServerCertificate = _certificates.Server,
                        ClientCertificateMode = ClientCertificateMode.AllowCertificate,
                        ClientCertificateValidation = (_, _, _) => true,
                    });
                }
                else
                {
                    listen.Protocols = HttpProtocols.Http1;
                }
            });
        });
        var app = builder.Build();
        var handler = new ApiRequestHandler(Api, Faults, Journal, Logs, () => $"127.0.0.1:{Port}")
        {
            Tokens = Tokens,
            OnInternalError = ex => Log.InternalError(_logger, ex),
        };
        app.Run(context => Authorized(context.Request) ? handler.HandleAsync(context) : UnauthorizedAsync(context));
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        _app = app;
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Port = new Uri(address).Port;
        Kubeconfig.Write(KubeconfigPath, Url.ToString().TrimEnd('/'), CaPem ?? "", Token);
        if (_options.StateDirectory is not null && _options.SnapshotInterval > TimeSpan.Zero)
        {
            _snapshotTimer = _options.Time.CreateTimer(_ => SnapshotQuietly(), null, _options.SnapshotInterval, _options.SnapshotInterval);
        }
        Log.Serving(_logger, Url, KubeconfigPath);
    }

    /// <summary>Closes every open watch (clients see the stream end and resume), as an apiserver restart does.</summary>
    public void DropAllWatches() => Api.CloseAllWatches();

    private static readonly string[] PublicPaths = ["/version", "/healthz", "/livez", "/readyz"];

    private bool Authorized(HttpRequest request)
    {
        var path = request.Path.Value ?? "/";
        if (PublicPaths.Any(p => path == p || path.StartsWith(p + "/", StringComparison.Ordinal)))
        {
            return true;
        }
        var header = request.Headers.Authorization.ToString();
        const string bearer = "Bearer ";
        if (!header.StartsWith(bearer, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        var token = header[bearer.Length..].Trim();
        // The kubeconfig's token, or one issued to a service account (the executor gives one to each executed pod).
        return CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(token), Encoding.UTF8.GetBytes(Token))
            || Tokens.Authenticate(token) is not null;
    }

    private static Task UnauthorizedAsync(HttpContext context)
    {
        context.Response.StatusCode = StatusCodes.Status401Unauthorized;
        context.Response.ContentType = "application/json";
        return context.Response.WriteAsync("""{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}""");
    }

    private static string NewToken() => Convert.ToHexString(RandomNumberGenerator.GetBytes(16)).ToLowerInvariant();

    private static string PersistentToken(string directory)
    {
        var path = Path.Combine(directory, "token");
        if (File.Exists(path) && File.ReadAllText(path).Trim() is { Length: >= 32 } existing)
        {
            return existing;
        }
        Directory.CreateDirectory(directory);
        var token = NewToken();
        PrivateFiles.WriteAllText(path, token);
        return token;
    }

    private void SnapshotQuietly()
    {
        try
        {
            SaveState();
        }
        catch (IOException ex)
        {
            Log.SnapshotFailed(_logger, ex);
        }
    }

    private async Task StopCoreAsync()
    {
        if (_snapshotTimer is not null)
        {
            await _snapshotTimer.DisposeAsync().ConfigureAwait(false);
            _snapshotTimer = null;
        }
        if (_app is null)
        {
            return;
        }
        Api.CloseAllWatches();
        SaveState();
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        {
            await _app.StopAsync(timeout.Token).ConfigureAwait(false);
        }
        await _app.DisposeAsync().ConfigureAwait(false);
        Api.GarbageCollector.Dispose();
        _app = null;
    }

    /// <summary>Stops serving and saves the state snapshot.</summary>
    public Task StopAsync() => StopCoreAsync();

    public async ValueTask DisposeAsync()
    {
        await StopCoreAsync().ConfigureAwait(false);
        _certificates?.Dispose();
        if (_ownsStateDirectory)
        {
            try
            {
                Directory.Delete(_stateDirectory, recursive: true);
            }
            catch (IOException)
            {
                // Best effort cleanup of a temporary folder.
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "embedded API server serving at {Url}; kubeconfig {Kubeconfig}")]
        public static partial void Serving(ILogger logger, Uri url, string kubeconfig);

        [LoggerMessage(Level = LogLevel.Error, Message = "request failed with an internal error")]
        public static partial void InternalError(ILogger logger, Exception exception);

        [LoggerMessage(Level = LogLevel.Warning, Message = "state snapshot failed")]
        public static partial void SnapshotFailed(ILogger logger, Exception exception);
    }
}
