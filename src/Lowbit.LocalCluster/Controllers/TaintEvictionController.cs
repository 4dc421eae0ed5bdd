using k8s.Models;
using Lowbit.LocalCluster.Scheduling;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster.Controllers;

/// <summary>
/// The taint manager: when a node gets a NoExecute taint, its pods that do not tolerate it get
/// <c>DisruptionTarget=True, reason DeletionByTaintManager</c> and are deleted (tolerationSeconds is not waited for).
/// Tainting a simulated node (<c>kubectl taint node gpu-h100-0 lost=true:NoExecute</c>) reproduces node loss.
/// </summary>
public sealed class TaintEvictionController
{
    private readonly ClusterApi _api;
    private readonly Informer _nodes;
    private readonly Informer _pods;
    private readonly TimeProvider _time;
    private readonly ControllerLoop _loop;
    private readonly HashSet<string> _tainted = new(StringComparer.Ordinal);

    public TaintEvictionController(ClusterApi api, Informer nodes, Informer pods, TimeProvider time, ILogger logger)
    {
        _api = api;
        _nodes = nodes;
        _pods = pods;
        _time = time;
        _loop = new ControllerLoop("taint-eviction", ReconcileAsync, time, logger);
        nodes.OnChange((old, node) =>
        {
            var name = (node ?? old)!.Name;
            lock (_tainted)
            {
                if (node is not null && node.As<V1Node>().Spec?.Taints?.Any(t => t.Effect == "NoExecute") == true)
                {
                    _tainted.Add(name);
                }
                else
                {
                    _tainted.Remove(name);
                }
            }
            _loop.Enqueue((node ?? old)!.Key);
        });
        pods.OnChange((_, pod) =>
        {
            if (pod?.NodeName is { Length: > 0 } nodeName && !pod.IsDeleting && IsTainted(nodeName))
            {
                _loop.Enqueue(StoredObject.KeyOf("", nodeName));
            }
        });
    }

    public Task RunAsync(CancellationToken cancellationToken) => _loop.RunAsync(1, cancellationToken);

    private bool IsTainted(string node)
    {
        lock (_tainted)
        {
            return _tainted.Contains(node);
        }
    }

    private Task<Requeue> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var (_, name) = Typed.SplitKey(key);
        var stored = _nodes.Get(null, name);
        var taints = stored?.As<V1Node>().Spec?.Taints?.Where(t => t.Effect == "NoExecute").ToList() ?? [];
        if (taints.Count == 0)
        {
            return Task.FromResult(Requeue.Done);
        }
        foreach (var candidate in _pods.All().Where(p => p.NodeName == name && !p.IsDeleting && p.Phase is not ("Succeeded" or "Failed")))
        {
            var pod = candidate.As<V1Pod>();
            var taint = taints.FirstOrDefault(t => !SchedulingPredicates.Tolerates(pod.Spec.Tolerations, t));
            if (taint is null)
            {
                continue;
            }
            pod.Status ??= new V1PodStatus();
            pod.Status.Conditions = Typed.SetCondition(pod.Status.Conditions, new V1PodCondition
            {
                Type = "DisruptionTarget",
                Status = "True",
                Reason = "DeletionByTaintManager",
                Message = $"Taint manager: deleting due to NoExecute taint {taint.Key}={taint.Value}:NoExecute",
                LastTransitionTime = Typed.Truncate(_time.GetUtcNow()),
            });
            try
            {
                _api.Replace(BuiltinResources.Pods, pod, "status");
                _api.Delete(BuiltinResources.Pods, pod.Metadata.NamespaceProperty, pod.Metadata.Name, new DeleteOptions { PreconditionUid = pod.Metadata.Uid });
            }
            catch (ApiException ex) when (ex.Code == 404)
            {
            }
        }
        return Task.FromResult(Requeue.Done);
    }
}
