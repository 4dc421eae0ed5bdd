using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Nodes;

/// <summary>Builds Node objects from <see cref="NodeConfig"/> and registers them (create, or refresh after a restart).</summary>
public static class NodeRegistrar
{
    public const string GpuResource = "nvidia.com/gpu";

    public static V1Node Build(NodeConfig config, DateTime now)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["kubernetes.io/hostname"] = config.Name,
            ["kubernetes.io/os"] = "linux",
            ["kubernetes.io/arch"] = "amd64",
            ["beta.kubernetes.io/os"] = "linux",
            ["beta.kubernetes.io/arch"] = "amd64",
            [NodesConfig.KubeletModeLabel] = config.Mode == KubeletMode.Execute ? "execute" : "simulate",
        };
        foreach (var (k, v) in config.Labels)
        {
            labels[k] = v;
        }
        var resources = new Dictionary<string, ResourceQuantity>(StringComparer.Ordinal)
        {
            ["cpu"] = new(config.Cpu),
            ["memory"] = new(config.Memory),
            ["pods"] = new(config.MaxPods.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            ["ephemeral-storage"] = new("100Gi"),
        };
        if (config.Gpus > 0)
        {
            resources[GpuResource] = new(config.Gpus.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        return new V1Node
        {
            ApiVersion = "v1",
            Kind = "Node",
            Metadata = new V1ObjectMeta { Name = config.Name, Labels = labels },
            Spec = new V1NodeSpec
            {
                Taints = config.Taints.Count == 0 ? null : config.Taints.Select(t => new V1Taint { Effect = t.Effect, Key = t.Key, Value = t.Value }).ToList(),
            },
            Status = new V1NodeStatus
            {
                Capacity = resources,
                Allocatable = new Dictionary<string, ResourceQuantity>(resources, StringComparer.Ordinal),
                Conditions =
                [
                    Condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available", now),
                    Condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now),
                    Condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", now),
                    Condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", now),
                ],
                Addresses = [new V1NodeAddress { Address = "127.0.0.1", Type = "InternalIP" }, new V1NodeAddress { Address = config.Name, Type = "Hostname" }],
                NodeInfo = new V1NodeSystemInfo
                {
                    Architecture = "amd64",
                    OperatingSystem = "linux",
                    OsImage = config.Mode == KubeletMode.Execute ? "Lowbit local executor" : "Lowbit simulated node",
                    KernelVersion = Environment.OSVersion.Version.ToString(),
                    KubeletVersion = "v1.33.0-lowbit",
                    KubeProxyVersion = "v1.33.0-lowbit",
                    ContainerRuntimeVersion = config.Mode == KubeletMode.Execute ? "lowbit-exec://1" : "lowbit-sim://1",
                    MachineID = config.Name,
                    SystemUUID = config.Name,
                    BootID = config.Name,
                },
            },
        };
    }

    /// <summary>Creates each node, or replaces its labels, taints and status when it exists (a restarted cluster).</summary>
    public static void Register(ClusterApi api, NodesConfig config, DateTime now)
    {
        foreach (var nodeConfig in config.Nodes)
        {
            var desired = Build(nodeConfig, now);
            var existing = api.TryGet(BuiltinResources.Nodes, null, nodeConfig.Name);
            if (existing is null)
            {
                api.Create(BuiltinResources.Nodes, null, Typed.ToJson(desired));
                continue;
            }
            var live = existing.As<V1Node>();
            live.Metadata.Labels = desired.Metadata.Labels;
            live.Spec = desired.Spec;
            live = api.Replace(BuiltinResources.Nodes, live).As<V1Node>();
            live.Status = desired.Status;
            api.Replace(BuiltinResources.Nodes, live, "status");
        }
    }

    private static V1NodeCondition Condition(string type, string status, string reason, string message, DateTime now) => new()
    {
        Type = type,
        Status = status,
        Reason = reason,
        Message = message,
        LastHeartbeatTime = now,
        LastTransitionTime = now,
    };
}
