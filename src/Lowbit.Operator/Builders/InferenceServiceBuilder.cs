using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.LeaderWorkerSets;

namespace Lowbit.Operator.Builders;

/// <summary>
/// The ClusterIP Service in front of an InferenceEndpoint's Deployment (port 80 → the container's http port), or of
/// its LeaderWorkerSet's leaders only (<c>leadersOnly</c>: worker index 0; workers serve no HTTP).
/// </summary>
public static class InferenceServiceBuilder
{
    public const int ServicePort = 80;

    public static V1Service Build(InferenceEndpoint endpoint, bool leadersOnly = false)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        var role = InferenceDeploymentBuilder.Role;
        var selector = ChildMeta.Selector(endpoint, role);
        if (leadersOnly)
        {
            selector[LeaderWorkerSet.WorkerIndexLabel] = "0";
        }

        return ChildMeta.WithSpecHash(new V1Service
        {
            ApiVersion = "v1",
            Kind = "Service",
            Metadata = ChildMeta.For(endpoint, role, role),
            Spec = new V1ServiceSpec
            {
                Type = "ClusterIP",
                Selector = selector,
                Ports =
                [
                    new V1ServicePort
                    {
                        Name = InferenceDeploymentBuilder.PortName,
                        Port = ServicePort,
                        TargetPort = InferenceDeploymentBuilder.PortName,
                        Protocol = "TCP",
                    },
                ],
            },
        });
    }
}
