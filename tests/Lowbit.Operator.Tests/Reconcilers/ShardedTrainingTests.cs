using System.Globalization;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Controllers;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>A FineTuneJob on several GPUs: one pod, all the placement's GPUs, <c>finetune --shards</c> = those GPUs.</summary>
public sealed class ShardedTrainingTests
{
    private static FineTuneJob Job(params string[] allowedGpuTypes)
    {
        var job = Fixtures.FineTune();
        job.Spec = job.Spec with { Scheduling = new SchedulingSpec { AllowedGpuTypes = allowedGpuTypes } };
        return job;
    }

    private static FineTuneRequest Request(FineTuneJob job, WorkloadPlacement placement, out k8s.Models.V1Job built)
    {
        built = FineTuneJobBuilder.Build(job, Fixtures.Model(), placement, Fixtures.Options);
        var container = Assert.Single(built.Spec.Template.Spec.Containers);
        Assert.Equal("finetune", container.Args[0]);
        return FineTuneRequest.Parse([.. container.Args]);
    }

    [Fact]
    public void Does_render_one_pod_with_every_gpu_of_a_multi_gpu_training_placement_and_pass_them_as_shards()
    {
        // QLoRA of a 70B model needs about 43 GiB: on 24 GB L4s only a pipeline split over several of them fits.
        var job = Job("l4");
        var plan = Planning.FineTune(job, ModelPresets.Llama2_70B, GpuCatalog.Default);
        var placement = Fixtures.Placement(plan);
        Assert.True(placement.GpusPerReplica > 1, placement.Label);
        Assert.False(placement.MultiNode);
        Assert.Contains($"pipeline split over {placement.GpusPerReplica} GPUs", plan.Summary, StringComparison.Ordinal);

        var request = Request(job, placement, out var built);

        Assert.Equal(placement.GpusPerReplica, request.Shards);
        Assert.Empty(request.ShardDevices); // cuda:0 … cuda:N-1, the GPUs the pod was given
        Assert.Equal(ComputeDevice.Cuda, request.Device);
        Assert.Equal(FineTuneRequest.ResumeLatest, request.ResumeFrom);
        // One Job, one pod, asking for all the GPUs.
        Assert.Null(built.Spec.Parallelism);
        Assert.Null(built.Spec.Completions);
        var gpus = placement.GpusPerReplica.ToString(CultureInfo.InvariantCulture);
        var resources = built.Spec.Template.Spec.Containers[0].Resources;
        Assert.Equal(gpus, resources.Limits["nvidia.com/gpu"].ToString());
        Assert.Equal(gpus, resources.Requests["nvidia.com/gpu"].ToString());
        // status.plan says the same: the pod's GPUs and as many shards.
        var status = StatusParts.Plan(plan, placement)!;
        Assert.Equal((placement.GpusPerReplica, placement.GpusPerReplica), (status.GpusPerReplica, status.Shards));
        Assert.Equal(Math.Round(placement.Option.PerDevice.Total.GiB, 2), status.MemoryGiB!.PerGpu);
    }

    [Fact]
    public void Does_say_a_training_job_too_large_for_one_node_has_no_multi_node_placement()
    {
        var job = Fixtures.FineTune();
        job.Spec = job.Spec with { Method = FineTuneMethod.Full, BaseModel = new ModelReference { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "meta-llama/Llama-2-70b-hf" } } } };
        var plan = Assert.IsType<NoFit>(Planning.FineTune(job, ModelPresets.Llama2_70B, GpuCatalog.Default));

        Assert.All(plan.Options, o => Assert.Equal(1, o.Nodes));
        var message = StatusParts.NoFitMessage(plan);
        Assert.Contains("nothing fits: closest 8×", message, StringComparison.Ordinal);
        Assert.Contains("no multi-node training", message, StringComparison.Ordinal);
        Assert.Equal(Api.Conditions.Reasons.InsufficientGpuMemory, StatusParts.NoFitReason(plan));
    }

    [Fact]
    public void Does_not_pass_shards_on_one_gpu()
    {
        var job = Fixtures.FineTune();
        var placement = Fixtures.Placement(Planning.FineTune(job, ModelPresets.Llama2_7B, GpuCatalog.Default));
        Assert.Equal(1, placement.GpusPerReplica);

        var request = Request(job, placement, out var built);

        Assert.Equal(1, request.Shards);
        Assert.DoesNotContain(PipelineSplit.ShardsFlag, built.Spec.Template.Spec.Containers[0].Args);
    }

    [Fact]
    public void Does_resume_the_same_run_when_an_out_of_memory_moves_it_to_more_gpus()
    {
        var job = Job("a100-80gb");
        var plan = Planning.FineTune(job, ModelPresets.Llama2_70B, GpuCatalog.Default);
        var first = Fixtures.Placement(plan);
        Assert.Equal(1, first.GpusPerReplica);

        var next = Planning.NextIndex(plan, first.Index, new PodDiagnosis.OutOfMemory(Gpu: true, "CUDA out of memory"), DateTimeOffset.UnixEpoch, TimeSpan.FromMinutes(10));
        var bigger = Fixtures.Placement(plan, next ?? throw new InvalidOperationException("no placement with more memory"));
        Assert.Equal(2, bigger.GpusPerReplica);

        var before = Request(job, first, out _);
        var after = Request(job, bigger, out _);

        Assert.Equal(2, after.Shards);
        // Only the shard count differs: same checkpoint folder, --resume-from latest, and every flag of the run's
        // fingerprint (the engine leaves --shards out of it), so the new pod continues the old pod's checkpoints.
        Assert.Equal(before, after with { Shards = 1 });
        Assert.Equal((FineTuneRequest.ResumeLatest, before.CheckpointDir), (after.ResumeFrom, after.CheckpointDir));
    }
}
