using k8s;
using k8s.Models;
using Lowbit.LocalCluster;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Store;
using Lowbit.Operator.Runtime;
using Lowbit.Planner;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>
/// The embedded API server with simulated nodes from the GPU catalog, our CRDs installed, and the operator
/// running in process against it over HTTP (its requests land in the server's journal).
/// </summary>
internal sealed class OperatorHarness : IAsyncDisposable
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    private OperatorHarness(LocalClusterServer server, SimulatedCluster cluster, WebApplication op)
    {
        Server = server;
        Cluster = cluster;
        Operator = op;
    }

    public LocalClusterServer Server { get; }

    public SimulatedCluster Cluster { get; }

    public WebApplication Operator { get; }

    public ClusterApi Api => Server.Api;

    public RuntimeMetrics Metrics => Operator.Services.GetRequiredService<RuntimeMetrics>();

    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Operator.sln")))
                {
                    return dir.FullName;
                }
            }

            throw new InvalidOperationException("repository root (Operator.sln) not found above " + AppContext.BaseDirectory);
        }
    }

    /// <summary>One simulated node per catalog node type (GPU nodes with their GPU count, labels and taints).</summary>
    public static NodesConfig CatalogNodes(GpuCatalog catalog) => new()
    {
        Nodes = SimulatedNodes.FromCatalog(catalog).Select(n => new NodeConfig
        {
            Name = n.Name,
            Mode = KubeletMode.Simulate,
            Cpu = n.Allocatable["cpu"],
            Memory = n.Allocatable["memory"],
            Gpus = n.Allocatable.TryGetValue(GpuCatalog.NvidiaGpuResource, out var gpus) ? int.Parse(gpus, System.Globalization.CultureInfo.InvariantCulture) : 0,
            Labels = n.Labels,
            Taints = n.Taints.Select(t => new NodeTaint(t.Key, t.Value.Length == 0 ? null : t.Value, t.Effect)).ToList(),
        }).ToList(),
    };

    /// <param name="leaderWorkerSet">Install the LeaderWorkerSet CRD before the operator starts (its API is then served).</param>
    /// <param name="https">Serve HTTPS with client certificates, as real <c>kubectl</c> needs (it sends no credentials over plain HTTP).</param>
    public static async Task<OperatorHarness> StartAsync(GpuCatalog? catalog = null, Action<OperatorBuilder>? configure = null, string? identity = null, Func<string, bool>? nodeFilter = null,
        bool leaderWorkerSet = false, bool https = false)
    {
        catalog ??= GpuCatalog.Default;
        var server = await LocalClusterServer.StartAsync(new LocalClusterOptions
        {
            Https = https,
            Store = new ClusterApiOptions { GracefulPodDeletion = true, BookmarkInterval = TimeSpan.FromMilliseconds(500) },
        });
        foreach (var file in Directory.GetFiles(Path.Combine(RepoRoot, "crds"), "*.yaml"))
        {
            server.Api.Create(KubernetesYaml.Deserialize<V1CustomResourceDefinition>(await File.ReadAllTextAsync(file)));
        }

        if (leaderWorkerSet)
        {
            LocalCluster.Crds.ThirdPartyCrds.InstallLeaderWorkerSet(server.Api);
        }

        server.Api.Create(new V1Secret
        {
            Metadata = new V1ObjectMeta { Name = "hf-token", NamespaceProperty = "default" },
            StringData = new Dictionary<string, string> { ["token"] = "hf_canary_0123456789" },
        });
        var cluster = await SimulatedCluster.StartAsync(server.Api, server.Logs, new ClusterSimulationOptions
        {
            Nodes = new NodesConfig { Nodes = CatalogNodes(catalog).Nodes.Where(n => nodeFilter?.Invoke(n.Name) ?? true).ToList() },
            Kubelet = new KubeletOptions { SimulatedRunDuration = TimeSpan.FromMilliseconds(200), CrashLoopBackOff = TimeSpan.FromMilliseconds(200) },
        }, TimeProvider.System, NullLoggerFactory.Instance);
        var op = StartOperator(server, catalog, configure, identity);
        await op.StartAsync();
        return new OperatorHarness(server, cluster, op);
    }

    public static WebApplication StartOperator(LocalClusterServer server, GpuCatalog catalog, Action<OperatorBuilder>? configure, string? identity)
    {
        var config = KubernetesClientConfiguration.BuildConfigFromConfigFile(server.KubeconfigPath);
        return OperatorHost.Build(["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default", "Warning"], op =>
        {
            op.Services.AddSingleton(catalog);
            OperatorSetup.Configure(op);
            op.UseKubernetes(config);
            op.Configure(o =>
            {
                o.LeaderElection.Enabled = identity is not null;
                o.LeaderElection.Identity = identity;
                o.LeaderElection.LeaseNamespace = "default";
                o.MaxConcurrentReconciles = 4;
            });
            configure?.Invoke(op);
        });
    }

    /// <summary>The operator's own HTTP address (/metrics, /healthz, /readyz).</summary>
    public Uri OperatorUrl => new(Operator.Urls.First());

    public T Create<T>(T obj)
        where T : IKubernetesObject<V1ObjectMeta>
    {
        obj.Metadata.NamespaceProperty ??= "default";
        return Api.Create(obj);
    }

    /// <summary>Polls the store (in process, not journaled) until <paramref name="condition"/> holds.</summary>
    public async Task<T> WaitAsync<T>(string name, Func<T, bool> condition, string what, string ns = "default")
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var deadline = DateTime.UtcNow + Patience;
        T? last = null;
        while (DateTime.UtcNow < deadline)
        {
            last = Api.TryGet<T>(ns, name);
            if (last is not null && condition(last))
            {
                return last;
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"{what}: not reached within {Patience.TotalSeconds} s; last: {(last is null ? "absent" : KubernetesJson.Serialize(last))}");
    }

    /// <summary>Waits until the operator has finished <paramref name="reconciles"/> more reconciles of a controller and is idle.</summary>
    public async Task WaitForReconcilesAsync(string controller, double before, int reconciles = 1)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (DateTime.UtcNow < deadline)
        {
            if (TotalReconciles(controller) >= before + reconciles && Metrics.ActiveWorkers.WithLabels(controller).Value == 0)
            {
                return;
            }

            await Task.Delay(20);
        }

        throw new TimeoutException($"{controller}: {reconciles} reconciles not seen");
    }

    /// <summary>Waits until a controller's queue is empty and no reconcile runs, for 300 ms in a row.</summary>
    public async Task WaitIdleAsync(string controller)
    {
        var deadline = DateTime.UtcNow + Patience;
        var quietSince = DateTime.UtcNow;
        while (DateTime.UtcNow < deadline)
        {
            var busy = Metrics.ActiveWorkers.WithLabels(controller).Value > 0 || Metrics.QueueDepth.WithLabels(controller).Value > 0;
            if (busy)
            {
                quietSince = DateTime.UtcNow;
            }
            else if (DateTime.UtcNow - quietSince > TimeSpan.FromMilliseconds(300))
            {
                return;
            }

            await Task.Delay(20);
        }

        throw new TimeoutException($"{controller} did not go idle");
    }

    public double TotalReconciles(string controller) =>
        new[] { "success", "error", "requeue", "requeue_after" }.Sum(r => Metrics.ReconcileTotal.WithLabels(controller, r).Value);

    public IReadOnlyList<LocalCluster.Testing.JournalEntry> OperatorWrites() =>
        Server.Journal.Writes.Where(e => !e.Path.Contains("/leases", StringComparison.Ordinal)).ToList();

    public async ValueTask DisposeAsync()
    {
        await Operator.StopAsync();
        await Operator.DisposeAsync();
        await Cluster.DisposeAsync();
        await Server.DisposeAsync();
    }
}
