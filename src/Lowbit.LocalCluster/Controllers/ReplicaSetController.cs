using k8s.Models;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster.Controllers;

/// <summary>
/// apps/v1 ReplicaSets: keeps spec.replicas active pods (creating from the template, deleting unscheduled,
/// pending and unready pods first), and writes status replicas, fullyLabeledReplicas, readyReplicas,
/// availableReplicas (minReadySeconds is not waited for) and observedGeneration.
/// </summary>
public sealed class ReplicaSetController
{
    private readonly ClusterApi _api;
    private readonly Informer _replicaSets;
    private readonly PodControl _podControl;
    private readonly ControllerLoop _loop;

    public ReplicaSetController(ClusterApi api, Informer replicaSets, Informer pods, PodControl podControl, TimeProvider time, ILogger logger)
    {
        _api = api;
        _replicaSets = replicaSets;
        _podControl = podControl;
        _loop = new ControllerLoop("replicaset-controller", ReconcileAsync, time, logger);
        replicaSets.OnChange((old, rs) =>
        {
            if (rs is null && old is not null)
            {
                _podControl.Forget(old.Uid);
            }
            _loop.Enqueue((rs ?? old)!.Key);
        });
        pods.OnChange((old, pod) =>
        {
            var obj = (pod ?? old)!;
            if (obj.OwnerUids.Count == 0 || obj.Labels.ContainsKey("batch.kubernetes.io/job-name"))
            {
                return;
            }
            var owner = obj.As<V1Pod>().Metadata.OwnerReferences?.FirstOrDefault(r => r.Controller == true && r.Kind == "ReplicaSet");
            if (owner is not null)
            {
                _loop.Enqueue(StoredObject.KeyOf(obj.Namespace, owner.Name));
            }
        });
    }

    public Task RunAsync(CancellationToken cancellationToken) => _loop.RunAsync(2, cancellationToken);

    private Task<Requeue> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var (ns, name) = Typed.SplitKey(key);
        var stored = _replicaSets.Get(ns, name);
        if (stored is null || stored.IsDeleting)
        {
            return Task.FromResult(Requeue.Done);
        }
        var rs = stored.As<V1ReplicaSet>();
        var pods = _podControl.PodsOf(rs.Metadata.Uid);
        var active = pods.Where(PodControl.IsActive).ToList();
        var wanted = rs.Spec.Replicas ?? 1;
        if (active.Count < wanted)
        {
            for (var i = active.Count; i < wanted; i++)
            {
                active.Add(_podControl.Create(rs.Metadata.NamespaceProperty, rs.Spec.Template, rs.Metadata.Name + "-",
                    Typed.OwnerReference(rs, "apps/v1", "ReplicaSet")));
            }
        }
        else if (active.Count > wanted)
        {
            var victims = active
                .OrderBy(p => string.IsNullOrEmpty(p.Spec?.NodeName) ? 0 : 1)
                .ThenBy(p => p.Status?.Phase == "Pending" ? 0 : 1)
                .ThenBy(p => PodControl.IsReady(p) ? 1 : 0)
                .ThenByDescending(p => p.Metadata.CreationTimestamp)
                .Take(active.Count - wanted)
                .ToList();
            foreach (var pod in victims)
            {
                _podControl.Delete(rs.Metadata.Uid, pod);
                active.Remove(pod);
            }
        }
        var ready = active.Count(PodControl.IsReady);
        var status = new V1ReplicaSetStatus
        {
            Replicas = active.Count,
            FullyLabeledReplicas = active.Count,
            ReadyReplicas = ready == 0 ? null : ready,
            AvailableReplicas = ready == 0 ? null : ready,
            ObservedGeneration = rs.Metadata.Generation,
            Conditions = rs.Status?.Conditions,
        };
        if (!Typed.SameJson(rs.Status, status))
        {
            rs.Status = status;
            _api.Replace(BuiltinResources.ReplicaSets, rs, "status");
        }
        return Task.FromResult(Requeue.Done);
    }
}
