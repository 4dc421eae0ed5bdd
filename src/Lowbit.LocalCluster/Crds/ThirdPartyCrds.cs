using k8s;
using k8s.Models;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Crds;

/// <summary>
/// CustomResourceDefinitions of other projects that the operator uses when a cluster has them, shipped with the
/// embedded API server so tests (and <c>lowbit local up</c>) can install them: the LeaderWorkerSet CRD (a faithful
/// subset of kubernetes-sigs/lws's; see the YAML's header for what differs). Installing a CRD serves its API; no
/// controller runs its objects here.
/// </summary>
public static class ThirdPartyCrds
{
    /// <summary>The LeaderWorkerSet CRD's YAML (<c>leaderworkersets.leaderworkerset.x-k8s.io</c>, version v1).</summary>
    public static string LeaderWorkerSetYaml { get; } = Read("leaderworkerset.x-k8s.io_leaderworkersets.yaml");

    /// <summary>The LeaderWorkerSet CRD as an object.</summary>
    public static V1CustomResourceDefinition LeaderWorkerSet() => KubernetesYaml.Deserialize<V1CustomResourceDefinition>(LeaderWorkerSetYaml);

    /// <summary>Creates the LeaderWorkerSet CRD in the embedded server's store (it is served at once).</summary>
    public static void InstallLeaderWorkerSet(ClusterApi api)
    {
        ArgumentNullException.ThrowIfNull(api);
        api.Create(LeaderWorkerSet());
    }

    private static string Read(string name)
    {
        using var stream = typeof(ThirdPartyCrds).Assembly.GetManifestResourceStream($"{typeof(ThirdPartyCrds).Namespace}.{name}")
            ?? throw new InvalidOperationException($"embedded resource {name} is missing from {typeof(ThirdPartyCrds).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
