using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using k8s;
using k8s.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// How <c>/metrics</c> is served: configuration section <c>Operator:Metrics</c>.
/// <list type="bullet">
/// <item><c>shared</c> (the default for in-process use and <c>lowbit local up</c>): on the <c>--urls</c> listener with the probes, no authentication.</item>
/// <item><c>secure</c> (the Helm chart's default): HTTPS on <see cref="Port"/>, every request needs a bearer token that the API server
/// authenticates (TokenReview) and authorizes for <c>get</c> on the non-resource URL <c>/metrics</c> (SubjectAccessReview),
/// as controller-runtime's secure metrics server does; the probes stay on <c>--urls</c>.</item>
/// <item><c>localhost</c>: plain HTTP on 127.0.0.1:<see cref="Port"/> only (a sidecar or <c>kubectl port-forward</c> reads it).</item>
/// </list>
/// </summary>
public sealed class MetricsServingOptions
{
    public const string Section = "Operator:Metrics";

    public const string Shared = "shared";
    public const string Secure = "secure";
    public const string Localhost = "localhost";

    public string Mode { get; set; } = Shared;

    /// <summary>Port of the metrics listener in modes secure and localhost (0: any free port).</summary>
    public int Port { get; set; } = 8443;

    /// <summary>PEM certificate for HTTPS (with <see cref="KeyFile"/>); empty: a self-signed certificate made at start.</summary>
    public string? CertFile { get; set; }

    public string? KeyFile { get; set; }

    /// <summary>How long an authentication/authorization answer is reused for the same token.</summary>
    public TimeSpan AuthCacheTtl { get; set; } = TimeSpan.FromMinutes(1);
}

/// <summary>Rejects metrics settings that cannot work, naming the field.</summary>
public sealed class MetricsServingOptionsValidator : IValidateOptions<MetricsServingOptions>
{
    public ValidateOptionsResult Validate(string? name, MetricsServingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        if (options.Mode is not (MetricsServingOptions.Shared or MetricsServingOptions.Secure or MetricsServingOptions.Localhost))
        {
            errors.Add($"{MetricsServingOptions.Section}:Mode must be one of shared, secure, localhost (got '{options.Mode}')");
        }

        if (options.Port is < 0 or > 65535)
        {
            errors.Add($"{MetricsServingOptions.Section}:Port must be between 0 and 65535 (got {options.Port})");
        }

        if (string.IsNullOrEmpty(options.CertFile) != string.IsNullOrEmpty(options.KeyFile))
        {
            errors.Add($"{MetricsServingOptions.Section}:CertFile and KeyFile go together (got only one)");
        }

        foreach (var (field, path) in new[] { ("CertFile", options.CertFile), ("KeyFile", options.KeyFile) })
        {
            if (!string.IsNullOrEmpty(path) && !File.Exists(path))
            {
                errors.Add($"{MetricsServingOptions.Section}:{field}: '{path}' does not exist");
            }
        }

        if (options.AuthCacheTtl < TimeSpan.Zero)
        {
            errors.Add($"{MetricsServingOptions.Section}:AuthCacheTtl must not be negative (got {options.AuthCacheTtl})");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>Wires the metrics listener into the operator's web host (see <see cref="MetricsServingOptions"/>).</summary>
public static class SecureMetrics
{
    private const string MetricsListenerKey = "lowbit.metrics-listener";

    /// <summary>Reads <c>Operator:Metrics</c>; in modes secure and localhost binds <c>--urls</c> and the metrics listener explicitly.</summary>
    public static MetricsServingOptions Configure(WebApplicationBuilder builder, string defaultUrls)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = new MetricsServingOptions();
        builder.Configuration.GetSection(MetricsServingOptions.Section).Bind(options);
        builder.Services.AddOptions<MetricsServingOptions>().Bind(builder.Configuration.GetSection(MetricsServingOptions.Section)).ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<MetricsServingOptions>, MetricsServingOptionsValidator>();
        var validation = new MetricsServingOptionsValidator().Validate(null, options);
        if (options.Mode == MetricsServingOptions.Shared || validation.Failed)
        {
            return options; // a failed validation stops the host at start with the message
        }

        builder.Services.AddSingleton(sp => new MetricsAuthorizer(
            sp.GetRequiredService<IKubernetes>(), sp.GetRequiredService<TimeProvider>(), options.AuthCacheTtl, sp.GetRequiredService<ILogger<MetricsAuthorizer>>()));
        var urls = builder.Configuration["urls"] is { Length: > 0 } configured ? configured : defaultUrls;
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            foreach (var url in urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                Listen(kestrel, url);
            }

            void Mark(ListenOptions listen) => listen.Use(next => connection =>
            {
                connection.Items[MetricsListenerKey] = true;
                return next(connection);
            });

            var podIp = PodNetwork.OwnAddress();
            if (options.Mode == MetricsServingOptions.Localhost)
            {
                kestrel.Listen(podIp ?? IPAddress.Loopback, options.Port, Mark);
                return;
            }

            var certificate = LoadOrCreateCertificate(options, podIp);
            kestrel.Listen(podIp ?? IPAddress.Any, options.Port, listen =>
            {
                Mark(listen);
                listen.UseHttps(certificate);
            });
        });
        return options;
    }

    /// <summary>Whether this request came in on the metrics listener (modes secure and localhost).</summary>
    public static bool OnMetricsListener(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.Features.Get<IConnectionItemsFeature>()?.Items.ContainsKey(MetricsListenerKey) == true;
    }

    /// <summary>
    /// In modes secure and localhost: the metrics listener serves only <c>/metrics</c> (authorized in mode secure), and the
    /// <c>--urls</c> listener never serves <c>/metrics</c>.
    /// </summary>
    public static void UseMetricsGate(WebApplication app, MetricsServingOptions options)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Mode == MetricsServingOptions.Shared)
        {
            return;
        }

        var authorizer = options.Mode == MetricsServingOptions.Secure ? app.Services.GetRequiredService<MetricsAuthorizer>() : null;
        app.Use(async (context, next) =>
        {
            var isMetrics = context.Request.Path == "/metrics";
            if (OnMetricsListener(context) != isMetrics)
            {
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return;
            }

            // Only /metrics needs a token: the probes' listener (/healthz, /readyz) stays open to the kubelet.
            if (isMetrics && authorizer is not null)
            {
                var status = await authorizer.AuthorizeAsync(context.Request.Headers.Authorization.ToString(), context.RequestAborted).ConfigureAwait(false);
                if (status != StatusCodes.Status200OK)
                {
                    if (status == StatusCodes.Status401Unauthorized)
                    {
                        context.Response.Headers.WWWAuthenticate = "Bearer";
                    }

                    context.Response.StatusCode = status;
                    return;
                }
            }

            await next(context).ConfigureAwait(false);
        });
    }

    private static void Listen(KestrelServerOptions kestrel, string url)
    {
        var uri = new Uri(url.Replace("://*", "://0.0.0.0", StringComparison.Ordinal).Replace("://+", "://0.0.0.0", StringComparison.Ordinal));
        if (uri.Scheme != Uri.UriSchemeHttp)
        {
            throw new OptionsValidationException("urls", typeof(MetricsServingOptions), [$"--urls: '{url}' must be http:// (the probes' listener); HTTPS is for /metrics only ({MetricsServingOptions.Section}:Mode=secure)"]);
        }

        var address = uri.Host == "localhost" ? null : IPAddress.Parse(uri.Host.Trim('[', ']'));
        if (PodNetwork.OwnAddress() is { } podIp && (address is null || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any)))
        {
            kestrel.Listen(podIp, uri.Port);
        }
        else if (address is null)
        {
            kestrel.ListenLocalhost(uri.Port);
        }
        else
        {
            kestrel.Listen(address, uri.Port);
        }
    }

    private static X509Certificate2 LoadOrCreateCertificate(MetricsServingOptions options, IPAddress? podIp)
    {
        if (!string.IsNullOrEmpty(options.CertFile))
        {
            return X509Certificate2.CreateFromPemFile(options.CertFile, options.KeyFile);
        }

        // Like controller-runtime without a CertDir: a self-signed certificate made at start (scrapers skip verification
        // or pin it); identity comes from the bearer token, not from TLS client certificates.
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=lowbit-operator-metrics", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddDnsName(Environment.MachineName);
        names.AddIpAddress(IPAddress.Loopback);
        if (podIp is not null)
        {
            names.AddIpAddress(podIp);
        }
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        var now = DateTimeOffset.UtcNow;
        using var certificate = request.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(1));
        return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), null);
    }
}

/// <summary>
/// Bearer-token authentication and authorization of <c>GET /metrics</c> through the API server: a TokenReview answers who
/// the caller is, a SubjectAccessReview whether it may <c>get</c> the non-resource URL <c>/metrics</c>. Answers are cached
/// per token (SHA-256) for a short time; API errors are not cached and answer 500.
/// </summary>
public sealed partial class MetricsAuthorizer(IKubernetes client, TimeProvider time, TimeSpan ttl, ILogger<MetricsAuthorizer> logger)
{
    private const int MaxCached = 1024;
    private readonly ConcurrentDictionary<string, (int Status, DateTimeOffset Until)> _cache = new(StringComparer.Ordinal);

    /// <summary>200, 401 (no or unknown token) or 403 (authenticated, not allowed); 500 when the API server could not answer.</summary>
    public async Task<int> AuthorizeAsync(string? authorization, CancellationToken cancellationToken)
    {
        const string Bearer = "Bearer ";
        if (authorization is null || !authorization.StartsWith(Bearer, StringComparison.OrdinalIgnoreCase) || authorization.Length == Bearer.Length)
        {
            return StatusCodes.Status401Unauthorized;
        }

        var token = authorization[Bearer.Length..].Trim();
        var key = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(token)));
        var now = time.GetUtcNow();
        if (_cache.TryGetValue(key, out var cached) && cached.Until > now)
        {
            return cached.Status;
        }

        int status;
        try
        {
            status = await ReviewAsync(token, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is k8s.Autorest.HttpOperationException or HttpRequestException)
        {
            Log.ReviewFailed(logger, ex.Message);
            return StatusCodes.Status500InternalServerError;
        }

        if (_cache.Count >= MaxCached)
        {
            _cache.Clear();
        }

        _cache[key] = (status, now + ttl);
        return status;
    }

    private async Task<int> ReviewAsync(string token, CancellationToken cancellationToken)
    {
        var review = await client.AuthenticationV1.CreateTokenReviewAsync(
            new V1TokenReview { Spec = new V1TokenReviewSpec { Token = token } }, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (review.Status?.Authenticated != true || review.Status.User is not { } user)
        {
            Log.Unauthenticated(logger, review.Status?.Error ?? "not authenticated");
            return StatusCodes.Status401Unauthorized;
        }

        var access = await client.AuthorizationV1.CreateSubjectAccessReviewAsync(new V1SubjectAccessReview
        {
            Spec = new V1SubjectAccessReviewSpec
            {
                User = user.Username,
                Uid = user.Uid,
                Groups = user.Groups,
                Extra = user.Extra,
                NonResourceAttributes = new V1NonResourceAttributes { Path = "/metrics", Verb = "get" },
            },
        }, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (access.Status?.Allowed == true)
        {
            return StatusCodes.Status200OK;
        }

        Log.Forbidden(logger, user.Username, access.Status?.Reason ?? "");
        return StatusCodes.Status403Forbidden;
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "/metrics: token not authenticated ({Reason})")]
        public static partial void Unauthenticated(ILogger logger, string reason);

        [LoggerMessage(Level = LogLevel.Information, Message = "/metrics: {User} may not get /metrics ({Reason})")]
        public static partial void Forbidden(ILogger logger, string user, string reason);

        [LoggerMessage(Level = LogLevel.Warning, Message = "/metrics: TokenReview or SubjectAccessReview failed: {Message}")]
        public static partial void ReviewFailed(ILogger logger, string message);
    }
}

/// <summary>
/// The address of the pod this process runs in, where that is not a network namespace of its own: the embedded
/// cluster's local executor runs pods as host processes and gives each a loopback address (127.1.x.y) in
/// <c>LOWBIT_POD_IP</c> (as it does for the engine). There "any address" and "localhost" mean that address, so two
/// replicas on one host do not collide on their ports and probes reach the right one. Null everywhere else.
/// </summary>
public static class PodNetwork
{
    public const string PodIpVariable = "LOWBIT_POD_IP";

    public static IPAddress? OwnAddress() =>
        IPAddress.TryParse(Environment.GetEnvironmentVariable(PodIpVariable), out var address) ? address : null;
}
