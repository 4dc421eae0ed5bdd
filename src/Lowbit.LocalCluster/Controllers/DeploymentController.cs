using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster.Controllers;

/// <summary>
/// apps/v1 Deployments: one ReplicaSet per pod template (named <c>&lt;deployment&gt;-&lt;pod-template-hash&gt;</c>,
/// revision annotations), Recreate or RollingUpdate (new ReplicaSet scaled up within maxSurge, old ones scaled
/// down while availability stays above replicas - maxUnavailable), revisionHistoryLimit, paused, and the status
/// kubectl rollout status reads: replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas,
/// observedGeneration, conditions Available and Progressing (ProgressDeadlineExceeded after progressDeadlineSeconds
/// without progress).
/// </summary>
public sealed class DeploymentController
{
    public const string RevisionAnnotation = "deployment.kubernetes.io/revision";
    public const string TemplateHashLabel = "pod-template-hash";

    private readonly ClusterApi _api;
    private readonly Informer _deployments;
    private readonly Informer _replicaSets;
    private readonly TimeProvider _time;
    private readonly ControllerLoop _loop;

    public DeploymentController(ClusterApi api, Informer deployments, Informer replicaSets, TimeProvider time, ILogger logger)
    {
        _api = api;
        _deployments = deployments;
        _replicaSets = replicaSets;
        _time = time;
        _loop = new ControllerLoop("deployment-controller", ReconcileAsync, time, logger);
        deployments.OnChange((old, d) => _loop.Enqueue((d ?? old)!.Key));
        replicaSets.OnChange((old, rs) =>
        {
            var obj = (rs ?? old)!;
            if (obj.OwnerUids.Count == 0)
            {
                return;
            }
            var owner = Typed.ControllerOf(obj.As<V1ReplicaSet>().Metadata);
            if (owner?.Kind == "Deployment")
            {
                _loop.Enqueue(StoredObject.KeyOf(obj.Namespace, owner.Name));
            }
        });
    }

    public Task RunAsync(CancellationToken cancellationToken) => _loop.RunAsync(2, cancellationToken);

    /// <summary>The pod-template-hash of a template (FNV-1a of its JSON, encoded like kube-controller-manager's).</summary>
    public static string TemplateHash(V1PodTemplateSpec template)
    {
        var json = Encoding.UTF8.GetBytes(KubernetesJson.Serialize(WithoutHash(template)));
        var hash = 2166136261u;
        foreach (var b in json)
        {
            hash = unchecked((hash ^ b) * 16777619u);
        }
        const string Alphabet = "bcdfghjklmnpqrstvwxz2456789";
        return string.Concat(hash.ToString(CultureInfo.InvariantCulture).Select(c => Alphabet[c % Alphabet.Length]));
    }

    private Task<Requeue> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var (ns, name) = Typed.SplitKey(key);
        var stored = _deployments.Get(ns, name);
        if (stored is null || stored.IsDeleting)
        {
            return Task.FromResult(Requeue.Done);
        }
        var deployment = stored.As<V1Deployment>();
        var spec = deployment.Spec;
        var now = Typed.Truncate(_time.GetUtcNow());
        var owned = _replicaSets.OwnedBy(deployment.Metadata.Uid)
            .Select(r => r.As<V1ReplicaSet>())
            .Where(r => Typed.ControllerOf(r.Metadata)?.Uid == deployment.Metadata.Uid && r.Metadata.DeletionTimestamp is null)
            .ToList();
        var hash = TemplateHash(spec.Template);
        var templateJson = JsonNode.Parse(KubernetesJson.Serialize(WithoutHash(spec.Template)));
        var newRs = owned.FirstOrDefault(r => JsonNode.DeepEquals(JsonNode.Parse(KubernetesJson.Serialize(WithoutHash(r.Spec.Template))), templateJson));
        var olds = owned.Where(r => r != newRs).OrderBy(r => Revision(r)).ToList();
        var replicas = spec.Replicas ?? 1;
        var createdNew = false;
        if (newRs is null && spec.Paused != true)
        {
            newRs = CreateReplicaSet(deployment, hash, olds.Count == 0 ? replicas : 0, olds.Select(Revision).DefaultIfEmpty(0).Max() + 1);
            createdNew = true;
        }
        if (spec.Paused != true && newRs is not null)
        {
            Scale(deployment, newRs, olds, replicas);
            CleanupHistory(olds, spec.RevisionHistoryLimit ?? 10);
        }
        var all = owned.Append(newRs).OfType<V1ReplicaSet>().Distinct().ToList();
        var status = ComputeStatus(deployment, newRs, all, now, createdNew);
        if (!Typed.SameJson(deployment.Status, status))
        {
            deployment.Status = status;
            _api.Replace(BuiltinResources.Deployments, deployment, "status");
        }
        var progressing = status.Conditions?.FirstOrDefault(c => c.Type == "Progressing");
        if (progressing is { Status: "True" } && progressing.Reason != "NewReplicaSetAvailable" && spec.ProgressDeadlineSeconds is { } deadline
            && progressing.LastUpdateTime is { } updated)
        {
            var left = updated.ToUniversalTime().AddSeconds(deadline) - now;
            return Task.FromResult(Requeue.In(left > TimeSpan.Zero ? left + TimeSpan.FromMilliseconds(100) : TimeSpan.FromMilliseconds(100)));
        }
        return Task.FromResult(Requeue.Done);
    }

    private V1ReplicaSet CreateReplicaSet(V1Deployment deployment, string hash, int replicas, long revision)
    {
        var template = KubernetesJson.Deserialize<V1PodTemplateSpec>(KubernetesJson.Serialize(deployment.Spec.Template));
        template.Metadata ??= new V1ObjectMeta();
        template.Metadata.Labels = new Dictionary<string, string>(template.Metadata.Labels ?? new Dictionary<string, string>(), StringComparer.Ordinal)
        {
            [TemplateHashLabel] = hash,
        };
        var selector = new V1LabelSelector
        {
            MatchLabels = new Dictionary<string, string>(deployment.Spec.Selector?.MatchLabels ?? new Dictionary<string, string>(), StringComparer.Ordinal)
            {
                [TemplateHashLabel] = hash,
            },
            MatchExpressions = deployment.Spec.Selector?.MatchExpressions,
        };
        var rs = new V1ReplicaSet
        {
            ApiVersion = "apps/v1",
            Kind = "ReplicaSet",
            Metadata = new V1ObjectMeta
            {
                Name = $"{deployment.Metadata.Name}-{hash}",
                NamespaceProperty = deployment.Metadata.NamespaceProperty,
                Labels = template.Metadata.Labels,
                Annotations = new Dictionary<string, string>(StringComparer.Ordinal)
                {
                    [RevisionAnnotation] = revision.ToString(CultureInfo.InvariantCulture),
                    ["deployment.kubernetes.io/desired-replicas"] = (deployment.Spec.Replicas ?? 1).ToString(CultureInfo.InvariantCulture),
                    ["deployment.kubernetes.io/max-replicas"] = ((deployment.Spec.Replicas ?? 1) + MaxSurge(deployment)).ToString(CultureInfo.InvariantCulture),
                },
                OwnerReferences = [Typed.OwnerReference(deployment, "apps/v1", "Deployment")],
            },
            Spec = new V1ReplicaSetSpec
            {
                Replicas = replicas,
                MinReadySeconds = deployment.Spec.MinReadySeconds,
                Selector = selector,
                Template = template,
            },
        };
        try
        {
            return _api.Create(BuiltinResources.ReplicaSets, deployment.Metadata.NamespaceProperty, rs);
        }
        catch (ApiException ex) when (ex.Code == 409)
        {
            // Created by an earlier reconcile the informer has not shown yet.
            return _api.Get(BuiltinResources.ReplicaSets, deployment.Metadata.NamespaceProperty, rs.Metadata.Name).As<V1ReplicaSet>();
        }
    }

    private void Scale(V1Deployment deployment, V1ReplicaSet newRs, List<V1ReplicaSet> olds, int replicas)
    {
        var activeOlds = olds.Where(r => (r.Spec.Replicas ?? 0) > 0).ToList();
        if (activeOlds.Count == 0)
        {
            SetReplicas(newRs, replicas);
            return;
        }
        if (deployment.Spec.Strategy?.Type == "Recreate")
        {
            foreach (var old in activeOlds)
            {
                SetReplicas(old, 0);
            }
            if (activeOlds.All(r => (r.Status?.Replicas ?? 0) == 0))
            {
                SetReplicas(newRs, replicas);
            }
            return;
        }
        var maxSurge = MaxSurge(deployment);
        var maxUnavailable = MaxUnavailable(deployment);
        var all = activeOlds.Append(newRs).ToList();
        var total = all.Sum(r => r.Spec.Replicas ?? 0);
        var newReplicas = newRs.Spec.Replicas ?? 0;
        if (newReplicas < replicas && total < replicas + maxSurge)
        {
            newReplicas = Math.Min(replicas, newReplicas + (replicas + maxSurge - total));
            SetReplicas(newRs, newReplicas);
        }
        else if (newReplicas > replicas)
        {
            SetReplicas(newRs, replicas);
        }
        var available = all.Sum(r => r.Status?.AvailableReplicas ?? 0);
        var budget = Math.Max(0, available - (replicas - maxUnavailable));
        foreach (var old in activeOlds)
        {
            var unhealthy = Math.Max(0, (old.Spec.Replicas ?? 0) - (old.Status?.AvailableReplicas ?? 0));
            var cut = Math.Min(old.Spec.Replicas ?? 0, unhealthy + budget);
            budget -= Math.Max(0, cut - unhealthy);
            if (cut > 0)
            {
                SetReplicas(old, (old.Spec.Replicas ?? 0) - cut);
            }
        }
    }

    private void SetReplicas(V1ReplicaSet rs, int replicas)
    {
        if (rs.Spec.Replicas == replicas)
        {
            return;
        }
        var patch = new JsonObject { ["spec"] = new JsonObject { ["replicas"] = replicas } };
        _api.Patch(BuiltinResources.ReplicaSets, rs.Metadata.NamespaceProperty, rs.Metadata.Name, PatchKind.Merge, patch.ToJsonString());
        rs.Spec.Replicas = replicas;
    }

    private void CleanupHistory(List<V1ReplicaSet> olds, int limit)
    {
        var idle = olds.Where(r => (r.Spec.Replicas ?? 0) == 0 && (r.Status?.Replicas ?? 0) == 0).OrderBy(Revision).ToList();
        foreach (var rs in idle.Take(Math.Max(0, idle.Count - limit)))
        {
            try
            {
                _api.Delete(BuiltinResources.ReplicaSets, rs.Metadata.NamespaceProperty, rs.Metadata.Name);
            }
            catch (ApiException ex) when (ex.Code == 404)
            {
            }
        }
    }

    private static V1DeploymentStatus ComputeStatus(V1Deployment deployment, V1ReplicaSet? newRs, List<V1ReplicaSet> all, DateTime now, bool createdNew)
    {
        var replicas = deployment.Spec.Replicas ?? 1;
        var status = new V1DeploymentStatus
        {
            ObservedGeneration = deployment.Metadata.Generation,
            Replicas = all.Sum(r => r.Status?.Replicas ?? 0),
            UpdatedReplicas = newRs?.Status?.Replicas ?? 0,
            ReadyReplicas = all.Sum(r => r.Status?.ReadyReplicas ?? 0),
            AvailableReplicas = all.Sum(r => r.Status?.AvailableReplicas ?? 0),
        };
        var desiredTotal = all.Sum(r => r.Spec.Replicas ?? 0);
        status.UnavailableReplicas = Math.Max(0, desiredTotal - (status.AvailableReplicas ?? 0));
        var old = deployment.Status;
        var conditions = old?.Conditions?.ToList() ?? [];
        var minAvailable = replicas - MaxUnavailable(deployment);
        conditions = Set(conditions, (status.AvailableReplicas ?? 0) >= minAvailable
            ? Condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", now)
            : Condition("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", now));
        var rsName = newRs?.Metadata.Name ?? deployment.Metadata.Name;
        var complete = newRs is not null && status.UpdatedReplicas == replicas && status.Replicas == replicas && status.AvailableReplicas == replicas;
        var progressing = conditions.FirstOrDefault(c => c.Type == "Progressing");
        var progressed = old is null || (old.UpdatedReplicas ?? 0) != status.UpdatedReplicas || (old.AvailableReplicas ?? 0) != status.AvailableReplicas
            || (old.ReadyReplicas ?? 0) != status.ReadyReplicas || (old.Replicas ?? 0) != status.Replicas || old.ObservedGeneration != status.ObservedGeneration;
        if (deployment.Spec.Paused == true)
        {
            conditions = Set(conditions, Condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now));
        }
        else if (complete)
        {
            conditions = Set(conditions, Condition("Progressing", "True", "NewReplicaSetAvailable", $"ReplicaSet \"{rsName}\" has successfully progressed.", now));
        }
        else if (createdNew)
        {
            conditions = Set(conditions, Condition("Progressing", "True", "NewReplicaSetCreated", $"Created new replica set \"{rsName}\"", now));
        }
        else if (progressed || progressing is null || progressing.Reason is "NewReplicaSetAvailable" or "DeploymentPaused")
        {
            conditions = Set(conditions, Condition("Progressing", "True", "ReplicaSetUpdated", $"ReplicaSet \"{rsName}\" is progressing.", now));
        }
        else if (progressing is { Status: "True" } && deployment.Spec.ProgressDeadlineSeconds is { } deadline
            && progressing.LastUpdateTime is { } since && now >= since.ToUniversalTime().AddSeconds(deadline))
        {
            conditions = Set(conditions, Condition("Progressing", "False", "ProgressDeadlineExceeded", $"ReplicaSet \"{rsName}\" has timed out progressing.", now));
        }
        status.Conditions = conditions.OrderBy(c => c.Type == "Available" ? 0 : 1).ToList();
        status.UnavailableReplicas = status.UnavailableReplicas == 0 ? null : status.UnavailableReplicas;
        status.ReadyReplicas = status.ReadyReplicas == 0 ? null : status.ReadyReplicas;
        status.AvailableReplicas = status.AvailableReplicas == 0 ? null : status.AvailableReplicas;
        status.UpdatedReplicas = status.UpdatedReplicas == 0 ? null : status.UpdatedReplicas;
        status.Replicas = status.Replicas == 0 ? null : status.Replicas;
        return status;
    }

    private static List<V1DeploymentCondition> Set(List<V1DeploymentCondition> conditions, V1DeploymentCondition condition)
    {
        var index = conditions.FindIndex(c => c.Type == condition.Type);
        if (index >= 0)
        {
            var existing = conditions[index];
            if (existing.Status == condition.Status && existing.Reason == condition.Reason && existing.Message == condition.Message
                && condition.Reason != "ReplicaSetUpdated")
            {
                return conditions;
            }
            if (existing.Status == condition.Status)
            {
                condition.LastTransitionTime = existing.LastTransitionTime;
            }
            conditions[index] = condition;
        }
        else
        {
            conditions.Add(condition);
        }
        return conditions;
    }

    private static V1DeploymentCondition Condition(string type, string status, string reason, string message, DateTime now) => new()
    {
        Type = type,
        Status = status,
        Reason = reason,
        Message = message,
        LastUpdateTime = now,
        LastTransitionTime = now,
    };

    private static long Revision(V1ReplicaSet rs) =>
        rs.Metadata.Annotations?.TryGetValue(RevisionAnnotation, out var text) == true && long.TryParse(text, CultureInfo.InvariantCulture, out var r) ? r : 0;

    private static int MaxSurge(V1Deployment deployment) =>
        deployment.Spec.Strategy?.Type == "Recreate" ? 0 : Resolve(deployment.Spec.Strategy?.RollingUpdate?.MaxSurge, deployment.Spec.Replicas ?? 1, roundUp: true, "25%");

    private static int MaxUnavailable(V1Deployment deployment)
    {
        if (deployment.Spec.Strategy?.Type == "Recreate")
        {
            return deployment.Spec.Replicas ?? 1;
        }
        var replicas = deployment.Spec.Replicas ?? 1;
        var unavailable = Resolve(deployment.Spec.Strategy?.RollingUpdate?.MaxUnavailable, replicas, roundUp: false, "25%");
        return unavailable == 0 && MaxSurge(deployment) == 0 ? 1 : Math.Min(unavailable, replicas);
    }

    private static int Resolve(IntOrString? value, int replicas, bool roundUp, string fallback)
    {
        var text = value?.Value ?? fallback;
        if (text.EndsWith('%'))
        {
            var percent = decimal.Parse(text[..^1], CultureInfo.InvariantCulture);
            var exact = replicas * percent / 100m;
            return (int)(roundUp ? Math.Ceiling(exact) : Math.Floor(exact));
        }
        return int.Parse(text, CultureInfo.InvariantCulture);
    }

    private static V1PodTemplateSpec WithoutHash(V1PodTemplateSpec template)
    {
        var copy = KubernetesJson.Deserialize<V1PodTemplateSpec>(KubernetesJson.Serialize(template));
        copy.Metadata?.Labels?.Remove(TemplateHashLabel);
        if (copy.Metadata?.Labels is { Count: 0 })
        {
            copy.Metadata.Labels = null;
        }
        return copy;
    }
}
