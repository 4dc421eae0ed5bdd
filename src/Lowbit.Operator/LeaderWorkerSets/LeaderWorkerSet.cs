using k8s;
using k8s.Models;

namespace Lowbit.Operator.LeaderWorkerSets;

/// <summary>
/// The upstream LeaderWorkerSet (<c>leaderworkerset.x-k8s.io/v1</c>, kubernetes-sigs/lws
/// <c>api/leaderworkerset/v1/leaderworkerset_types.go</c>): the fields the operator writes and reads, spelled as upstream
/// spells them. Not a built-in kind, so KubernetesClient has no model for it. A group is one leader pod and
/// <c>size − 1</c> workers; <c>spec.replicas</c> groups.
/// </summary>
[KubernetesEntity(Group = Group, ApiVersion = Version, Kind = KindName, PluralName = Plural)]
public sealed class LeaderWorkerSet : IKubernetesObject<V1ObjectMeta>, ISpec<LeaderWorkerSetSpec>, IStatus<LeaderWorkerSetStatus?>
{
    public const string Group = "leaderworkerset.x-k8s.io";
    public const string Version = "v1";
    public const string KindName = "LeaderWorkerSet";
    public const string Plural = "leaderworkersets";

    /// <summary>The pod label LWS sets to the pod's index in its group: <c>0</c> on the leader.</summary>
    public const string WorkerIndexLabel = "leaderworkerset.sigs.k8s.io/worker-index";

    /// <summary>The pod label LWS sets to the LeaderWorkerSet's name.</summary>
    public const string SetNameLabel = "leaderworkerset.sigs.k8s.io/name";

    /// <summary>Environment variable LWS injects into every container: the leader pod's address.</summary>
    public const string LeaderAddressEnv = "LWS_LEADER_ADDRESS";

    /// <summary>Environment variable LWS injects into every container: the group's size.</summary>
    public const string GroupSizeEnv = "LWS_GROUP_SIZE";

    /// <summary>Recreate every pod of a group when one of them restarts (a Ray cluster does not survive a lost member).</summary>
    public const string RecreateGroupOnPodRestart = "RecreateGroupOnPodRestart";

    public string ApiVersion { get; set; } = $"{Group}/{Version}";

    public string Kind { get; set; } = KindName;

    public V1ObjectMeta Metadata { get; set; } = new();

    public LeaderWorkerSetSpec Spec { get; set; } = new();

    public LeaderWorkerSetStatus? Status { get; set; }
}

/// <summary><c>LeaderWorkerSetSpec</c>.</summary>
public sealed record LeaderWorkerSetSpec
{
    /// <summary>Groups (leader + workers) to run.</summary>
    public int? Replicas { get; init; }

    public LeaderWorkerTemplate LeaderWorkerTemplate { get; init; } = new();

    public LeaderWorkerSetRolloutStrategy? RolloutStrategy { get; init; }

    /// <summary><c>LeaderCreated</c> (workers start with the leader) or <c>LeaderReady</c>.</summary>
    public string? StartupPolicy { get; init; }
}

/// <summary><c>LeaderWorkerTemplate</c>.</summary>
public sealed record LeaderWorkerTemplate
{
    public V1PodTemplateSpec? LeaderTemplate { get; init; }

    public V1PodTemplateSpec WorkerTemplate { get; init; } = new();

    /// <summary>Pods per group, the leader included.</summary>
    public int? Size { get; init; }

    /// <summary><c>RecreateGroupOnPodRestart</c>, <c>RecreateGroupAfterStart</c> or <c>None</c>.</summary>
    public string? RestartPolicy { get; init; }
}

/// <summary><c>RolloutStrategy</c>.</summary>
public sealed record LeaderWorkerSetRolloutStrategy
{
    public string Type { get; init; } = "RollingUpdate";

    public LeaderWorkerSetRollingUpdate? RollingUpdateConfiguration { get; init; }
}

/// <summary><c>RollingUpdateConfiguration</c>.</summary>
public sealed record LeaderWorkerSetRollingUpdate
{
    public IntOrString? MaxUnavailable { get; init; }

    public IntOrString? MaxSurge { get; init; }
}

/// <summary><c>LeaderWorkerSetStatus</c>: counts are groups, not pods.</summary>
public sealed record LeaderWorkerSetStatus
{
    public IReadOnlyList<V1Condition>? Conditions { get; init; }

    /// <summary>Groups whose pods are all ready (updated or not).</summary>
    public int? ReadyReplicas { get; init; }

    /// <summary>Groups on the current template (ready or not).</summary>
    public int? UpdatedReplicas { get; init; }

    /// <summary>Groups created.</summary>
    public int? Replicas { get; init; }

    public string? HpaPodSelector { get; init; }

    public long? ObservedGeneration { get; init; }
}

/// <summary>What the operator's cache keeps of a LeaderWorkerSet.</summary>
public static class LeaderWorkerSetCache
{
    /// <summary>Metadata, status, replicas and group size: the pod templates are dropped (the spec-hash annotation tells whether it is current).</summary>
    public static LeaderWorkerSet Trim(LeaderWorkerSet set)
    {
        ArgumentNullException.ThrowIfNull(set);
        set.Spec = new LeaderWorkerSetSpec
        {
            Replicas = set.Spec?.Replicas,
            LeaderWorkerTemplate = new LeaderWorkerTemplate { Size = set.Spec?.LeaderWorkerTemplate?.Size },
        };
        return set;
    }
}
