using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster.Kubelet;

/// <summary>Timings of the kubelets (real kubelet values by default, except where noted).</summary>
public sealed record KubeletOptions
{
    /// <summary>How long a simulated container of a pod with restartPolicy Never/OnFailure runs without a duration annotation.</summary>
    public TimeSpan SimulatedRunDuration { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>First CrashLoopBackOff delay (doubles per restart, at most 5 minutes).</summary>
    public TimeSpan CrashLoopBackOff { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long ErrImagePull shows before ImagePullBackOff.</summary>
    public TimeSpan ImagePullBackOff { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>How often a container waiting with CreateContainerConfigError checks again for its Secret or ConfigMap.</summary>
    public TimeSpan ConfigRetryInterval { get; init; } = TimeSpan.FromSeconds(1);
}

/// <summary>
/// The kubelet of one node: starts a <see cref="PodWorker"/> for each pod bound to the node, stops it when the
/// pod is deleted (the containers get the deletion grace period) and then removes the pod from the store.
/// </summary>
public sealed partial class NodeKubelet
{
    // A random start: clusters in other processes on this host (parallel test runs) are unlikely to hand out the same address.
    private static int _nextLoopback = Random.Shared.Next(0, 254 * 256);
    private readonly ClusterApi _api;
    private readonly Informer _pods;
    private readonly PodLogStore _logs;
    private readonly IContainerRuntime _runtime;
    private readonly KubeletOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ControllerLoop _loop;
    private readonly object _gate = new();
    private readonly Dictionary<string, PodWorker> _workers = new(StringComparer.Ordinal);
    private readonly HashSet<string> _stopping = new(StringComparer.Ordinal);
    private readonly List<Task> _stops = [];
    private readonly bool _simulated;

    public NodeKubelet(ClusterApi api, Informer pods, string nodeName, IContainerRuntime runtime, PodLogStore logs, KubeletOptions options,
        TimeProvider time, ILogger logger)
    {
        _api = api;
        _pods = pods;
        NodeName = nodeName;
        _runtime = runtime;
        _logs = logs;
        _options = options;
        _time = time;
        _logger = logger;
        _simulated = runtime is SimulatedRuntime;
        _loop = new ControllerLoop($"kubelet/{nodeName}", ReconcileAsync, time, logger);
        pods.OnChange((old, pod) =>
        {
            if (pod?.NodeName == nodeName || old?.NodeName == nodeName)
            {
                _loop.Enqueue((pod ?? old)!.Key);
            }
        });
    }

    public string NodeName { get; }

    public Task RunAsync(CancellationToken cancellationToken) => _loop.RunAsync(2, cancellationToken);

    /// <summary>Stops every pod's containers (cluster shutdown), without touching the store.</summary>
    public async Task StopAllAsync()
    {
        List<PodWorker> workers;
        List<Task> stops;
        lock (_gate)
        {
            workers = [.. _workers.Values];
            _workers.Clear();
            stops = [.. _stops];
        }
        await Task.WhenAll(workers.Select(w => w.StopAsync(TimeSpan.FromSeconds(2))).Concat(stops)).ConfigureAwait(false);
    }

    private Task<Requeue> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var (ns, name) = Typed.SplitKey(key);
        var stored = _pods.Get(ns, name);
        PodWorker? worker;
        lock (_gate)
        {
            _workers.TryGetValue(key, out worker);
        }
        if (worker is not null && (stored is null || stored.Uid != worker.Uid || stored.NodeName != NodeName))
        {
            // The pod is gone (or replaced by a new one of the same name): stop what still runs.
            lock (_gate)
            {
                _workers.Remove(key);
            }
            Track(StopAsync(worker, TimeSpan.Zero, finish: false));
            worker = null;
        }
        if (stored is null || stored.NodeName != NodeName)
        {
            return Task.FromResult(Requeue.Done);
        }
        if (stored.IsDeleting)
        {
            lock (_gate)
            {
                if (!_stopping.Add(key))
                {
                    return Task.FromResult(Requeue.Done);
                }
                _workers.Remove(key);
            }
            var pod = stored.As<V1Pod>();
            var grace = TimeSpan.FromSeconds(pod.Metadata.DeletionGracePeriodSeconds ?? pod.Spec.TerminationGracePeriodSeconds ?? 30);
            Track(StopAsync(worker, grace, finish: true, stored));
            return Task.FromResult(Requeue.Done);
        }
        if (worker is null && stored.Phase is "Succeeded" or "Failed")
        {
            // Finished before this kubelet started (a restored cluster): never run a terminal pod again.
            return Task.FromResult(Requeue.Done);
        }
        if (worker is null)
        {
            var pod = stored.As<V1Pod>();
            worker = new PodWorker(_api, _logs, _runtime, _options, pod, PodIp(pod), _time, _logger);
            lock (_gate)
            {
                _workers[key] = worker;
            }
            worker.Start();
        }
        return Task.FromResult(Requeue.Done);
    }

    private async Task StopAsync(PodWorker? worker, TimeSpan grace, bool finish, StoredObject? pod = null)
    {
        try
        {
            if (worker is not null)
            {
                await worker.StopAsync(grace).ConfigureAwait(false);
                _runtime.Cleanup(worker.Pod);
            }
            if (finish && pod is not null)
            {
                _logs.Remove(pod.Namespace, pod.Name);
                var current = _api.TryGetStored(BuiltinResources.Pods, pod.Namespace, pod.Name);
                if (current is not null && current.Uid == pod.Uid)
                {
                    _api.FinishDeletion(BuiltinResources.Pods, pod.Namespace, pod.Name);
                }
            }
        }
        catch (Exception ex)
        {
            Log.StopFailed(_logger, ex, pod?.Namespace ?? worker?.Pod.Metadata.NamespaceProperty ?? "", pod?.Name ?? worker?.Pod.Metadata.Name ?? "");
        }
        finally
        {
            if (pod is not null)
            {
                lock (_gate)
                {
                    _stopping.Remove(pod.Key);
                }
            }
        }
    }

    private void Track(Task task)
    {
        lock (_gate)
        {
            _stops.RemoveAll(t => t.IsCompleted);
            _stops.Add(task);
        }
    }

    /// <summary>
    /// Executed pods get a loopback address of their own (127.1.x.y; the process finds it in <c>LOWBIT_POD_IP</c> and
    /// <c>status.podIP</c>), so two servers on the same container port do not collide and Services, probes and
    /// scrapes reach the right one; simulated pods get a stable made-up address.
    /// </summary>
    private string PodIp(V1Pod pod)
    {
        if (!_simulated)
        {
            var n = (uint)Interlocked.Increment(ref _nextLoopback) % (254 * 256);
            return $"127.1.{n / 254}.{(n % 254) + 1}";
        }
        var hash = (uint)(pod.Metadata.Uid ?? pod.Metadata.Name).Aggregate(17, (h, c) => unchecked((h * 31) + c));
        return $"10.244.{(hash >> 8) % 256}.{(hash % 254) + 1}";
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 4301, Level = LogLevel.Warning, Message = "Stopping pod {Namespace}/{Pod} failed")]
        public static partial void StopFailed(ILogger logger, Exception exception, string @namespace, string pod);
    }
}
