using k8s;
using k8s.Models;
using Lowbit.Api.Generation;
using Lowbit.Operator;
using Lowbit.Operator.Runtime;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace Lowbit.Cli.Local;

/// <summary>
/// The operator of <c>lowbit local up</c>, in this process: installs the CRDs the binary was built with (server-side
/// apply, so a newer <c>lowbit</c> upgrades them) and runs the same operator host the <c>lowbit-operator</c> image runs,
/// its health and metrics endpoints on a free port of 127.0.0.1 (no leader election: one instance).
/// </summary>
public sealed class LocalOperator : IAsyncDisposable
{
    private readonly WebApplication _app;

    private LocalOperator(WebApplication app, Uri metricsUrl)
    {
        _app = app;
        MetricsUrl = metricsUrl;
    }

    /// <summary>The operator's <c>/metrics</c> (plain HTTP on 127.0.0.1).</summary>
    public Uri MetricsUrl { get; }

    public static async Task InstallCrdsAsync(Kubernetes client, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        foreach (var (_, yaml) in CrdGenerator.GenerateFiles())
        {
            var crd = KubernetesYaml.Deserialize<V1CustomResourceDefinition>(yaml);
            await client.ApiextensionsV1.PatchCustomResourceDefinitionAsync(new V1Patch(crd, V1Patch.PatchType.ApplyPatch), crd.Metadata.Name,
                fieldManager: "lowbit-cli", force: true, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
    }

    public static async Task<LocalOperator> StartAsync(string kubeconfig, CancellationToken cancellationToken)
    {
        var config = KubernetesClientConfiguration.BuildConfigFromConfigFile(kubeconfig);
        using (var client = new Kubernetes(config))
        {
            await InstallCrdsAsync(client, cancellationToken).ConfigureAwait(false);
        }
        var app = OperatorHost.Build(["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default", "Warning", "--Operator:Scrape:Interval", "00:00:02"], op =>
        {
            OperatorSetup.Configure(op);
            op.UseKubernetes(config);
            op.Configure(o => o.LeaderElection.Enabled = false);
        });
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
            ?? throw new InvalidOperationException("the operator's HTTP server reported no address");
        return new LocalOperator(app, new Uri(new Uri(address), "/metrics"));
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync(CancellationToken.None).ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }
}
