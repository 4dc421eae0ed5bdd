using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster.Scheduling;

/// <summary>
/// Binds pending pods of the default scheduler to nodes (<see cref="SchedulingPredicates"/>), or marks them
/// <c>PodScheduled=False, reason Unschedulable</c> with kube-scheduler's message. Unschedulable pods are tried
/// again whenever a node changes or a pod leaves a node. Pods being deleted that no kubelet runs (never bound)
/// are removed here, which is what the API server does for unscheduled pods.
/// </summary>
public sealed partial class Scheduler
{
    public const string DefaultSchedulerName = "default-scheduler";

    private readonly ClusterApi _api;
    private readonly Informer _pods;
    private readonly Informer _nodes;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ControllerLoop _loop;
    private readonly object _gate = new();
    private readonly Dictionary<string, Usage> _usage = new(StringComparer.Ordinal);
    private readonly HashSet<string> _unschedulable = new(StringComparer.Ordinal);
    private readonly HashSet<string> _kubeletNodes;
    private readonly Dictionary<string, (long ResourceVersion, V1Node Node)> _parsedNodes = new(StringComparer.Ordinal);

    public Scheduler(ClusterApi api, Informer pods, Informer nodes, IEnumerable<string> kubeletNodes, TimeProvider time, ILogger logger)
    {
        _api = api;
        _pods = pods;
        _nodes = nodes;
        _time = time;
        _logger = logger;
        _kubeletNodes = new HashSet<string>(kubeletNodes, StringComparer.Ordinal);
        _loop = new ControllerLoop("scheduler", ReconcileAsync, time, logger);
        pods.OnChange(OnPodChange);
        nodes.OnChange((_, _) => RetryUnschedulable());
    }

    private sealed record Usage(string Node, Dictionary<string, decimal> Requests);

    /// <summary>One worker: binding decisions are sequential, so two pods never take the same free GPU.</summary>
    public Task RunAsync(CancellationToken cancellationToken) => _loop.RunAsync(1, cancellationToken);

    private void OnPodChange(StoredObject? old, StoredObject? pod)
    {
        var key = (pod ?? old)!.Key;
        var freed = false;
        lock (_gate)
        {
            if (pod is not null && pod.NodeName is { Length: > 0 } node && pod.Phase is not ("Succeeded" or "Failed"))
            {
                if (!_usage.ContainsKey(key))
                {
                    _usage[key] = new Usage(node, SchedulingPredicates.PodRequests(pod.As<V1Pod>().Spec));
                }
            }
            else
            {
                freed = _usage.Remove(key);
            }
            if (pod is null)
            {
                _unschedulable.Remove(key);
            }
        }
        if (pod is not null && (pod.NodeName is null or "" || (pod.IsDeleting && !_kubeletNodes.Contains(pod.NodeName))))
        {
            _loop.Enqueue(key);
        }
        if (freed)
        {
            RetryUnschedulable();
        }
    }

    private void RetryUnschedulable()
    {
        List<string> keys;
        lock (_gate)
        {
            keys = [.. _unschedulable];
        }
        foreach (var key in keys)
        {
            _loop.Enqueue(key);
        }
    }

    private Task<Requeue> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var (ns, name) = Typed.SplitKey(key);
        var stored = _pods.Get(ns, name);
        if (stored is null)
        {
            return Task.FromResult(Requeue.Done);
        }
        if (stored.IsDeleting)
        {
            if (stored.NodeName is null or "" || !_kubeletNodes.Contains(stored.NodeName))
            {
                _api.FinishDeletion(BuiltinResources.Pods, ns, name);
            }
            return Task.FromResult(Requeue.Done);
        }
        if (stored.NodeName is { Length: > 0 } || stored.Phase is "Succeeded" or "Failed")
        {
            return Task.FromResult(Requeue.Done);
        }
        var pod = stored.As<V1Pod>();
        if ((pod.Spec.SchedulerName ?? DefaultSchedulerName) != DefaultSchedulerName)
        {
            return Task.FromResult(Requeue.Done);
        }
        var result = SchedulingPredicates.Schedule(pod, NodeStates());
        switch (result)
        {
            case Fits fits:
                Bind(pod, fits.NodeName);
                break;
            case DoesNotFit doesNotFit:
                MarkUnschedulable(pod, doesNotFit.Message);
                break;
        }
        return Task.FromResult(Requeue.Done);
    }

    private List<NodeState> NodeStates()
    {
        var requested = new Dictionary<string, Dictionary<string, decimal>>(StringComparer.Ordinal);
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        lock (_gate)
        {
            foreach (var usage in _usage.Values)
            {
                if (!requested.TryGetValue(usage.Node, out var sum))
                {
                    sum = new Dictionary<string, decimal>(StringComparer.Ordinal);
                    requested[usage.Node] = sum;
                }
                foreach (var (resource, amount) in usage.Requests)
                {
                    sum[resource] = sum.GetValueOrDefault(resource) + amount;
                }
                counts[usage.Node] = counts.GetValueOrDefault(usage.Node) + 1;
            }
        }
        return _nodes.All()
            .Where(n => !n.IsDeleting)
            .Select(n => new NodeState(ParsedNode(n), requested.GetValueOrDefault(n.Name) ?? new Dictionary<string, decimal>(), counts.GetValueOrDefault(n.Name)))
            .ToList();
    }

    /// <summary>Nodes change rarely: parse each version once.</summary>
    private V1Node ParsedNode(StoredObject node)
    {
        lock (_gate)
        {
            if (_parsedNodes.TryGetValue(node.Name, out var cached) && cached.ResourceVersion == node.ResourceVersion)
            {
                return cached.Node;
            }
            var parsed = node.As<V1Node>();
            _parsedNodes[node.Name] = (node.ResourceVersion, parsed);
            return parsed;
        }
    }

    private void Bind(V1Pod pod, string nodeName)
    {
        var hadCondition = pod.Status?.Conditions?.Any(c => c.Type == "PodScheduled") == true;
        pod.Spec.NodeName = nodeName;
        var bound = _api.Replace(BuiltinResources.Pods, pod).As<V1Pod>();
        var key = Typed.KeyOf(pod.Metadata);
        lock (_gate)
        {
            _usage[key] = new Usage(nodeName, SchedulingPredicates.PodRequests(pod.Spec));
            _unschedulable.Remove(key);
        }
        Log.Bound(_logger, pod.Metadata.NamespaceProperty, pod.Metadata.Name, nodeName);
        if (hadCondition)
        {
            bound.Status.Conditions = Typed.SetCondition(bound.Status.Conditions, new V1PodCondition
            {
                Type = "PodScheduled",
                Status = "True",
                LastTransitionTime = Typed.Truncate(_time.GetUtcNow()),
            });
            _api.Replace(BuiltinResources.Pods, bound, "status");
        }
    }

    private void MarkUnschedulable(V1Pod pod, string message)
    {
        var key = Typed.KeyOf(pod.Metadata);
        lock (_gate)
        {
            _unschedulable.Add(key);
        }
        var current = pod.Status?.Conditions?.FirstOrDefault(c => c.Type == "PodScheduled");
        if (current is { Status: "False", Reason: "Unschedulable" } && current.Message == message)
        {
            return;
        }
        pod.Status ??= new V1PodStatus { Phase = "Pending" };
        pod.Status.Conditions = Typed.SetCondition(pod.Status.Conditions, new V1PodCondition
        {
            Type = "PodScheduled",
            Status = "False",
            Reason = "Unschedulable",
            Message = message,
            LastTransitionTime = Typed.Truncate(_time.GetUtcNow()),
        });
        RecordFailedScheduling(pod, message);
        _api.Replace(BuiltinResources.Pods, pod, "status");
        Log.Unschedulable(_logger, pod.Metadata.NamespaceProperty, pod.Metadata.Name, message);
    }

    /// <summary>The Warning event kubectl describe shows under the pod (one per pod, its count and time updated).</summary>
    private void RecordFailedScheduling(V1Pod pod, string message)
    {
        var ns = pod.Metadata.NamespaceProperty;
        var name = $"{pod.Metadata.Name}.failedscheduling";
        var now = Typed.Truncate(_time.GetUtcNow());
        try
        {
            var existing = _api.TryGet(BuiltinResources.Events, ns, name)?.As<Corev1Event>();
            if (existing is not null)
            {
                existing.Count = (existing.Count ?? 1) + 1;
                existing.LastTimestamp = now;
                existing.Message = message;
                _api.Replace(BuiltinResources.Events, existing);
                return;
            }
            _api.Create(BuiltinResources.Events, ns, new Corev1Event
            {
                ApiVersion = "v1",
                Kind = "Event",
                Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns },
                InvolvedObject = new V1ObjectReference { ApiVersion = "v1", Kind = "Pod", Name = pod.Metadata.Name, NamespaceProperty = ns, Uid = pod.Metadata.Uid },
                Reason = "FailedScheduling",
                Message = message,
                Type = "Warning",
                Count = 1,
                FirstTimestamp = now,
                LastTimestamp = now,
                Source = new V1EventSource { Component = DefaultSchedulerName },
                ReportingComponent = DefaultSchedulerName,
            });
        }
        catch (ApiException ex) when (ex.Code is 409 or 404)
        {
            // Events are best effort, as in the real scheduler.
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 4101, Level = LogLevel.Debug, Message = "Bound pod {Namespace}/{Pod} to node {Node}")]
        public static partial void Bound(ILogger logger, string @namespace, string pod, string node);

        [LoggerMessage(EventId = 4102, Level = LogLevel.Information, Message = "Pod {Namespace}/{Pod} is unschedulable: {Message}")]
        public static partial void Unschedulable(ILogger logger, string @namespace, string pod, string message);
    }
}
