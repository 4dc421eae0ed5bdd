using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Prometheus;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// Builds the operator process on the ASP.NET Core host: the manager as a hosted service, <c>/healthz</c>,
/// <c>/readyz</c> and <c>/metrics</c> on one port (<c>--urls</c>, default http://0.0.0.0:8080), options
/// validated when the host is built (an invalid setting fails <see cref="Build"/> with a message naming it), and the host's ShutdownTimeout from <see cref="OperatorOptions.ShutdownTimeout"/>.
/// Tests and <c>lowbit local up</c> call it in-process with <see cref="OperatorBuilder.UseKubernetes"/>.
/// </summary>
public static class OperatorHost
{
    public const string DefaultUrls = "http://0.0.0.0:8080";

    public static WebApplication Build(string[] args, Action<OperatorBuilder>? configure = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args });
        if (string.IsNullOrEmpty(builder.Configuration["urls"]))
        {
            builder.WebHost.UseUrls(DefaultUrls);
        }

        var metricsServing = SecureMetrics.Configure(builder, DefaultUrls);
        var op = new OperatorBuilder(builder.Services, builder.Configuration);
        configure?.Invoke(op);
        op.Register();
        builder.Services.AddOptions<HostOptions>()
            .Configure<IOptions<OperatorOptions>>((host, options) => host.ShutdownTimeout = options.Value.ShutdownTimeout);
        builder.Services.AddHealthChecks()
            .AddCheck<ReadinessCheck>("operator", tags: ["ready"]);

        var app = builder.Build();
        SecureMetrics.UseMetricsGate(app, metricsServing);
        app.MapHealthChecks("/healthz", new HealthCheckOptions { Predicate = _ => false });
        app.MapHealthChecks("/readyz", new HealthCheckOptions { Predicate = check => check.Tags.Contains("ready") });
        var metrics = app.Services.GetRequiredService<RuntimeMetrics>();
        app.MapGet("/metrics", async context =>
        {
            context.Response.ContentType = RuntimeMetrics.ContentType;
            await metrics.ExportAsync(context.Response.Body, context.RequestAborted).ConfigureAwait(false);
        });
        return app;
    }

    /// <summary>Runs the host to completion and returns the process exit code (non-zero after a lost election).</summary>
    public static async Task<int> RunAsync(WebApplication app, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(app);
        var state = app.Services.GetRequiredService<OperatorState>();
        await app.RunAsync(cancellationToken).ConfigureAwait(false);
        return state.ExitCode;
    }
}
