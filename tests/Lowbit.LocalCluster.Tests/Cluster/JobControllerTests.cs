using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Store;
using static Lowbit.LocalCluster.Tests.Cluster.ClusterHarness;

namespace Lowbit.LocalCluster.Tests.Cluster;

public sealed class JobControllerTests
{
    private static V1Job Job(string name, Dictionary<string, string> annotations, Action<V1JobSpec>? configure = null)
    {
        var job = new V1Job
        {
            ApiVersion = "batch/v1",
            Kind = "Job",
            Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default" },
            Spec = new V1JobSpec
            {
                Template = new V1PodTemplateSpec
                {
                    Metadata = new V1ObjectMeta { Annotations = annotations },
                    Spec = new V1PodSpec
                    {
                        RestartPolicy = "Never",
                        Containers = [new V1Container { Name = "main", Image = "ghcr.io/lowbit/lowbit-engine:test" }],
                    },
                },
            },
        };
        configure?.Invoke(job.Spec);
        return job;
    }

    private static V1JobCondition? Condition(V1Job job, string type) => job.Status?.Conditions?.FirstOrDefault(c => c.Type == type && c.Status == "True");

    [Fact]
    public async Task Does_complete_with_the_requested_completions_when_pods_succeed()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Jobs, Job("ok", new() { [SimulationAnnotations.Log] = "step 1\nstep 2" }, s =>
        {
            s.Completions = 3;
            s.Parallelism = 2;
        }));

        var job = await cluster.WaitAsync<V1Job>(BuiltinResources.Jobs, "default", "ok", j => Condition(j, "Complete") is not null, "Complete");

        Assert.Equal(3, job.Status.Succeeded);
        Assert.Null(job.Status.Failed);
        Assert.Null(job.Status.Active);
        Assert.NotNull(job.Status.StartTime);
        Assert.NotNull(job.Status.CompletionTime);
        Assert.NotNull(Condition(job, "SuccessCriteriaMet"));
        var pods = cluster.Api.List(BuiltinResources.Pods, "default", new ListOptions { LabelSelector = "batch.kubernetes.io/job-name=ok" }).Items
            .Select(p => p.As<V1Pod>()).ToList();
        Assert.Equal(3, pods.Count);
        Assert.All(pods, p =>
        {
            Assert.Equal("Succeeded", p.Status.Phase);
            var owner = Assert.Single(p.Metadata.OwnerReferences);
            Assert.Equal(("Job", "ok", job.Metadata.Uid, true), (owner.Kind, owner.Name, owner.Uid, owner.Controller == true));
            Assert.Equal(job.Metadata.Uid, p.Metadata.Labels["batch.kubernetes.io/controller-uid"]);
            Assert.Equal("Completed", p.Status.ContainerStatuses[0].State.Terminated.Reason);
            Assert.Equal("step 1\nstep 2\n", cluster.Logs.Read("default", p.Metadata.Name, "main"));
        });
    }

    [Fact]
    public async Task Does_retry_failed_pods_until_the_backoff_limit_then_fail_with_BackoffLimitExceeded()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Jobs, Job("flaky", new() { [SimulationAnnotations.ExitCode] = "3", [SimulationAnnotations.TerminationMessage] = "bad input" },
            s => s.BackoffLimit = 2));

        var job = await cluster.WaitAsync<V1Job>(BuiltinResources.Jobs, "default", "flaky", j => Condition(j, "Failed") is not null, "Failed");

        Assert.Equal("BackoffLimitExceeded", Condition(job, "Failed")!.Reason);
        Assert.Equal("Job has reached the specified backoff limit", Condition(job, "Failed")!.Message);
        Assert.Equal(3, job.Status.Failed);
        var pods = cluster.Api.List(BuiltinResources.Pods, "default", new ListOptions { LabelSelector = "job-name=flaky" }).Items.Select(p => p.As<V1Pod>()).ToList();
        Assert.Equal(3, pods.Count);
        Assert.All(pods, p => Assert.Equal((3, "Error", "bad input"),
            (p.Status.ContainerStatuses[0].State.Terminated.ExitCode, p.Status.ContainerStatuses[0].State.Terminated.Reason, p.Status.ContainerStatuses[0].State.Terminated.Message)));
    }

    [Fact]
    public async Task Does_fail_at_once_by_pod_failure_policy_when_a_container_is_OOMKilled()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Jobs, Job("oom", new() { [SimulationAnnotations.Reason] = "OOMKilled" }, s =>
        {
            s.BackoffLimit = 6;
            s.PodFailurePolicy = new V1PodFailurePolicy
            {
                Rules =
                [
                    new V1PodFailurePolicyRule { Action = "Ignore", OnPodConditions = [new V1PodFailurePolicyOnPodConditionsPattern { Type = "DisruptionTarget", Status = "True" }] },
                    new V1PodFailurePolicyRule { Action = "FailJob", OnExitCodes = new V1PodFailurePolicyOnExitCodesRequirement { ContainerName = "main", OperatorProperty = "In", Values = [42, 137] } },
                ],
            };
        }));

        var job = await cluster.WaitAsync<V1Job>(BuiltinResources.Jobs, "default", "oom", j => Condition(j, "Failed") is not null, "Failed");

        var failed = Condition(job, "Failed")!;
        Assert.Equal("PodFailurePolicy", failed.Reason);
        Assert.Matches(@"^Container main for pod default/oom-\w+ failed with exit code 137 matching FailJob rule at index 1$", failed.Message);
        Assert.NotNull(Condition(job, "FailureTarget"));
        Assert.Equal(1, job.Status.Failed);
        var pod = Assert.Single(cluster.Api.List(BuiltinResources.Pods, "default", new ListOptions { LabelSelector = "job-name=oom" }).Items).As<V1Pod>();
        Assert.Equal((137, "OOMKilled"), (pod.Status.ContainerStatuses[0].State.Terminated.ExitCode, pod.Status.ContainerStatuses[0].State.Terminated.Reason));
    }

    [Fact]
    public async Task Does_not_count_disrupted_pods_against_the_backoff_limit_when_the_policy_ignores_them()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Jobs, Job("preempted", new() { [SimulationAnnotations.Disruption] = "PreemptionByScheduler" }, s =>
        {
            s.BackoffLimit = 0;
            s.ActiveDeadlineSeconds = 2;
            s.PodFailurePolicy = new V1PodFailurePolicy
            {
                Rules = [new V1PodFailurePolicyRule { Action = "Ignore", OnPodConditions = [new V1PodFailurePolicyOnPodConditionsPattern { Type = "DisruptionTarget", Status = "True" }] }],
            };
        }));

        // Every pod is preempted and ignored, so only the deadline ends the Job.
        var job = await cluster.WaitAsync<V1Job>(BuiltinResources.Jobs, "default", "preempted", j => Condition(j, "Failed") is not null, "Failed");

        Assert.Equal("DeadlineExceeded", Condition(job, "Failed")!.Reason);
        Assert.Null(job.Status.Failed);
        var pods = cluster.Api.List(BuiltinResources.Pods, "default", new ListOptions { LabelSelector = "job-name=preempted" }).Items.Select(p => p.As<V1Pod>()).ToList();
        Assert.True(pods.Count >= 2, $"expected replacement pods, found {pods.Count}");
        var disrupted = pods.First(p => p.Status.Phase == "Failed");
        Assert.Equal("PreemptionByScheduler", disrupted.Status.Conditions.Single(c => c.Type == "DisruptionTarget").Reason);
    }

    [Fact]
    public async Task Does_keep_pods_pending_with_ErrImagePull_or_CreateContainerConfigError_without_failing_the_job()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Jobs, Job("bad-image", new() { [SimulationAnnotations.ImagePull] = "fail" }));
        cluster.Create(BuiltinResources.Jobs, Job("no-secret", [], s => s.Template.Spec.Containers[0].Env =
            [new V1EnvVar { Name = "HF_TOKEN", ValueFrom = new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Name = "hf", Key = "token" } } }]));

        var pulls = await cluster.WaitListAsync<V1Pod>(BuiltinResources.Pods, "default", "job-name=bad-image",
            l => l.Count == 1 && l[0].Status?.ContainerStatuses?[0].State?.Waiting?.Reason == "ImagePullBackOff", "ImagePullBackOff");
        var configs = await cluster.WaitListAsync<V1Pod>(BuiltinResources.Pods, "default", "job-name=no-secret",
            l => l.Count == 1 && l[0].Status?.ContainerStatuses?[0].State?.Waiting?.Reason == "CreateContainerConfigError", "CreateContainerConfigError");

        Assert.Equal("Pending", pulls[0].Status.Phase);
        Assert.Contains("Back-off pulling image \"ghcr.io/lowbit/lowbit-engine:test\"", pulls[0].Status.ContainerStatuses[0].State.Waiting.Message, StringComparison.Ordinal);
        Assert.Equal("secret \"hf\" not found", configs[0].Status.ContainerStatuses[0].State.Waiting.Message);

        // Creating the Secret lets the waiting container start and the Job complete.
        cluster.Api.Create(BuiltinResources.Secrets, "default", Json(new V1Secret
        {
            Metadata = new V1ObjectMeta { Name = "hf" },
            Data = new Dictionary<string, byte[]> { ["token"] = "t0k"u8.ToArray() },
        }));
        var job = await cluster.WaitAsync<V1Job>(BuiltinResources.Jobs, "default", "no-secret", j => Condition(j, "Complete") is not null, "Complete");
        Assert.Equal(1, job.Status.Succeeded);
        Assert.Null(Condition(cluster.Api.Get(BuiltinResources.Jobs, "default", "bad-image").As<V1Job>(), "Failed"));
    }

    [Fact]
    public void Does_match_exit_code_rules_in_order_with_NotIn_and_container_names()
    {
        var pod = new V1Pod
        {
            Metadata = new V1ObjectMeta { Name = "p", NamespaceProperty = "ns" },
            Status = new V1PodStatus
            {
                Phase = "Failed",
                ContainerStatuses =
                [
                    new V1ContainerStatus { Name = "sidecar", State = new V1ContainerState { Terminated = new V1ContainerStateTerminated { ExitCode = 0 } } },
                    new V1ContainerStatus { Name = "main", State = new V1ContainerState { Terminated = new V1ContainerStateTerminated { ExitCode = 42 } } },
                ],
            },
        };
        var policy = new V1PodFailurePolicy
        {
            Rules =
            [
                new V1PodFailurePolicyRule { Action = "FailJob", OnExitCodes = new V1PodFailurePolicyOnExitCodesRequirement { ContainerName = "sidecar", OperatorProperty = "NotIn", Values = [0] } },
                new V1PodFailurePolicyRule { Action = "Ignore", OnExitCodes = new V1PodFailurePolicyOnExitCodesRequirement { OperatorProperty = "NotIn", Values = [1, 2] } },
                new V1PodFailurePolicyRule { Action = "FailJob", OnExitCodes = new V1PodFailurePolicyOnExitCodesRequirement { OperatorProperty = "In", Values = [42] } },
            ],
        };

        Assert.Equal("Ignore", Controllers.PodFailurePolicy.Evaluate(policy, pod).Action);
        Assert.Equal("Count", Controllers.PodFailurePolicy.Evaluate(null, pod).Action);
    }
}
