using k8s.Models;

namespace Lowbit.LocalCluster.Kubelet;

/// <summary>
/// Containers on a <c>simulate</c> node: nothing runs; each container follows its pod's
/// <see cref="SimulationAnnotations"/>: writes the scripted log, becomes ready, runs for the scripted
/// duration, then exits with the scripted code, reason and termination message.
/// </summary>
public sealed class SimulatedRuntime(TimeProvider time, TimeSpan defaultDuration) : IContainerRuntime
{
    public void CheckImage(V1Pod pod, V1Container container)
    {
        if (string.IsNullOrWhiteSpace(container.Image))
        {
            throw new ImagePullException("InvalidImageName", $"Failed to apply default image tag \"{container.Image}\": couldn't parse image name \"{container.Image}\": invalid reference format");
        }
        if (SimulationAnnotations.Get(pod, SimulationAnnotations.ImagePull, container.Name) is "fail" or "false" or "ErrImagePull")
        {
            throw new ImagePullException("ErrImagePull",
                $"Failed to pull image \"{container.Image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{container.Image}\": not found (simulated by {SimulationAnnotations.ImagePull})");
        }
    }

    public bool ReadyOnStart(V1Pod pod, V1Container container) =>
        SimulationAnnotations.Get(pod, SimulationAnnotations.Ready, container.Name) is null or "true" or "True";

    public async Task<ContainerExit> RunAsync(ContainerRun run)
    {
        var pod = run.Pod;
        var name = run.Container.Name;
        if (SimulationAnnotations.Get(pod, SimulationAnnotations.Log, name) is { Length: > 0 } log)
        {
            run.WriteLog(log.EndsWith('\n') ? log : log + "\n");
        }
        var ready = SimulationAnnotations.Get(pod, SimulationAnnotations.Ready, name);
        if (ready is not ("false" or "False"))
        {
            var delay = ready is null or "true" or "True" ? null : SimulationAnnotations.ParseDuration(ready, SimulationAnnotations.Ready);
            if (delay is { } d && d > TimeSpan.Zero)
            {
                _ = DelayThen(d, () => run.SetReady(true), run.Stop);
            }
            else
            {
                run.SetReady(true);
            }
        }
        var duration = SimulationAnnotations.ParseDuration(SimulationAnnotations.Get(pod, SimulationAnnotations.Duration, name), SimulationAnnotations.Duration)
            ?? (pod.Spec.RestartPolicy is null or "Always" ? Timeout.InfiniteTimeSpan : defaultDuration);
        try
        {
            await Task.Delay(duration, time, run.Stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return new ContainerExit(143, "Error", null);
        }
        var reason = SimulationAnnotations.Get(pod, SimulationAnnotations.Reason, name);
        var exitText = SimulationAnnotations.Get(pod, SimulationAnnotations.ExitCode, name);
        int exitCode;
        if (exitText is null)
        {
            exitCode = reason == "OOMKilled" ? 137 : reason is null or "Completed" ? 0 : 1;
        }
        else if (!int.TryParse(exitText, System.Globalization.CultureInfo.InvariantCulture, out exitCode) || exitCode is < 0 or > 255)
        {
            throw new FormatException($"annotation {SimulationAnnotations.ExitCode}: '{exitText}' is not an exit code; accepted: 0-255");
        }
        var disruption = SimulationAnnotations.Get(pod, SimulationAnnotations.Disruption);
        if (disruption is not null)
        {
            exitCode = 137;
            reason ??= "Error";
        }
        reason ??= exitCode == 0 ? "Completed" : "Error";
        return new ContainerExit(exitCode, reason, SimulationAnnotations.Get(pod, SimulationAnnotations.TerminationMessage, name)) { Disruption = disruption };
    }

    public void Cleanup(V1Pod pod)
    {
    }

    private async Task DelayThen(TimeSpan delay, Action action, CancellationToken cancellationToken)
    {
        try
        {
            await Task.Delay(delay, time, cancellationToken).ConfigureAwait(false);
            action();
        }
        catch (OperationCanceledException)
        {
        }
    }
}
