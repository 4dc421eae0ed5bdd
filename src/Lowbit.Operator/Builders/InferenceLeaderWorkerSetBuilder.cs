using System.Globalization;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.LeaderWorkerSets;

namespace Lowbit.Operator.Builders;

/// <summary>
/// The LeaderWorkerSet serving an InferenceEndpoint whose placement spans several nodes (vLLM only): the standard
/// vLLM-on-LWS recipe. Each group is one replica: a leader pod that starts the Ray head and then <c>vllm serve</c>
/// with <c>--tensor-parallel-size</c> = GPUs per node and <c>--pipeline-parallel-size</c> = nodes over the Ray
/// executor, and <c>nodes − 1</c> worker pods that join the leader's Ray cluster. Every pod requests one node's GPUs
/// and has the Deployment's volumes, security settings, scheduling and model cache; only the leader serves HTTP and
/// has the probes. Named <c>&lt;endpoint&gt;-inference</c> like the Deployment it replaces.
/// </summary>
public static class InferenceLeaderWorkerSetBuilder
{
    /// <summary>The Ray head's GCS port on the leader.</summary>
    public const int RayPort = 6379;

    /// <summary>The LeaderWorkerSet for a multi-node placement of an endpoint <see cref="InferenceDeploymentBuilder.Check"/> accepted.</summary>
    public static LeaderWorkerSet Build(InferenceEndpoint endpoint, ServedModel served, WorkloadPlacement placement, WorkloadOptions options)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(served);
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(options);
        if (endpoint.Spec.Runtime != ServingRuntime.Vllm || !placement.MultiNode)
        {
            throw new ArgumentException($"a LeaderWorkerSet serves vllm over several nodes, not {endpoint.Spec.Runtime} on {placement.Label}", nameof(placement));
        }

        if (InferenceDeploymentBuilder.Check(endpoint, served) is { } error)
        {
            throw new ArgumentException($"check the spec before building: {error}", nameof(endpoint));
        }

        var role = InferenceDeploymentBuilder.Role;
        var volumes = new VolumeSet();
        var vllm = InferenceDeploymentBuilder.VllmArgs(endpoint, served, placement, volumes);
        var image = endpoint.Spec.Image ?? options.VllmImage;
        var meta = ChildMeta.For(endpoint, role, role, placement);

        var leader = PodTemplates.Container(image, [LeaderScript(vllm, placement)], placement, volumes, endpoint.Spec.Resources, options, command: ["/bin/sh", "-c"]);
        leader.Ports = [new V1ContainerPort { Name = InferenceDeploymentBuilder.PortName, ContainerPort = InferenceDeploymentBuilder.Port, Protocol = "TCP" }];
        leader.StartupProbe = InferenceDeploymentBuilder.Probe(options.StartupFailureThreshold);
        leader.ReadinessProbe = InferenceDeploymentBuilder.Probe(3);
        leader.LivenessProbe = InferenceDeploymentBuilder.Probe(6);
        var worker = PodTemplates.Container(image, [WorkerScript()], placement, volumes, endpoint.Spec.Resources, options, command: ["/bin/sh", "-c"]);

        var set = new LeaderWorkerSet
        {
            Metadata = meta,
            Spec = new LeaderWorkerSetSpec
            {
                Replicas = endpoint.Spec.Replicas,
                // Workers start with the leader: the leader is ready only once vLLM runs on all of them.
                StartupPolicy = "LeaderCreated",
                // Keep the old groups serving until a new one is ready (one spare group of nodes at a time).
                RolloutStrategy = new LeaderWorkerSetRolloutStrategy
                {
                    RollingUpdateConfiguration = new LeaderWorkerSetRollingUpdate { MaxUnavailable = 0, MaxSurge = 1 },
                },
                LeaderWorkerTemplate = new LeaderWorkerTemplate
                {
                    Size = placement.Nodes,
                    RestartPolicy = LeaderWorkerSet.RecreateGroupOnPodRestart,
                    LeaderTemplate = Template(meta, PodWith(placement, volumes, options, leader)),
                    WorkerTemplate = Template(meta, PodWith(placement, volumes, options, worker)),
                },
            },
        };
        return ChildMeta.WithSpecHash(DeploymentRollout.Stamp(set));
    }

    /// <summary>
    /// The leader's command: start the Ray head, then run vLLM in the foreground (it waits for the workers' GPUs to
    /// join the Ray cluster before it loads the model, and the readiness probe passes only once it serves).
    /// </summary>
    public static string LeaderScript(IReadOnlyList<string> vllmArgs, WorkloadPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(vllmArgs);
        ArgumentNullException.ThrowIfNull(placement);
        var args = new List<string>(vllmArgs);
        var model = args.IndexOf("--model");
        var positional = model >= 0 && model + 1 < args.Count ? args[model + 1] : throw new ArgumentException("the vLLM arguments name no --model", nameof(vllmArgs));
        args.RemoveRange(model, 2);
        args.AddRange([
            "--pipeline-parallel-size", placement.PipelineStages.ToString(CultureInfo.InvariantCulture),
            "--distributed-executor-backend", "ray",
        ]);
        var serve = string.Join(' ', new[] { "vllm", "serve", positional }.Concat(args).Select(Quote));
        return string.Create(CultureInfo.InvariantCulture, $"ray start --head --port={RayPort} && exec {serve}");
    }

    /// <summary>
    /// A worker's command: join the leader's Ray cluster and stay in the foreground (<c>--block</c>); retried while the
    /// leader's head is not up yet. <c>$(LWS_LEADER_ADDRESS)</c> is expanded by the kubelet from the variable LWS injects.
    /// </summary>
    public static string WorkerScript() =>
        string.Create(CultureInfo.InvariantCulture, $"until ray start --address=$({LeaderWorkerSet.LeaderAddressEnv}):{RayPort} --block; do sleep 5; done");

    private static V1PodSpec PodWith(WorkloadPlacement placement, VolumeSet volumes, WorkloadOptions options, V1Container container)
    {
        var pod = PodTemplates.PodSpec(placement, volumes, options, "Always");
        pod.Containers.Add(container);
        return pod;
    }

    private static V1PodTemplateSpec Template(V1ObjectMeta meta, V1PodSpec pod) => new()
    {
        Metadata = new V1ObjectMeta
        {
            Labels = new Dictionary<string, string>(meta.Labels, StringComparer.Ordinal),
            Annotations = ChildMeta.PodAnnotations(meta),
        },
        Spec = pod,
    };

    /// <summary>One POSIX shell word: single-quoted unless it is plainly safe.</summary>
    private static string Quote(string word) =>
        word.Length > 0 && word.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '/' or ':' or '=' or ',' or '@' or '+')
            ? word
            : "'" + word.Replace("'", "'\"'\"'", StringComparison.Ordinal) + "'";
}
