using System.Globalization;
using k8s.Models;

namespace Lowbit.LocalCluster.Scheduling;

/// <summary>A node as the scheduler sees it: the Node object plus the requests of the pods already on it.</summary>
public sealed record NodeState(V1Node Node, IReadOnlyDictionary<string, decimal> Requested, int PodCount);

/// <summary>The outcome of placing one pod.</summary>
public abstract record SchedulingResult;

/// <summary>The pod fits <see cref="NodeName"/>.</summary>
public sealed record Fits(string NodeName) : SchedulingResult;

/// <summary>No node fits; <see cref="Message"/> is kube-scheduler's FailedScheduling message.</summary>
public sealed record DoesNotFit(string Message) : SchedulingResult;

/// <summary>
/// The default scheduler's filters that matter here, in its order (NodeUnschedulable, TaintToleration,
/// NodeAffinity incl. nodeSelector, NodeResourcesFit), and its message format for pods that fit nowhere.
/// Among fitting nodes the least allocated one (by the scarcest requested resource) wins; ties by name.
/// </summary>
public static class SchedulingPredicates
{
    private const string NotHelpful = "Preemption is not helpful for scheduling";
    private const string NoVictims = "No preemption victims found for incoming pod";

    public static SchedulingResult Schedule(V1Pod pod, IReadOnlyList<NodeState> nodes)
    {
        if (nodes.Count == 0)
        {
            return new DoesNotFit("no nodes available to schedule pods");
        }
        var requests = PodRequests(pod.Spec);
        var reasons = new Dictionary<string, int>(StringComparer.Ordinal);
        var resolvable = 0;
        NodeState? best = null;
        var bestScore = decimal.MaxValue;
        foreach (var node in nodes)
        {
            var failures = Filter(pod, requests, node, out var unresolvable);
            if (failures.Count == 0)
            {
                var score = Utilization(requests, node);
                if (best is null || score < bestScore || (score == bestScore && string.CompareOrdinal(node.Node.Metadata.Name, best.Node.Metadata.Name) < 0))
                {
                    best = node;
                    bestScore = score;
                }
                continue;
            }
            if (!unresolvable)
            {
                resolvable++;
            }
            foreach (var reason in failures)
            {
                reasons[reason] = reasons.GetValueOrDefault(reason) + 1;
            }
        }
        if (best is not null)
        {
            return new Fits(best.Node.Metadata.Name);
        }
        var preemption = new Dictionary<string, int>(StringComparer.Ordinal);
        if (nodes.Count - resolvable > 0)
        {
            preemption[NotHelpful] = nodes.Count - resolvable;
        }
        if (resolvable > 0)
        {
            preemption[NoVictims] = resolvable;
        }
        return new DoesNotFit($"0/{nodes.Count} nodes are available: {Join(reasons)}. preemption: 0/{nodes.Count} nodes are available: {Join(preemption)}.");
    }

    /// <summary>The reasons a node rejects the pod (empty when it fits), as kube-scheduler words them.</summary>
    public static IReadOnlyList<string> Filter(V1Pod pod, IReadOnlyDictionary<string, decimal> requests, NodeState state, out bool unresolvable)
    {
        var node = state.Node;
        unresolvable = true;
        if (node.Spec?.Unschedulable == true && !Tolerates(pod.Spec.Tolerations, new V1Taint { Effect = "NoSchedule", Key = "node.kubernetes.io/unschedulable" }))
        {
            return ["node(s) were unschedulable"];
        }
        if (!IsReady(node))
        {
            return ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"];
        }
        foreach (var taint in node.Spec?.Taints ?? [])
        {
            if (taint.Effect is "NoSchedule" or "NoExecute" && !Tolerates(pod.Spec.Tolerations, taint))
            {
                return [$"node(s) had untolerated taint {{{taint.Key}: {taint.Value}}}"];
            }
        }
        if (!MatchesNodeSelector(pod.Spec, node))
        {
            return ["node(s) didn't match Pod's node affinity/selector"];
        }
        unresolvable = false;
        var failures = new List<string>();
        var allocatable = node.Status?.Allocatable ?? new Dictionary<string, ResourceQuantity>();
        if (allocatable.TryGetValue("pods", out var maxPods) && state.PodCount + 1 > maxPods.ToDecimal())
        {
            failures.Add("Too many pods");
        }
        foreach (var (resource, amount) in requests.OrderBy(r => r.Key, StringComparer.Ordinal))
        {
            if (amount <= 0)
            {
                continue;
            }
            var free = (allocatable.TryGetValue(resource, out var q) ? q.ToDecimal() : 0) - state.Requested.GetValueOrDefault(resource);
            if (amount > free)
            {
                failures.Add($"Insufficient {resource}");
            }
        }
        return failures;
    }

    /// <summary>A pod's effective requests: the sum over containers, at least each init container's; limits stand in for missing requests.</summary>
    public static Dictionary<string, decimal> PodRequests(V1PodSpec spec)
    {
        var total = new Dictionary<string, decimal>(StringComparer.Ordinal);
        foreach (var container in spec.Containers ?? [])
        {
            foreach (var (resource, amount) in ContainerRequests(container))
            {
                total[resource] = total.GetValueOrDefault(resource) + amount;
            }
        }
        foreach (var init in spec.InitContainers ?? [])
        {
            foreach (var (resource, amount) in ContainerRequests(init))
            {
                total[resource] = Math.Max(total.GetValueOrDefault(resource), amount);
            }
        }
        return total;
    }

    public static bool Tolerates(IList<V1Toleration>? tolerations, V1Taint taint) =>
        (tolerations ?? []).Any(t =>
            (string.IsNullOrEmpty(t.Effect) || t.Effect == taint.Effect)
            && (string.IsNullOrEmpty(t.Key) ? t.OperatorProperty == "Exists" : t.Key == taint.Key)
            && (t.OperatorProperty == "Exists" || (t.Value ?? "") == (taint.Value ?? "")));

    public static bool MatchesNodeSelector(V1PodSpec spec, V1Node node)
    {
        var labels = node.Metadata.Labels ?? new Dictionary<string, string>();
        if (spec.NodeSelector is { } selector && selector.Any(kv => !labels.TryGetValue(kv.Key, out var v) || v != kv.Value))
        {
            return false;
        }
        var terms = spec.Affinity?.NodeAffinity?.RequiredDuringSchedulingIgnoredDuringExecution?.NodeSelectorTerms;
        return terms is null || terms.Count == 0 || terms.Any(term => TermMatches(term, node, labels));
    }

    private static bool TermMatches(V1NodeSelectorTerm term, V1Node node, IDictionary<string, string> labels)
    {
        if ((term.MatchExpressions?.Count ?? 0) == 0 && (term.MatchFields?.Count ?? 0) == 0)
        {
            return false;
        }
        var fields = new Dictionary<string, string>(StringComparer.Ordinal) { ["metadata.name"] = node.Metadata.Name };
        return (term.MatchExpressions ?? []).All(e => Requirement(e, labels)) && (term.MatchFields ?? []).All(e => Requirement(e, fields));
    }

    private static bool Requirement(V1NodeSelectorRequirement requirement, IDictionary<string, string> values)
    {
        var has = values.TryGetValue(requirement.Key, out var value);
        var wanted = requirement.Values ?? [];
        return requirement.OperatorProperty switch
        {
            "In" => has && wanted.Contains(value),
            "NotIn" => !has || !wanted.Contains(value),
            "Exists" => has,
            "DoesNotExist" => !has,
            "Gt" => has && long.TryParse(value, CultureInfo.InvariantCulture, out var gt) && wanted.Count == 1
                && long.TryParse(wanted[0], CultureInfo.InvariantCulture, out var gtBound) && gt > gtBound,
            "Lt" => has && long.TryParse(value, CultureInfo.InvariantCulture, out var lt) && wanted.Count == 1
                && long.TryParse(wanted[0], CultureInfo.InvariantCulture, out var ltBound) && lt < ltBound,
            _ => false,
        };
    }

    private static IEnumerable<KeyValuePair<string, decimal>> ContainerRequests(V1Container container)
    {
        var requests = container.Resources?.Requests ?? new Dictionary<string, ResourceQuantity>();
        var limits = container.Resources?.Limits ?? new Dictionary<string, ResourceQuantity>();
        foreach (var key in requests.Keys.Union(limits.Keys))
        {
            var quantity = requests.TryGetValue(key, out var r) ? r : limits[key];
            yield return KeyValuePair.Create(key, quantity.ToDecimal());
        }
    }

    private static bool IsReady(V1Node node) =>
        node.Status?.Conditions?.FirstOrDefault(c => c.Type == "Ready") is not { } ready || ready.Status == "True";

    /// <summary>The highest fraction of any requested resource that would be in use: spreads pods, keeps big nodes for big pods.</summary>
    private static decimal Utilization(IReadOnlyDictionary<string, decimal> requests, NodeState state)
    {
        var allocatable = state.Node.Status?.Allocatable ?? new Dictionary<string, ResourceQuantity>();
        var score = 0m;
        foreach (var resource in new[] { "cpu", "memory", "nvidia.com/gpu" })
        {
            if (!allocatable.TryGetValue(resource, out var q) || q.ToDecimal() <= 0)
            {
                continue;
            }
            var used = state.Requested.GetValueOrDefault(resource) + requests.GetValueOrDefault(resource);
            score = Math.Max(score, used / q.ToDecimal());
        }
        // Pods without GPU requests stay off GPU nodes when a CPU node fits.
        if (requests.GetValueOrDefault("nvidia.com/gpu") == 0 && allocatable.TryGetValue("nvidia.com/gpu", out var gpus) && gpus.ToDecimal() > 0)
        {
            score += 1;
        }
        return score;
    }

    private static string Join(Dictionary<string, int> counts) =>
        string.Join(", ", counts.Select(kv => $"{kv.Value} {kv.Key}").OrderBy(s => s, StringComparer.Ordinal));
}
