using k8s.Models;

namespace Lowbit.LocalCluster.Kubelet;

/// <summary>
/// The runtime of an <c>execute</c> node: pods run as local processes, except pods annotated
/// <c>sim.lowbit.dev/mode: simulate</c>, which run in the simulated runtime.
/// </summary>
internal sealed class PerPodRuntime(IContainerRuntime executor, IContainerRuntime simulator) : IContainerRuntime
{
    public void CheckImage(V1Pod pod, V1Container container) => For(pod).CheckImage(pod, container);

    public bool ReadyOnStart(V1Pod pod, V1Container container) => For(pod).ReadyOnStart(pod, container);

    public Task<ContainerExit> RunAsync(ContainerRun run) => For(run.Pod).RunAsync(run);

    public void Cleanup(V1Pod pod) => For(pod).Cleanup(pod);

    private IContainerRuntime For(V1Pod pod) =>
        SimulationAnnotations.Get(pod, SimulationAnnotations.Mode) == "simulate" ? simulator : executor;
}
