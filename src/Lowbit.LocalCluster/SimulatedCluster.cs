using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Scheduling;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster;

/// <summary>Settings of the simulated nodes, controllers and local executor.</summary>
public sealed record ClusterSimulationOptions
{
    public NodesConfig Nodes { get; init; } = NodesConfig.Default;

    public KubeletOptions Kubelet { get; init; } = new();

    /// <summary>Where executed pods get their folders and claims (default: a temp folder).</summary>
    public string? StateDirectory { get; init; }

    /// <summary>The image map of execute nodes (default: <see cref="ExecutorOptions.DefaultImages"/> with <see cref="EnginePath"/>).</summary>
    public IReadOnlyList<ImageMapping>? Images { get; init; }

    /// <summary>The engine executable for lowbit-engine images (default: &lt;repo&gt;/out/lowbit-engine when found, else lowbit-engine on PATH).</summary>
    public string? EnginePath { get; init; }

    /// <summary>
    /// The operator executable for lowbit-operator images (the Helm chart's Deployment; default: &lt;repo&gt;/out/lowbit-operator
    /// when found, else none: those images cannot run).
    /// </summary>
    public string? OperatorPath { get; init; }

    /// <summary>Claims that start with content (claim name → folder copied in on first use, in any namespace).</summary>
    public IReadOnlyDictionary<string, string> SeededClaims { get; init; } = new Dictionary<string, string>();

    /// <summary>How executed pods reach the API server (<see cref="AttachAsync"/> fills it from the server); null: no credentials.</summary>
    public PodApiAccess? ApiAccess { get; init; }
}

/// <summary>
/// Everything that makes the embedded API server behave like a small cluster, in process: Node objects from the
/// node config, the scheduler, the Job, ReplicaSet, Deployment and Endpoints controllers, and one kubelet per node
/// (simulated or executing). All are watch-driven against <see cref="ClusterApi"/>. Dispose to stop them
/// (executed processes are killed; the store is left as is).
/// </summary>
public sealed class SimulatedCluster : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _tasks = [];
    private readonly List<NodeKubelet> _kubelets = [];

    private SimulatedCluster()
    {
    }

    public IReadOnlyList<NodeKubelet> Kubelets => _kubelets;

    /// <summary>
    /// Registers the nodes and starts the controllers and kubelets; returns once their caches are filled.
    /// Use with <see cref="ClusterApiOptions.GracefulPodDeletion"/> on, so deleted pods stop their containers first.
    /// </summary>
    public static async Task<SimulatedCluster> StartAsync(ClusterApi api, PodLogStore logs, ClusterSimulationOptions options, TimeProvider time,
        ILoggerFactory loggers, CancellationToken cancellationToken = default)
    {
        var cluster = new SimulatedCluster();
        NodeRegistrar.Register(api, options.Nodes, Typed.Truncate(time.GetUtcNow()));
        var pods = new Informer(api, BuiltinResources.Pods);
        var nodes = new Informer(api, BuiltinResources.Nodes);
        var jobs = new Informer(api, BuiltinResources.Jobs);
        var replicaSets = new Informer(api, BuiltinResources.ReplicaSets);
        var deployments = new Informer(api, BuiltinResources.Deployments);
        var services = new Informer(api, BuiltinResources.Services);
        var podControl = new PodControl(api, pods);
        var token = cluster._stop.Token;

        var scheduler = new Scheduler(api, pods, nodes, options.Nodes.Nodes.Select(n => n.Name), time, loggers.CreateLogger<Scheduler>());
        var jobController = new JobController(api, jobs, pods, podControl, time, loggers.CreateLogger<JobController>());
        var replicaSetController = new ReplicaSetController(api, replicaSets, pods, podControl, time, loggers.CreateLogger<ReplicaSetController>());
        var deploymentController = new DeploymentController(api, deployments, replicaSets, time, loggers.CreateLogger<DeploymentController>());
        var endpointsController = new EndpointsController(api, services, pods, time, loggers.CreateLogger<EndpointsController>());
        var taintEviction = new TaintEvictionController(api, nodes, pods, time, loggers.CreateLogger<TaintEvictionController>());

        var stateDirectory = options.StateDirectory ?? Path.Combine(Path.GetTempPath(), "lowbit-executor");
        if (options.StateDirectory is not null)
        {
            // Only a state directory of our own: the shared default may belong to another cluster that still runs.
            OrphanProcesses.KillAll(stateDirectory, loggers.CreateLogger<SimulatedCluster>());
        }

        var executor = new ProcessRuntime(api, new ExecutorOptions
        {
            StateDirectory = stateDirectory,
            Images = options.Images ?? ExecutorOptions.DefaultImages(options.EnginePath ?? DefaultEnginePath(), options.OperatorPath ?? DefaultOperatorPath()),
            SeededClaims = options.SeededClaims,
            ApiAccess = options.ApiAccess,
        }, time);
        var simulator = new SimulatedRuntime(time, options.Kubelet.SimulatedRunDuration);
        var perPod = new PerPodRuntime(executor, simulator);
        foreach (var node in options.Nodes.Nodes)
        {
            IContainerRuntime runtime = node.Mode == KubeletMode.Execute ? perPod : simulator;
            cluster._kubelets.Add(new NodeKubelet(api, pods, node.Name, runtime, logs, options.Kubelet, time, loggers.CreateLogger<NodeKubelet>()));
        }

        var informers = new[] { pods, nodes, jobs, replicaSets, deployments, services };
        cluster._tasks.AddRange(informers.Select(i => Task.Run(() => i.RunAsync(token), CancellationToken.None)));
        await Task.WhenAll(informers.Select(i => i.Synced)).WaitAsync(cancellationToken).ConfigureAwait(false);
        cluster._tasks.Add(scheduler.RunAsync(token));
        cluster._tasks.Add(jobController.RunAsync(token));
        cluster._tasks.Add(replicaSetController.RunAsync(token));
        cluster._tasks.Add(deploymentController.RunAsync(token));
        cluster._tasks.Add(endpointsController.RunAsync(token));
        cluster._tasks.Add(taintEviction.RunAsync(token));
        cluster._tasks.AddRange(cluster._kubelets.Select(k => k.RunAsync(token)));
        return cluster;
    }

    /// <summary>
    /// Runs the simulation on a server's store and logs, and moves it to the new store when the server restarts
    /// (<see cref="LocalClusterServer.RestartAsync"/>): what <c>lowbit local up</c> and server-level tests use.
    /// Needs the server started with <see cref="ClusterApiOptions.GracefulPodDeletion"/> on.
    /// </summary>
    public static async Task<IAsyncDisposable> AttachAsync(LocalClusterServer server, ClusterSimulationOptions options, TimeProvider time,
        ILoggerFactory loggers, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(server);
        ArgumentNullException.ThrowIfNull(options);
        options = options with
        {
            ApiAccess = options.ApiAccess ?? new PodApiAccess { Server = server.Url, CaPem = server.CaPem ?? "", Tokens = server.Tokens },
        };
        var attached = new ServerAttachment(server, options, time, loggers);
        await attached.StartAsync(server.Api, cancellationToken).ConfigureAwait(false);
        return attached;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll(_tasks).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        await Task.WhenAll(_kubelets.Select(k => k.StopAllAsync())).ConfigureAwait(false);
        _stop.Dispose();
    }

    /// <summary>&lt;repo&gt;/out/lowbit-engine, found by walking up from the running assembly to the folder holding Operator.sln.</summary>
    public static string DefaultEnginePath() => RepoOut("lowbit-engine") ?? "lowbit-engine";

    /// <summary>&lt;repo&gt;/out/lowbit-operator when it exists (<c>make build</c>), else null.</summary>
    public static string? DefaultOperatorPath() => RepoOut("lowbit-operator") is { } path && File.Exists(path) ? path : null;

    private static string? RepoOut(string program)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Operator.sln")))
            {
                return Path.Combine(dir.FullName, "out", program);
            }
        }
        return null;
    }
}

/// <summary>A <see cref="SimulatedCluster"/> that follows its server across restarts.</summary>
internal sealed class ServerAttachment : IAsyncDisposable
{
    private readonly LocalClusterServer _server;
    private readonly ClusterSimulationOptions _options;
    private readonly TimeProvider _time;
    private readonly ILoggerFactory _loggers;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private SimulatedCluster? _current;
    private Task _swap = Task.CompletedTask;
    private bool _disposed;

    public ServerAttachment(LocalClusterServer server, ClusterSimulationOptions options, TimeProvider time, ILoggerFactory loggers)
    {
        _server = server;
        _options = options;
        _time = time;
        _loggers = loggers;
        server.ApiReplaced += OnApiReplaced;
    }

    public async Task StartAsync(ClusterApi api, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_disposed)
            {
                return;
            }
            if (_current is not null)
            {
                await _current.DisposeAsync().ConfigureAwait(false);
            }
            _current = await SimulatedCluster.StartAsync(api, _server.Logs, _options, _time, _loggers, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _server.ApiReplaced -= OnApiReplaced;
        await _swap.ConfigureAwait(false);
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            _disposed = true;
            if (_current is not null)
            {
                await _current.DisposeAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    private void OnApiReplaced(ClusterApi api) => _swap = StartAsync(api, CancellationToken.None);
}
