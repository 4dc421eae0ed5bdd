using k8s.Models;

namespace Lowbit.LocalCluster.Kubelet;

/// <summary>The image cannot be used: the container waits with <see cref="Reason"/> (ErrImagePull, InvalidImageName).</summary>
public sealed class ImagePullException(string reason, string message) : Exception(message)
{
    public string Reason { get; } = reason;
}

/// <summary>One run of one container.</summary>
public sealed record ContainerRun
{
    public required V1Pod Pod { get; init; }

    /// <summary>The pod's address (executed pods: a loopback address of their own, e.g. 127.1.0.7).</summary>
    public string PodIp { get; init; } = "127.0.0.1";

    public required V1Container Container { get; init; }

    /// <summary>0 for the first run, then the restart count.</summary>
    public required int Attempt { get; init; }

    /// <summary>The container's environment, resolved by the kubelet.</summary>
    public required IReadOnlyDictionary<string, string> Environment { get; init; }

    /// <summary>Fires when the pod is being deleted: the container must stop within <see cref="GracePeriod"/>.</summary>
    public required CancellationToken Stop { get; init; }

    public required Func<TimeSpan> GracePeriod { get; init; }

    /// <summary>Reports readiness changes (the readiness probe's verdict).</summary>
    public required Action<bool> SetReady { get; init; }

    /// <summary>Appends to the container's log (what <c>kubectl logs</c> shows).</summary>
    public required Action<string> WriteLog { get; init; }
}

/// <summary>How a container ended.</summary>
public sealed record ContainerExit(int ExitCode, string Reason, string? Message)
{
    /// <summary>Set when the pod was disrupted (the DisruptionTarget condition's reason): the pod fails whatever its restart policy.</summary>
    public string? Disruption { get; init; }
}

/// <summary>Runs containers: the scripted simulation or local processes.</summary>
public interface IContainerRuntime
{
    /// <summary>Checks the image can run; throws <see cref="ImagePullException"/> when it cannot.</summary>
    void CheckImage(V1Pod pod, V1Container container);

    /// <summary>True when the container is ready as soon as it runs (no readiness probe to wait for).</summary>
    bool ReadyOnStart(V1Pod pod, V1Container container);

    /// <summary>Runs the container until it exits (or is stopped) and says how it ended.</summary>
    Task<ContainerExit> RunAsync(ContainerRun run);

    /// <summary>Forgets anything kept for a pod (its folders) once it is removed.</summary>
    void Cleanup(V1Pod pod);
}
