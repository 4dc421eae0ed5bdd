using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Controllers;
using Lowbit.Operator.LeaderWorkerSets;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>
/// Multi-node vLLM serving without a server: the LeaderWorkerSet builder, the Service over its leaders, the pure
/// Decide (LWS instead of a Deployment, the switch between them, LWS not installed) and readiness from LWS status.
/// </summary>
public sealed class LeaderWorkerSetTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 5, 14, 0, 0, TimeSpan.Zero);

    private static readonly DecideContext Context = new() { Catalog = GpuCatalog.Default, Options = Fixtures.Options, Now = Now };

    private static readonly ArchitectureResolution Llama405B = new ArchitectureResolution.Resolved(ModelPresets.Llama31_405B, "preset");

    /// <summary>A 405B bf16 model on vLLM limited to A100-80GB nodes: one node of 8 is too small, 2 nodes × 8 fit.</summary>
    public static InferenceEndpoint Endpoint(params string[] allowed) => new()
    {
        Metadata = new V1ObjectMeta { Name = "big", NamespaceProperty = "ml", Uid = "uid-big", Generation = 2 },
        Spec = new InferenceEndpointSpec
        {
            Model = new ModelReference { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "meta-llama/Llama-3.1-405B" } } },
            Runtime = ServingRuntime.Vllm,
            Replicas = 1,
            MaxContextLength = 4096,
            MaxConcurrency = 8,
            Budget = new BudgetSpec { AllowedGpuTypes = allowed.Length == 0 ? ["a100-80gb"] : allowed },
        },
    };

    private static WorkloadPlacement Group()
    {
        var plan = Planning.Inference(Endpoint(), null, ModelPresets.Llama31_405B, GpuCatalog.Default);
        return Planning.Choose(plan, 0)!;
    }

    [Fact]
    public void Does_render_the_vllm_recipe_with_tensor_parallel_per_node_and_a_pipeline_stage_per_node()
    {
        var endpoint = Endpoint();
        var placement = Group();
        Assert.Equal((2, 8, 2), (placement.Nodes, placement.TensorParallel, placement.PipelineStages));

        var set = InferenceLeaderWorkerSetBuilder.Build(endpoint, new ServedModel(), placement, Fixtures.Options);

        Assert.Equal(("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "big-inference"), (set.ApiVersion, set.Kind, set.Metadata.Name));
        Assert.Equal("uid-big", Assert.Single(set.Metadata.OwnerReferences).Uid);
        Assert.True(set.Metadata.OwnerReferences[0].Controller);
        Assert.Equal("big", set.Metadata.Labels[Labels.OwnerKey(InferenceEndpoint.KindName)]);
        Assert.Equal(1, set.Spec.Replicas);
        var template = set.Spec.LeaderWorkerTemplate;
        Assert.Equal((2, "RecreateGroupOnPodRestart"), (template.Size, template.RestartPolicy));

        var leader = Assert.Single(template.LeaderTemplate!.Spec.Containers);
        Assert.Equal(["/bin/sh", "-c"], leader.Command);
        var script = Assert.Single(leader.Args);
        Assert.StartsWith("ray start --head --port=6379 && exec vllm serve meta-llama/Llama-3.1-405B ", script, StringComparison.Ordinal);
        Assert.Contains(" --tensor-parallel-size 8 ", script, StringComparison.Ordinal);
        Assert.Contains(" --pipeline-parallel-size 2 --distributed-executor-backend ray", script, StringComparison.Ordinal);
        Assert.DoesNotContain("--model", script, StringComparison.Ordinal);
        Assert.Equal("/health", leader.ReadinessProbe.HttpGet.Path);
        Assert.NotNull(leader.StartupProbe);

        var worker = Assert.Single(template.WorkerTemplate.Spec.Containers);
        Assert.Equal("until ray start --address=$(LWS_LEADER_ADDRESS):6379 --block; do sleep 5; done", Assert.Single(worker.Args));
        Assert.Null(worker.ReadinessProbe);
        foreach (var pod in new[] { template.LeaderTemplate.Spec, template.WorkerTemplate.Spec })
        {
            var container = Assert.Single(pod.Containers);
            Assert.Equal("8", container.Resources.Limits["nvidia.com/gpu"].ToString());
            Assert.Equal("NVIDIA-A100-SXM4-80GB", pod.NodeSelector[GpuCatalog.GpuProductLabel]);
            Assert.Contains(pod.Volumes, v => v.Name.Contains("shm", StringComparison.Ordinal) && v.EmptyDir?.Medium == "Memory");
            Assert.True(pod.SecurityContext.RunAsNonRoot);
            Assert.False(pod.AutomountServiceAccountToken);
        }

        Assert.Equal("big", template.WorkerTemplate.Metadata.Labels[Labels.OwnerKey(InferenceEndpoint.KindName)]);
        Assert.Equal(placement.Annotation, template.LeaderTemplate.Metadata.Annotations[Labels.PlacementAnnotation]);
        Assert.NotNull(ChildMeta.SpecHash(set));
    }

    [Fact]
    public void Does_quote_what_the_shell_would_split()
    {
        var script = InferenceLeaderWorkerSetBuilder.LeaderScript(["--model", "/models/it's here", "--served-model-name", "big"], Group());
        Assert.Contains("vllm serve '/models/it'\"'\"'s here' --served-model-name big ", script, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_select_only_the_leaders_in_the_service_of_a_group()
    {
        var leaders = InferenceServiceBuilder.Build(Endpoint(), leadersOnly: true);
        var all = InferenceServiceBuilder.Build(Endpoint());
        Assert.Equal("0", leaders.Spec.Selector[LeaderWorkerSet.WorkerIndexLabel]);
        Assert.False(all.Spec.Selector.ContainsKey(LeaderWorkerSet.WorkerIndexLabel));
        Assert.NotEqual(ChildMeta.SpecHash(all), ChildMeta.SpecHash(leaders));
    }

    private static InferenceEndpointObservation Observed(V1Deployment? deployment = null, LeaderWorkerSet? set = null, bool served = true) => new()
    {
        Architecture = Llama405B,
        Deployment = deployment,
        LeaderWorkerSet = set,
        LeaderWorkerSetServed = served,
    };

    [Fact]
    public void Does_apply_a_leader_worker_set_and_delete_the_deployment_of_a_single_node_placement()
    {
        var endpoint = Endpoint();
        var old = new V1Deployment { Metadata = new V1ObjectMeta { Name = "big-inference", NamespaceProperty = "ml", OwnerReferences = [ChildMeta.OwnerReference(endpoint)] } };

        var decision = InferenceEndpointReconciler.Decide(endpoint, Observed(deployment: old), Context);

        Assert.Collection(decision.Children,
            c => Assert.Equal(2, Assert.IsType<LeaderWorkerSet>(c).Spec.LeaderWorkerTemplate.Size),
            c => Assert.Equal("0", Assert.IsType<V1Service>(c).Spec.Selector[LeaderWorkerSet.WorkerIndexLabel]));
        Assert.Same(old, Assert.Single(decision.Deletions));
        Assert.Contains(decision.Events, e => e.Reason == StatusReasons.ServingKindChanged);
        Assert.Equal(("LeaderWorkerSet", 2, 0), (decision.Status.Group!.Kind, decision.Status.Group.Size, decision.Status.Group.ReadyReplicas));
        Assert.Equal(16, decision.Status.Plan!.GpusPerReplica);
        // The scale subresource's selector: leaders only (what an HPA averages over).
        Assert.Contains($"{LeaderWorkerSet.WorkerIndexLabel}=0", decision.Status.Selector, StringComparison.Ordinal);
        Assert.Equal(Conditions.Reasons.Pending, decision.Outcome.Reason);
    }

    [Fact]
    public void Does_not_delete_a_foreign_deployment_of_the_same_name()
    {
        var foreign = new V1Deployment { Metadata = new V1ObjectMeta { Name = "big-inference", NamespaceProperty = "ml" } };

        var decision = InferenceEndpointReconciler.Decide(Endpoint(), Observed(deployment: foreign), Context);

        Assert.Empty(decision.Deletions);
        Assert.Equal(StatusReasons.ChildConflict, decision.Outcome.Reason);
    }

    [Fact]
    public void Does_go_back_to_a_deployment_and_delete_the_group_when_one_node_fits_again()
    {
        var endpoint = Endpoint("h200-141gb");
        var set = InferenceLeaderWorkerSetBuilder.Build(Endpoint(), new ServedModel(), Group(), Fixtures.Options);

        var decision = InferenceEndpointReconciler.Decide(endpoint, Observed(set: set), Context);

        Assert.Contains(decision.Children, c => c is V1Deployment);
        Assert.DoesNotContain(decision.Children, c => c is LeaderWorkerSet);
        Assert.Same(set, Assert.Single(decision.Deletions));
        Assert.False(Assert.IsType<V1Service>(decision.Children.Last()).Spec.Selector.ContainsKey(LeaderWorkerSet.WorkerIndexLabel));
        Assert.Equal(("Deployment", 1), (decision.Status.Group!.Kind, decision.Status.Group.Size));
    }

    [Fact]
    public void Does_say_leader_worker_set_is_not_installed_and_name_both_fixes_instead_of_failing()
    {
        var decision = InferenceEndpointReconciler.Decide(Endpoint("a100-80gb"), Observed(served: false), Context);

        Assert.Empty(decision.Children);
        var stalled = Assert.IsType<Outcome.Stalled>(decision.Outcome);
        Assert.Equal(StatusReasons.LeaderWorkerSetNotInstalled, stalled.Reason);
        Assert.Contains("install LeaderWorkerSet", stalled.Message, StringComparison.Ordinal);
        // One 8× H200 node holds the model; the allowed GPU types exclude it: the message says which field admits it.
        Assert.Contains("spec.budget.allowedGpuTypes", stalled.Message, StringComparison.Ordinal);
        Assert.Contains("8× H200-141GB", stalled.Message, StringComparison.Ordinal);
        var ready = Assert.Single(decision.Status.Conditions!, c => c.Type == Conditions.Types.Ready);
        Assert.Equal(("False", StatusReasons.LeaderWorkerSetNotInstalled), (ready.Status, ready.Reason));
        // Not terminal: looked at again (the CRD may be installed meanwhile).
        Assert.Equal(ReconcileResult.RequeueAfter(DecisionParts.PollBlocked), decision.Result);
    }

    [Fact]
    public void Does_follow_the_leader_worker_set_ready_groups_for_readiness()
    {
        var endpoint = Endpoint();
        var set = InferenceLeaderWorkerSetBuilder.Build(endpoint, new ServedModel(), Group(), Fixtures.Options);
        set.Metadata.Generation = 1;
        set.Status = new LeaderWorkerSetStatus { Replicas = 1, UpdatedReplicas = 1, ReadyReplicas = 0, ObservedGeneration = 1 };

        var waiting = InferenceEndpointReconciler.Decide(endpoint, Observed(set: set), Context);
        set.Status = set.Status with { ReadyReplicas = 1 };
        var serving = InferenceEndpointReconciler.Decide(endpoint, Observed(set: set), Context);

        Assert.Equal(Conditions.Reasons.Progressing, waiting.Outcome.Reason);
        Assert.False(Conditions.IsTrue(waiting.Status.Conditions, Conditions.Types.Ready));
        Assert.IsType<Outcome.Succeeded>(serving.Outcome);
        Assert.True(Conditions.IsTrue(serving.Status.Conditions, Conditions.Types.Ready));
        Assert.Equal((1, 1), (serving.Status.ReadyReplicas, serving.Status.Group!.ReadyReplicas));
    }

    [Fact]
    public void Does_keep_a_running_group_through_an_operator_default_change_and_roll_it_for_a_spec_change()
    {
        var endpoint = Endpoint();
        var running = InferenceLeaderWorkerSetBuilder.Build(endpoint, new ServedModel(), Group(), Fixtures.Options);
        var upgraded = new WorkloadOptions { VllmImage = "vllm/vllm-openai:v0.11.0" };
        Assert.NotEqual(Fixtures.Options.VllmImage, upgraded.VllmImage);

        var kept = DeploymentRollout.Decide(endpoint, InferenceLeaderWorkerSetBuilder.Build(endpoint, new ServedModel(), Group(), upgraded), running);
        var longer = Endpoint();
        longer.Spec = longer.Spec with { MaxContextLength = 8192 };
        var rolled = DeploymentRollout.Decide(longer, InferenceLeaderWorkerSetBuilder.Build(longer, new ServedModel(), Group(), Fixtures.Options), running);

        Assert.Null(kept.Child);
        Assert.NotNull(rolled.Child);
        Assert.Contains("args", rolled.Changed);
    }
}
