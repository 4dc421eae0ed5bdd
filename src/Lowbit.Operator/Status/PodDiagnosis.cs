using k8s.Models;
using Lowbit.Api;
using Lowbit.Engine.Protocol;

namespace Lowbit.Operator.Status;

/// <summary>What a workload's pods show, classified (reliability §4): the first match wins, worst first.</summary>
public abstract record PodDiagnosis
{
    private PodDiagnosis()
    {
    }

    /// <summary>The condition reason this diagnosis reports (PascalCase).</summary>
    public abstract string Reason { get; }

    public abstract string Message { get; }

    /// <summary>Nothing wrong (or no pods yet).</summary>
    public sealed record Healthy : PodDiagnosis
    {
        public override string Reason => Conditions.Reasons.Progressing;

        public override string Message => "";
    }

    /// <summary>A pod waits for GPUs (PodScheduled=False, Unschedulable) since <see cref="Since"/>.</summary>
    public sealed record Unschedulable(DateTimeOffset Since, string Detail) : PodDiagnosis
    {
        public override string Reason => Conditions.Reasons.WaitingForGpu;

        public override string Message => $"pod unschedulable: {Detail}";
    }

    public sealed record ImagePullFailed(string Image, string Detail) : PodDiagnosis
    {
        public override string Reason => Conditions.Reasons.ImagePullFailed;

        public override string Message => $"cannot pull image {Image}: {Detail}";
    }

    public sealed record SecretNotFound(string Detail) : PodDiagnosis
    {
        public override string Reason => Conditions.Reasons.SecretNotFound;

        public override string Message => $"container cannot start: {Detail}";
    }

    /// <summary>The kernel OOM killer (reason OOMKilled / exit 137) or the engine's out-of-memory exit code 43.</summary>
    public sealed record OutOfMemory(bool Gpu, string Detail) : PodDiagnosis
    {
        public override string Reason => Gpu ? StatusReasons.GpuOutOfMemory : Conditions.Reasons.OOMKilled;

        public override string Message => Detail;
    }

    /// <summary>The engine rejected its input (exit code 42): retrying cannot help.</summary>
    public sealed record BadInput(string Detail) : PodDiagnosis
    {
        public override string Reason => Conditions.Reasons.InvalidSpec;

        public override string Message => Detail;
    }

    /// <summary>A container exited non-zero for another reason (the Job retries within its backoff limit).</summary>
    public sealed record Crashed(int ExitCode, string Detail) : PodDiagnosis
    {
        public override string Reason => Conditions.Reasons.Failed;

        public override string Message => Detail;
    }

    private static readonly HashSet<string> ImagePullReasons = new(StringComparer.Ordinal) { "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull" };

    /// <summary>Classifies pods (worst first: bad input, OOM, image, secret, crash, unschedulable).</summary>
    public static PodDiagnosis Of(IEnumerable<V1Pod> pods)
    {
        ArgumentNullException.ThrowIfNull(pods);
        var found = new List<PodDiagnosis>();
        foreach (var pod in pods)
        {
            found.Add(OfPod(pod));
        }

        return found.OrderBy(Severity).FirstOrDefault() ?? new Healthy();
    }

    public static PodDiagnosis OfPod(V1Pod pod)
    {
        ArgumentNullException.ThrowIfNull(pod);
        foreach (var status in pod.Status?.ContainerStatuses ?? [])
        {
            if (status.State?.Terminated is { } terminated && terminated.ExitCode != 0)
            {
                return Terminated(terminated);
            }

            if (status.LastState?.Terminated is { } last && last.ExitCode != 0 && status.State?.Running is null)
            {
                return Terminated(last);
            }

            if (status.State?.Waiting is { } waiting)
            {
                if (waiting.Reason is { } reason && ImagePullReasons.Contains(reason))
                {
                    // ErrImagePull and ImagePullBackOff alternate with changing messages: report a stable detail so
                    // the status does not flap (and get rewritten) on every kubelet retry.
                    return new ImagePullFailed(status.Image ?? "", reason == "InvalidImageName"
                        ? waiting.Message ?? reason
                        : "the registry refused the pull or could not be reached; the kubelet retries with back-off");
                }

                if (waiting.Reason == "CreateContainerConfigError")
                {
                    return new SecretNotFound(waiting.Message ?? waiting.Reason);
                }
            }
        }

        var scheduled = pod.Status?.Conditions?.FirstOrDefault(c => c.Type == "PodScheduled");
        if (scheduled is { Status: "False", Reason: "Unschedulable" })
        {
            var since = scheduled.LastTransitionTime ?? pod.Metadata.CreationTimestamp ?? DateTime.UnixEpoch;
            return new Unschedulable(new DateTimeOffset(DateTime.SpecifyKind(since, DateTimeKind.Utc)), scheduled.Message ?? "no node fits");
        }

        return new Healthy();
    }

    /// <summary>The engine's JSON result in a terminated container's message, if it parses.</summary>
    public static EngineResult? Result(V1ContainerStateTerminated terminated)
    {
        ArgumentNullException.ThrowIfNull(terminated);
        var message = terminated.Message;
        if (string.IsNullOrWhiteSpace(message) || !message.TrimStart().StartsWith('{'))
        {
            return null;
        }

        try
        {
            return EngineResult.Parse(message);
        }
        catch (System.Text.Json.JsonException)
        {
            return null;
        }
    }

    private static PodDiagnosis Terminated(V1ContainerStateTerminated terminated)
    {
        var result = Result(terminated);
        var engineMessage = result?.Error?.Message ?? Tail(terminated.Message);
        if (terminated.ExitCode == EngineExitCodes.BadInput)
        {
            return new BadInput($"the engine rejected its input (exit {EngineExitCodes.BadInput}): {engineMessage}");
        }

        if (terminated.ExitCode == EngineExitCodes.OutOfMemory)
        {
            return new OutOfMemory(true, $"out of GPU memory (exit {EngineExitCodes.OutOfMemory}): {engineMessage}");
        }

        if (terminated.Reason == "OOMKilled" || terminated.ExitCode == EngineExitCodes.Killed)
        {
            return new OutOfMemory(false, $"container OOMKilled (exit {terminated.ExitCode}); the placement needs more memory");
        }

        return new Crashed(terminated.ExitCode, $"engine exited with code {terminated.ExitCode} ({terminated.Reason}): {engineMessage}");
    }

    private static string Tail(string? message)
    {
        if (string.IsNullOrEmpty(message))
        {
            return "no message";
        }

        var trimmed = message.Trim();
        return trimmed.Length <= 300 ? trimmed : "…" + trimmed[^300..];
    }

    private static int Severity(PodDiagnosis diagnosis) => diagnosis switch
    {
        BadInput => 0,
        OutOfMemory => 1,
        ImagePullFailed => 2,
        SecretNotFound => 3,
        Crashed => 4,
        Unschedulable => 5,
        _ => 6,
    };
}

/// <summary>Condition reasons the operator adds beyond <see cref="Conditions.Reasons"/>.</summary>
public static class StatusReasons
{
    public const string GpuOutOfMemory = "GPUOutOfMemory";
    public const string RolloutStuck = "RolloutStuck";
    public const string Inspecting = "Inspecting";
    public const string PlacementChanged = "PlacementChanged";

    /// <summary>An object with a child's name exists but this resource does not control it (R9): left untouched.</summary>
    public const string ChildConflict = "ChildConflict";

    /// <summary>The running engine printed no progress line for longer than the watchdog's timeout.</summary>
    public const string NoProgress = "NoProgress";

    /// <summary>The placement spans several nodes and needs a LeaderWorkerSet, whose CRD the cluster does not serve.</summary>
    public const string LeaderWorkerSetNotInstalled = "LeaderWorkerSetNotInstalled";

    /// <summary>Event reason: the serving child changed kind (Deployment ↔ LeaderWorkerSet) with the placement.</summary>
    public const string ServingKindChanged = "ServingKindChanged";

    /// <summary>Event reason: a serving Deployment rolls its pods (the message names the template parts that changed).</summary>
    public const string Rolling = "Rolling";
}
