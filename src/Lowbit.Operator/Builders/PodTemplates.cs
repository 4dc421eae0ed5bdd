using System.Globalization;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Planner;

namespace Lowbit.Operator.Builders;

/// <summary>
/// The parts every workload pod shares: Pod Security "restricted" (non-root, no privilege escalation, drop ALL,
/// seccomp RuntimeDefault), no service-account token, writable memory-backed <c>/dev/shm</c> and <c>/tmp</c>,
/// GPU and memory requests from the placement, the node type's selector and tolerations.
/// </summary>
public static class PodTemplates
{
    public const string ContainerName = "engine";
    public const string TmpPath = "/tmp";
    public const string CachePath = "/cache";
    public const string ShmPath = "/dev/shm";

    /// <summary>The pod-level security context (PSS restricted).</summary>
    public static V1PodSecurityContext PodSecurity(WorkloadOptions options) => new()
    {
        RunAsNonRoot = true,
        RunAsUser = options.RunAsUser,
        RunAsGroup = options.RunAsUser,
        FsGroup = options.RunAsUser,
        SeccompProfile = new V1SeccompProfile { Type = "RuntimeDefault" },
    };

    /// <summary>The container-level security context (PSS restricted, read-only root file system).</summary>
    public static V1SecurityContext ContainerSecurity(WorkloadOptions options) => new()
    {
        RunAsNonRoot = true,
        RunAsUser = options.RunAsUser,
        RunAsGroup = options.RunAsUser,
        AllowPrivilegeEscalation = false,
        Privileged = false,
        ReadOnlyRootFilesystem = true,
        Capabilities = new V1Capabilities { Drop = ["ALL"] },
        SeccompProfile = new V1SeccompProfile { Type = "RuntimeDefault" },
    };

    /// <summary>A pod spec with the shared settings; the caller adds containers.</summary>
    public static V1PodSpec PodSpec(WorkloadPlacement placement, VolumeSet volumes, WorkloadOptions options, string restartPolicy) => new()
    {
        RestartPolicy = restartPolicy,
        AutomountServiceAccountToken = false,
        EnableServiceLinks = false,
        SecurityContext = PodSecurity(options),
        NodeSelector = placement.NodeType.NodeSelector.Count == 0 ? null : new Dictionary<string, string>(placement.NodeType.NodeSelector, StringComparer.Ordinal),
        Tolerations = placement.OnGpu && placement.NodeType.Tolerations.Count > 0
            ? placement.NodeType.Tolerations.Select(t => new V1Toleration { Key = t.Key, OperatorProperty = t.Operator, Value = t.Value.Length == 0 ? null : t.Value, Effect = t.Effect }).ToList()
            : null,
        Volumes = volumes.Volumes(options, volumes.Downloads && placement.SourceBytes.Bytes > 0 ? Quantity(JobLimits.EphemeralStorage(placement)) : null),
        Containers = [],
    };

    /// <summary>An engine-style container: image, args, env, mounts, resources, security, termination message.</summary>
    public static V1Container Container(string image, IReadOnlyList<string> args, WorkloadPlacement placement, VolumeSet volumes, ResourceHints? hints,
        WorkloadOptions options, IEnumerable<V1EnvVar>? extraEnv = null, IList<string>? command = null) => new()
    {
        Name = ContainerName,
        Image = image,
        ImagePullPolicy = "IfNotPresent",
        Command = command,
        Args = args.ToList(),
        Env = Env(placement, volumes, extraEnv),
        VolumeMounts = volumes.Mounts(),
        Resources = Resources(placement, hints, options, volumes.Downloads && placement.SourceBytes.Bytes > 0 ? JobLimits.EphemeralStorage(placement) : null),
        SecurityContext = ContainerSecurity(options),
        TerminationMessagePath = EngineEnv.TerminationLog,
        TerminationMessagePolicy = "FallbackToLogsOnError",
    };

    /// <summary>
    /// GPU requests equal limits (extended resources); memory request equals its limit (no overcommit of model memory);
    /// a pod that downloads its model requests and is limited to <paramref name="storage"/> of ephemeral storage (the
    /// hint may ask for more), so the kubelet evicts the runaway download, not its neighbours.
    /// </summary>
    public static V1ResourceRequirements Resources(WorkloadPlacement placement, ResourceHints? hints, WorkloadOptions options, ByteSize? storage = null)
    {
        var requests = new Dictionary<string, ResourceQuantity>(StringComparer.Ordinal);
        var limits = new Dictionary<string, ResourceQuantity>(StringComparer.Ordinal);
        var memory = Memory(placement, hints, options);
        requests["memory"] = memory;
        limits["memory"] = memory;
        if (hints?.Cpu is { } cpu)
        {
            requests["cpu"] = cpu;
        }

        if (storage is { } needed)
        {
            var hinted = hints?.EphemeralStorage is { } hint ? ByteSize.FromBytes((double)hint.ToDecimal()) : ByteSize.Zero;
            var bytes = Quantity(ByteSize.Max(needed, hinted));
            requests["ephemeral-storage"] = bytes;
            limits["ephemeral-storage"] = bytes;
        }
        else if (hints?.EphemeralStorage is { } hinted)
        {
            requests["ephemeral-storage"] = hinted;
        }

        if (placement.OnGpu && placement.GpusPerReplica > 0)
        {
            var gpus = new ResourceQuantity(placement.GpusPerReplica.ToString(CultureInfo.InvariantCulture));
            requests[placement.NodeType.ResourceName] = gpus;
            limits[placement.NodeType.ResourceName] = gpus;
        }

        return new V1ResourceRequirements { Requests = requests, Limits = limits };
    }

    /// <summary>
    /// Host memory: on a CPU node the model lives in RAM, so the plan's per-device total (or the hint, if larger);
    /// on a GPU node the hint, or the default plus the weights the pod stages in host memory while loading.
    /// </summary>
    public static ResourceQuantity Memory(WorkloadPlacement placement, ResourceHints? hints, WorkloadOptions options)
    {
        var hinted = hints?.Memory is { } hint ? (long)hint.ToDecimal() : 0L;
        long bytes;
        if (!placement.OnGpu)
        {
            bytes = Math.Max(hinted, placement.Option.PerDevice.Total.Bytes);
        }
        else
        {
            var fallback = (long)new ResourceQuantity(options.DefaultHostMemory).ToDecimal() + placement.Option.PerDevice.Weights.Bytes;
            bytes = hinted > 0 ? hinted : fallback;
        }

        return Quantity(ByteSize.FromBytes(bytes));
    }

    /// <summary>A memory quantity in whole MiB, rounded up.</summary>
    public static ResourceQuantity Quantity(ByteSize size) =>
        new(string.Create(CultureInfo.InvariantCulture, $"{(size.Bytes + ByteSize.BytesPerMiB - 1) / ByteSize.BytesPerMiB}Mi"));

    private static List<V1EnvVar> Env(WorkloadPlacement placement, VolumeSet volumes, IEnumerable<V1EnvVar>? extra)
    {
        var env = new List<V1EnvVar>
        {
            new() { Name = "HOME", Value = TmpPath },
            new() { Name = EngineEnv.CacheDir, Value = CachePath },
            new() { Name = EngineEnv.Device, Value = placement.OnGpu ? "cuda" : "cpu" },
            // The engine writes its JSON result where the kubelet reads the termination message (the same path as
            // TerminationMessagePath; a local executor maps both to its own file).
            new() { Name = EngineEnv.ResultFile, Value = EngineEnv.TerminationLog },
        };
        if (volumes.HubToken is { } token)
        {
            // The token reaches the pod only as a Secret reference: never a literal, never read by the operator.
            env.Add(new V1EnvVar
            {
                Name = EngineEnv.HfToken,
                ValueFrom = new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Name = token.Name, Key = token.Key } },
            });
        }

        if (extra is not null)
        {
            env.AddRange(extra);
        }

        return env;
    }

    /// <summary>
    /// podFailurePolicy (reliability §4): Ignore disruptions (preemption, eviction, node loss), FailJob on the
    /// engine's bad-input and out-of-memory exit codes and on 137 (the OOM killer), Count the rest.
    /// </summary>
    public static V1PodFailurePolicy FailurePolicy() => new()
    {
        Rules =
        [
            new V1PodFailurePolicyRule
            {
                Action = "Ignore",
                OnPodConditions = [new V1PodFailurePolicyOnPodConditionsPattern { Type = "DisruptionTarget", Status = "True" }],
            },
            new V1PodFailurePolicyRule
            {
                Action = "FailJob",
                OnExitCodes = new V1PodFailurePolicyOnExitCodesRequirement
                {
                    ContainerName = ContainerName,
                    OperatorProperty = "In",
                    Values = [EngineExitCodes.BadInput, EngineExitCodes.OutOfMemory, EngineExitCodes.Killed],
                },
            },
            new V1PodFailurePolicyRule
            {
                Action = "Count",
                OnExitCodes = new V1PodFailurePolicyOnExitCodesRequirement { ContainerName = ContainerName, OperatorProperty = "NotIn", Values = [0] },
            },
        ],
    };
}
