using k8s.Models;
using Lowbit.Api.V1Alpha1;

namespace Lowbit.Operator.Builders;

/// <summary>The ClusterIP Service in front of an InferenceEndpoint's Deployment (port 80 → the container's http port).</summary>
public static class InferenceServiceBuilder
{
    public const int ServicePort = 80;

    public static V1Service Build(InferenceEndpoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        var role = InferenceDeploymentBuilder.Role;
        return ChildMeta.WithSpecHash(new V1Service
        {
            ApiVersion = "v1",
            Kind = "Service",
            Metadata = ChildMeta.For(endpoint, role, role),
            Spec = new V1ServiceSpec
            {
                Type = "ClusterIP",
                Selector = ChildMeta.Selector(endpoint, role),
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
