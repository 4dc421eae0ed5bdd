using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Store;
using static Lowbit.LocalCluster.Tests.Cluster.ClusterHarness;

namespace Lowbit.LocalCluster.Tests.Cluster;

public sealed class SchedulerTests
{
    private static V1PodCondition? Scheduled(V1Pod pod) => pod.Status?.Conditions?.FirstOrDefault(c => c.Type == "PodScheduled");

    [Fact]
    public async Task Does_bind_a_gpu_pod_to_the_node_with_a_free_gpu_when_it_fits()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Pods, Pod("gpu-job", p =>
        {
            p.Metadata.Annotations[Kubelet.SimulationAnnotations.Duration] = "1h";
            p.Spec.Containers[0].Resources = new V1ResourceRequirements { Limits = Resources(("nvidia.com/gpu", "1")) };
        }));

        var pod = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "gpu-job", p => p.Status?.Phase == "Running", "Running");

        Assert.Equal("gpu-t4", pod.Spec.NodeName);
        Assert.Equal("True", Scheduled(pod)?.Status);
    }

    [Fact]
    public async Task Does_report_kube_scheduler_message_when_no_node_has_enough_gpus()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Pods, Pod("too-big", p =>
            p.Spec.Containers[0].Resources = new V1ResourceRequirements { Limits = Resources(("nvidia.com/gpu", "4")) }));

        var pod = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "too-big", p => Scheduled(p)?.Status == "False", "Unschedulable");

        Assert.Equal("Unschedulable", Scheduled(pod)!.Reason);
        Assert.Equal(
            "0/5 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: present}, 3 Insufficient nvidia.com/gpu. "
            + "preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod.",
            Scheduled(pod)!.Message);
        Assert.Equal("Pending", pod.Status!.Phase);
        Assert.Null(pod.Spec.NodeName);
        var warning = cluster.Api.Get(BuiltinResources.Events, "default", "too-big.failedscheduling").As<Corev1Event>();
        Assert.Equal(("FailedScheduling", "Warning", "too-big"), (warning.Reason, warning.Type, warning.InvolvedObject.Name));
    }

    [Fact]
    public async Task Does_schedule_on_a_tainted_node_only_when_the_pod_tolerates_the_taint()
    {
        await using var cluster = await StartAsync();
        var tolerations = new List<V1Toleration> { new() { Key = "nvidia.com/gpu", OperatorProperty = "Exists", Effect = "NoSchedule" } };
        cluster.Create(BuiltinResources.Pods, Pod("two-gpus-tolerating", p =>
        {
            p.Metadata.Annotations[Kubelet.SimulationAnnotations.Duration] = "1h";
            p.Spec.Tolerations = tolerations;
            p.Spec.Containers[0].Resources = new V1ResourceRequirements { Limits = Resources(("nvidia.com/gpu", "2")) };
        }));
        cluster.Create(BuiltinResources.Pods, Pod("two-gpus-intolerant", p =>
            p.Spec.Containers[0].Resources = new V1ResourceRequirements { Limits = Resources(("nvidia.com/gpu", "2")) }));

        var tolerating = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "two-gpus-tolerating", p => p.Spec.NodeName is not null, "bound");
        var intolerant = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "two-gpus-intolerant", p => Scheduled(p)?.Status == "False", "Unschedulable");

        Assert.StartsWith("gpu-a100-", tolerating.Spec.NodeName, StringComparison.Ordinal);
        Assert.Contains("2 node(s) had untolerated taint {nvidia.com/gpu: present}", Scheduled(intolerant)!.Message, StringComparison.Ordinal);
        Assert.Contains("3 Insufficient nvidia.com/gpu", Scheduled(intolerant)!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_honour_node_selector_and_required_node_affinity()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Pods, Pod("on-t4", p =>
        {
            p.Metadata.Annotations[Kubelet.SimulationAnnotations.Duration] = "1h";
            p.Spec.NodeSelector = new Dictionary<string, string> { ["nvidia.com/gpu.product"] = "Tesla-T4" };
        }));
        cluster.Create(BuiltinResources.Pods, Pod("not-cpu", p =>
        {
            p.Metadata.Annotations[Kubelet.SimulationAnnotations.Duration] = "1h";
            p.Spec.Tolerations = [new V1Toleration { OperatorProperty = "Exists" }];
            p.Spec.Affinity = new V1Affinity
            {
                NodeAffinity = new V1NodeAffinity
                {
                    RequiredDuringSchedulingIgnoredDuringExecution = new V1NodeSelector
                    {
                        NodeSelectorTerms =
                        [
                            new V1NodeSelectorTerm
                            {
                                MatchExpressions =
                                [
                                    new V1NodeSelectorRequirement { Key = "lowbit.dev/node-type", OperatorProperty = "NotIn", Values = ["cpu"] },
                                    new V1NodeSelectorRequirement { Key = "nvidia.com/gpu.product", OperatorProperty = "In", Values = ["NVIDIA-A100-SXM4-80GB"] },
                                ],
                            },
                        ],
                    },
                },
            };
        }));
        cluster.Create(BuiltinResources.Pods, Pod("nowhere", p => p.Spec.NodeSelector = new Dictionary<string, string> { ["nvidia.com/gpu.product"] = "B200" }));

        var onT4 = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "on-t4", p => p.Spec.NodeName is not null, "bound");
        var notCpu = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "not-cpu", p => p.Spec.NodeName is not null, "bound");
        var nowhere = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "nowhere", p => Scheduled(p)?.Status == "False", "Unschedulable");

        Assert.Equal("gpu-t4", onT4.Spec.NodeName);
        Assert.StartsWith("gpu-a100-", notCpu.Spec.NodeName, StringComparison.Ordinal);
        Assert.StartsWith("0/5 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: present}, 3 node(s) didn't match Pod's node affinity/selector.",
            Scheduled(nowhere)!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_schedule_a_waiting_pod_once_the_gpu_it_needs_is_freed()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Pods, Pod("holder", p =>
        {
            p.Metadata.Annotations[Kubelet.SimulationAnnotations.Duration] = "1h";
            p.Spec.NodeSelector = new Dictionary<string, string> { ["nvidia.com/gpu.product"] = "Tesla-T4" };
            p.Spec.Containers[0].Resources = new V1ResourceRequirements { Limits = Resources(("nvidia.com/gpu", "1")) };
        }));
        await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "holder", p => p.Status?.Phase == "Running", "Running");
        cluster.Create(BuiltinResources.Pods, Pod("waiter", p =>
        {
            p.Spec.NodeSelector = new Dictionary<string, string> { ["nvidia.com/gpu.product"] = "Tesla-T4" };
            p.Spec.Containers[0].Resources = new V1ResourceRequirements { Limits = Resources(("nvidia.com/gpu", "1")) };
        }));
        var waiting = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "waiter", p => Scheduled(p)?.Status == "False", "Unschedulable");
        Assert.Contains("1 Insufficient nvidia.com/gpu", Scheduled(waiting)!.Message, StringComparison.Ordinal);

        cluster.Api.Delete(BuiltinResources.Pods, "default", "holder");

        var bound = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "waiter", p => p.Spec.NodeName == "gpu-t4", "bound to gpu-t4");
        Assert.Equal("gpu-t4", bound.Spec.NodeName);
    }

    [Fact]
    public async Task Does_evict_pods_with_DisruptionTarget_when_their_node_gets_a_NoExecute_taint()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Pods, Pod("victim", p =>
        {
            p.Metadata.Annotations[Kubelet.SimulationAnnotations.Duration] = "1h";
            p.Spec.NodeSelector = new Dictionary<string, string> { ["nvidia.com/gpu.product"] = "Tesla-T4" };
        }));
        cluster.Create(BuiltinResources.Pods, Pod("tolerant", p =>
        {
            p.Metadata.Annotations[Kubelet.SimulationAnnotations.Duration] = "1h";
            p.Spec.NodeSelector = new Dictionary<string, string> { ["nvidia.com/gpu.product"] = "Tesla-T4" };
            p.Spec.Tolerations = [new V1Toleration { Key = "lost", OperatorProperty = "Exists", Effect = "NoExecute" }];
        }));
        await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "victim", p => p.Status?.Phase == "Running", "Running");
        await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "tolerant", p => p.Status?.Phase == "Running", "Running");
        // Subscribed before the taint: WaitAsync registers its watch before it first yields.
        var deleted = cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "victim", p => p.Metadata.DeletionTimestamp is not null, "deleting");

        cluster.Api.Patch(BuiltinResources.Nodes, null, "gpu-t4", PatchKind.Merge, "{\"spec\":{\"taints\":[{\"key\":\"lost\",\"value\":\"true\",\"effect\":\"NoExecute\"}]}}");

        var victim = await deleted;
        var disruption = victim.Status.Conditions.Single(c => c.Type == "DisruptionTarget");
        Assert.Equal(("True", "DeletionByTaintManager"), (disruption.Status, disruption.Reason));
        await cluster.WaitGoneAsync(BuiltinResources.Pods, "default", "victim");
        Assert.Null(cluster.Api.Get(BuiltinResources.Pods, "default", "tolerant").As<V1Pod>().Metadata.DeletionTimestamp);
    }

    [Fact]
    public void Does_sum_container_requests_and_use_limits_when_requests_are_missing()
    {
        var spec = new V1PodSpec
        {
            Containers =
            [
                new V1Container { Name = "a", Resources = new V1ResourceRequirements { Requests = Resources(("cpu", "500m"), ("memory", "1Gi")) } },
                new V1Container { Name = "b", Resources = new V1ResourceRequirements { Limits = Resources(("cpu", "1"), ("nvidia.com/gpu", "1")) } },
            ],
            InitContainers = [new V1Container { Name = "init", Resources = new V1ResourceRequirements { Requests = Resources(("cpu", "4")) } }],
        };

        var requests = Scheduling.SchedulingPredicates.PodRequests(spec);

        Assert.Equal(4m, requests["cpu"]);
        Assert.Equal(1024m * 1024 * 1024, requests["memory"]);
        Assert.Equal(1m, requests["nvidia.com/gpu"]);
    }
}
