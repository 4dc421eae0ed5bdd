using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Controllers;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Tests.Reconcilers;

public sealed class StatusCalculatorTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 22, 12, 0, 0, TimeSpan.Zero);

    private static V1Pod Pod(Action<V1PodStatus> status)
    {
        var pod = new V1Pod { Metadata = new V1ObjectMeta { Name = "p", CreationTimestamp = Now.UtcDateTime.AddMinutes(-30) }, Status = new V1PodStatus() };
        status(pod.Status);
        return pod;
    }

    private static V1Pod Terminated(int exitCode, string reason, string? message = null) => Pod(s => s.ContainerStatuses =
    [
        new V1ContainerStatus { Name = "engine", Image = "engine:1", State = new V1ContainerState { Terminated = new V1ContainerStateTerminated { ExitCode = exitCode, Reason = reason, Message = message } } },
    ]);

    private static V1Pod Waiting(string reason, string message) => Pod(s => s.ContainerStatuses =
    [
        new V1ContainerStatus { Name = "engine", Image = "registry.example/engine:1", State = new V1ContainerState { Waiting = new V1ContainerStateWaiting { Reason = reason, Message = message } } },
    ]);

    private static V1Pod Unschedulable(TimeSpan ago) => Pod(s => s.Conditions =
    [
        new V1PodCondition { Type = "PodScheduled", Status = "False", Reason = "Unschedulable", Message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.", LastTransitionTime = (Now - ago).UtcDateTime },
    ]);

    private static V1Job Job(string? condition = null) => new()
    {
        Metadata = new V1ObjectMeta { Name = "llama-7b-int4-quantize" },
        Status = new V1JobStatus
        {
            Active = condition is null ? 1 : 0,
            StartTime = Now.UtcDateTime.AddMinutes(-20),
            CompletionTime = condition == "Complete" ? Now.UtcDateTime.AddMinutes(-1) : null,
            Conditions = condition is null ? null : [new V1JobCondition { Type = condition, Status = "True", Reason = condition == "Failed" ? "PodFailurePolicy" : "Completed" }],
        },
    };

    public static TheoryData<string, string, string, string, string, string> Table => new()
    {
        // case, ready, reconciling, stalled, ready reason, phase
        { "running", "False", "True", "False", Conditions.Reasons.Running, "Running" },
        { "succeeded", "True", "False", "False", Conditions.Reasons.Succeeded, "Succeeded" },
        { "oom", "False", "False", "True", Conditions.Reasons.OOMKilled, "Failed" },
        { "gpu-oom", "False", "False", "True", StatusReasons.GpuOutOfMemory, "Failed" },
        { "bad-input", "False", "False", "True", Conditions.Reasons.InvalidSpec, "Failed" },
        { "image-pull", "False", "False", "True", Conditions.Reasons.ImagePullFailed, "Failed" },
        { "secret", "False", "False", "True", Conditions.Reasons.SecretNotFound, "Failed" },
        { "waiting-for-gpu", "False", "True", "False", Conditions.Reasons.WaitingForGpu, "Running" },
        { "pending", "False", "True", "False", Conditions.Reasons.Pending, "Pending" },
    };

    [Fact]
    public void Does_list_every_export_at_its_claim_uri_not_at_the_path_inside_the_pod()
    {
        var model = Fixtures.Model();
        var plan = Fixtures.QuantizePlan(model);
        var result = new EngineResult
        {
            Ok = true,
            Verb = "quantize",
            DurationSeconds = 12,
            Artifact = new ArtifactReport { Uri = "/mnt/models/llama-7b-int4/lowbit", Format = "lowbit", Bytes = 3_900_000_000, BitsPerWeight = 4.25 },
            Metrics = new Dictionary<string, double> { ["bytes.lowbit"] = 3_900_000_000, ["bytes.gguf-q4_0"] = 3_800_000_000 },
        };
        var pods = new[] { Terminated(0, "Completed", result.ToJson()) };
        var observed = new WorkloadObservation { Job = Job("Complete"), Pods = pods, Diagnosis = PodDiagnosis.Of(pods) };

        var status = QuantizedModelStatusCalculator.Compute(model, plan, Fixtures.Placement(plan), observed, Now);

        Assert.Equal("pvc://models/llama-7b-int4", status.Artifact!.Uri);
        Assert.Collection(status.Exports!,
            e => Assert.Equal(("lowbit", "pvc://models/llama-7b-int4/lowbit", 3_900_000_000L, (double?)4.25), (e.Format, e.Uri, e.Bytes, e.BitsPerWeight)),
            e => Assert.Equal(("gguf-q4_0", "pvc://models/llama-7b-int4/gguf-q4_0/model-q4_0.gguf", 3_800_000_000L), (e.Format, e.Uri, e.Bytes)));
    }

    [Fact]
    public void Does_report_the_final_training_step_and_held_out_perplexity_from_the_result_not_the_last_log_line()
    {
        var job = Fixtures.FineTune();
        var plan = Planning.FineTune(job, ModelPresets.Llama2_7B, GpuCatalog.Default);
        var result = new EngineResult
        {
            Ok = true,
            Verb = "finetune",
            DurationSeconds = 600,
            Artifact = new ArtifactReport { Uri = "/mnt/models/adapters/alpaca", Format = "peft-lora", Bytes = 8_400_000 },
            Metrics = new Dictionary<string, double>
            {
                ["steps"] = 100, ["finalLoss"] = 1.25, ["tokensPerSecond"] = 900, ["trainBlocks"] = 400, ["evalLoss"] = 1.5, ["evalPerplexity"] = Math.Exp(1.5),
            },
        };
        var pods = new[] { Terminated(0, "Completed", result.ToJson()) };
        var observed = new WorkloadObservation { Job = Job("Complete"), Pods = pods, Diagnosis = PodDiagnosis.Of(pods) };
        job.Status = new FineTuneJobStatus { Progress = new ProgressStatus { Step = 95, TotalSteps = 100, Epoch = 0.2, Loss = 1.3 } };

        var status = FineTuneJobStatusCalculator.Compute(job, plan, Fixtures.Placement(plan), observed, Now);

        Assert.Equal((100L, 100L, 1.25, 900.0), (status.Progress!.Step, status.Progress.TotalSteps, status.Progress.Loss!.Value, status.Progress.TokensPerSecond!.Value));
        Assert.Equal(100 * job.Spec.Training.MicroBatchSize * job.Spec.Training.GradientAccumulation / 400.0, status.Progress.Epoch, 3);
        Assert.Equal(Math.Round(Math.Exp(1.5), 4), status.Evaluation!.Perplexity);
        Assert.Equal("pvc://models/adapters/alpaca", status.Artifact!.Uri);
    }

    [Theory]
    [MemberData(nameof(Table))]
    public void Does_map_children_to_kstatus_conditions(string scenario, string ready, string reconciling, string stalled, string reason, string phase)
    {
        var model = Fixtures.Model();
        var plan = Fixtures.QuantizePlan(model);
        var placement = Fixtures.Placement(plan);
        var result = new EngineResult { Ok = true, Verb = "quantize", DurationSeconds = 12, Artifact = new ArtifactReport { Uri = "pvc://models/llama-7b-int4", Format = "lowbit", Bytes = 3_900_000_000, BitsPerWeight = 4.25, CompressionRatio = 3.76 } };
        var (job, pods) = scenario switch
        {
            "running" => (Job(), new[] { Pod(s => s.Phase = "Running") }),
            "succeeded" => (Job("Complete"), new[] { Terminated(0, "Completed", result.ToJson()) }),
            "oom" => (Job("Failed"), new[] { Terminated(137, "OOMKilled") }),
            "gpu-oom" => (Job("Failed"), new[] { Terminated(43, "Error", EngineResult.Failed("quantize", ErrorReasons.OutOfMemory, "CUDA out of memory", 3).ToJson()) }),
            "bad-input" => (Job("Failed"), new[] { Terminated(42, "Error", EngineResult.Failed("quantize", ErrorReasons.BadInput, "--bits: 5 not accepted", 0.1).ToJson()) }),
            "image-pull" => (Job(), new[] { Waiting("ImagePullBackOff", "Back-off pulling image") }),
            "secret" => (Job(), new[] { Waiting("CreateContainerConfigError", "secret \"hf-token\" not found") }),
            "waiting-for-gpu" => (Job(), new[] { Unschedulable(TimeSpan.FromMinutes(1)) }),
            _ => ((V1Job?)null, Array.Empty<V1Pod>()),
        };
        var observed = new WorkloadObservation { Job = job, Pods = pods, Diagnosis = PodDiagnosis.Of(pods) };
        // OOM with no bigger placement left: the reconciler passes a null placement.
        var chosen = scenario is "oom" or "gpu-oom" ? Fixtures.Placement(plan, plan.Options.OfType<Fits>().Count() - 1) : placement;
        if (scenario is "oom" or "gpu-oom")
        {
            chosen = Planning.NextIndex(plan, chosen.Index, observed.Diagnosis, Now, TimeSpan.FromMinutes(10)) is { } next ? Planning.Choose(plan, next) : null;
        }

        var status = QuantizedModelStatusCalculator.Compute(model, plan, chosen, observed, Now);

        Assert.Equal(1, status.ObservedGeneration);
        Assert.Equal(ready, Conditions.Find(status.Conditions, Conditions.Types.Ready)!.Status);
        Assert.Equal(reason, Conditions.Find(status.Conditions, Conditions.Types.Ready)!.Reason);
        Assert.Equal(reconciling, Conditions.Find(status.Conditions, Conditions.Types.Reconciling)!.Status);
        Assert.Equal(stalled, Conditions.Find(status.Conditions, Conditions.Types.Stalled)!.Status);
        Assert.Equal(phase, status.Phase);
        Assert.All(status.Conditions!, c => Assert.Equal(1, c.ObservedGeneration));
        if (scenario == "succeeded")
        {
            Assert.Equal(4.25, status.Artifact!.BitsPerWeight);
            Assert.Equal("pvc://models/llama-7b-int4", status.Artifact.Uri);
            Assert.Equal("True", Conditions.Find(status.Conditions, Conditions.Types.Quantized)!.Status);
            Assert.Equal(1140, status.Timings!.DurationSeconds);
        }

        if (scenario == "bad-input")
        {
            Assert.Contains("--bits", Conditions.Find(status.Conditions, Conditions.Types.Ready)!.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Does_keep_last_transition_time_when_the_status_does_not_flip()
    {
        var model = Fixtures.Model();
        var plan = Fixtures.QuantizePlan(model);
        var placement = Fixtures.Placement(plan);
        var running = new WorkloadObservation { Job = Job(), Pods = [Pod(s => s.Phase = "Running")] };
        var first = QuantizedModelStatusCalculator.Compute(model, plan, placement, running, Now);
        model.Status = first;

        var again = QuantizedModelStatusCalculator.Compute(model, plan, placement, running, Now.AddMinutes(5));
        Assert.Equal(
            k8s.KubernetesJson.Serialize(first),
            k8s.KubernetesJson.Serialize(again));

        model.Status = again;
        var done = QuantizedModelStatusCalculator.Compute(model, plan, placement, running with { Job = Job("Complete") }, Now.AddMinutes(9));
        Assert.Equal(Now.AddMinutes(9).UtcDateTime, Conditions.Find(done.Conditions, Conditions.Types.Ready)!.LastTransitionTime);
        Assert.Equal(Now.UtcDateTime, Conditions.Find(done.Conditions, Conditions.Types.Planned)!.LastTransitionTime);
    }

    [Fact]
    public void Does_say_what_would_fit_and_by_how_much_when_nothing_fits()
    {
        var model = Fixtures.Model(change: m => m.Spec = m.Spec with { Scheduling = new SchedulingSpec { AllowedGpuTypes = ["T4"] } });
        var endpoint = Fixtures.Endpoint();
        endpoint.Spec = endpoint.Spec with { Budget = new BudgetSpec { AllowedGpuTypes = ["T4"] }, MaxContextLength = 32768, MaxConcurrency = 64 };
        var plan = Planning.Inference(endpoint, model, ModelPresets.Llama2_70B, GpuCatalog.Default);
        Assert.IsType<NoFit>(plan);

        var status = InferenceEndpointStatusCalculator.Compute(endpoint, plan, null, WorkloadObservation.Empty, "http://x", Now);
        var ready = Conditions.Find(status.Conditions, Conditions.Types.Ready)!;
        Assert.Equal(Conditions.Reasons.InsufficientGpuMemory, ready.Reason);
        Assert.Contains("short by", ready.Message, StringComparison.Ordinal);
        Assert.Contains("would fit", ready.Message, StringComparison.Ordinal);
        Assert.Equal("True", Conditions.Find(status.Conditions, Conditions.Types.Stalled)!.Status);
        Assert.Equal("False", Conditions.Find(status.Conditions, Conditions.Types.Planned)!.Status);
    }

    [Fact]
    public void Does_move_to_the_next_placement_only_after_the_scheduling_timeout()
    {
        var model = Fixtures.Model();
        var plan = Fixtures.QuantizePlan(model);
        var timeout = TimeSpan.FromMinutes(10);

        Assert.Equal(0, Planning.NextIndex(plan, 0, PodDiagnosis.OfPod(Unschedulable(TimeSpan.FromMinutes(9))), Now, timeout));
        Assert.Equal(1, Planning.NextIndex(plan, 0, PodDiagnosis.OfPod(Unschedulable(TimeSpan.FromMinutes(10))), Now, timeout));
    }

    [Fact]
    public void Does_move_to_a_placement_with_more_memory_after_an_oom()
    {
        var model = Fixtures.Model();
        var plan = Fixtures.QuantizePlan(model);
        var next = Planning.NextIndex(plan, 0, PodDiagnosis.OfPod(Terminated(137, "OOMKilled")), Now, TimeSpan.FromMinutes(10));

        Assert.NotNull(next);
        var before = Planning.Choose(plan, 0)!.Option;
        var after = Planning.Choose(plan, next.Value)!.Option;
        Assert.True(after.UsablePerDevice.Bytes * after.Devices > before.UsablePerDevice.Bytes * before.Devices);
        Assert.True(after.HourlyUsd >= before.HourlyUsd);
    }

    [Fact]
    public void Does_report_readiness_url_scale_status_and_cost_of_an_endpoint()
    {
        var endpoint = Fixtures.Endpoint(replicas: 2);
        var placement = Fixtures.GpuPlacement(endpoint);
        var deployment = new V1Deployment
        {
            Metadata = new V1ObjectMeta { Generation = 4 },
            Status = new V1DeploymentStatus { ObservedGeneration = 4, Replicas = 2, UpdatedReplicas = 2, ReadyReplicas = 2, AvailableReplicas = 2 },
        };
        var plan = Planning.Inference(endpoint, Fixtures.Model(), ModelPresets.Llama2_7B, GpuCatalog.Default);
        var status = InferenceEndpointStatusCalculator.Compute(endpoint, plan, placement, new WorkloadObservation { Deployment = deployment }, "http://llama-chat-inference.ml.svc.cluster.local/v1", Now);

        Assert.Equal("True", Conditions.Find(status.Conditions, Conditions.Types.Ready)!.Status);
        Assert.Equal("True", Conditions.Find(status.Conditions, Conditions.Types.Available)!.Status);
        Assert.Equal("Available", status.Phase);
        Assert.Equal(2, status.ReadyReplicas);
        Assert.Equal("http://llama-chat-inference.ml.svc.cluster.local/v1", status.Url);
        Assert.Equal(Math.Round(placement.HourlyUsd * 2, 4), status.Cost!.HourlyUsd);
        Assert.Contains("app.kubernetes.io/instance=llama-chat", status.Selector, StringComparison.Ordinal);

        var stuck = deployment with { };
        stuck.Status = new V1DeploymentStatus
        {
            ObservedGeneration = 4, Replicas = 2, UpdatedReplicas = 1, ReadyReplicas = 1,
            Conditions = [new V1DeploymentCondition { Type = "Progressing", Status = "False", Reason = "ProgressDeadlineExceeded", Message = "ReplicaSet has timed out progressing." }],
        };
        var stalled = InferenceEndpointStatusCalculator.Compute(endpoint, plan, placement, new WorkloadObservation { Deployment = stuck }, "http://x", Now);
        Assert.Equal(StatusReasons.RolloutStuck, Conditions.Find(stalled.Conditions, Conditions.Types.Stalled)!.Reason);
        Assert.Equal("True", Conditions.Find(stalled.Conditions, Conditions.Types.Available)!.Status);
    }

    [Fact]
    public void Does_mirror_training_progress_and_checkpoints_from_engine_log_lines()
    {
        var job = Fixtures.FineTune();
        var plan = Planning.FineTune(job, ModelPresets.Llama2_7B, GpuCatalog.Default);
        var log = string.Join('\n',
            "loading base model",
            new CheckpointEvent { Step = 25, Path = "/mnt/models/adapters/alpaca/checkpoints/step-25" }.ToJsonLine(),
            new TrainEvent { Step = 49, TotalSteps = 100, Epoch = 0.49, Loss = 1.91, TokensPerSecond = 812.5 }.ToJsonLine(),
            new TrainEvent { Step = 50, TotalSteps = 100, Epoch = 0.5, Loss = 1.87, TokensPerSecond = 820.25 }.ToJsonLine(),
            new CheckpointEvent { Step = 50, Path = "/mnt/models/adapters/alpaca/checkpoints/step-50" }.ToJsonLine());
        var status = FineTuneJobStatusCalculator.Compute(job, plan, Fixtures.Placement(plan), new WorkloadObservation { Job = Job(), Pods = [Pod(s => s.Phase = "Running")], LogTail = log }, Now);

        Assert.Equal(50, status.Progress!.Step);
        Assert.Equal(100, status.Progress.TotalSteps);
        Assert.Equal(1.87, status.Progress.Loss);
        Assert.Equal([25L, 50L], status.Checkpoints!.Select(c => c.Step));
        Assert.Equal("pvc://models/adapters/alpaca/checkpoints/step-50", status.Checkpoints![^1].Uri);
    }

    [Fact]
    public void Does_list_only_checkpoints_the_engine_reported_and_keep_earlier_ones_past_the_log_tail()
    {
        var job = Fixtures.FineTune();
        var plan = Planning.FineTune(job, ModelPresets.Llama2_7B, GpuCatalog.Default);
        job.Status = new FineTuneJobStatus { Checkpoints = [new CheckpointStatus { Step = 25, Uri = "pvc://models/adapters/alpaca/checkpoints/step-25" }] };
        // Step 50 passed a save point, but the engine has not said it wrote that checkpoint (e.g. it is still writing).
        var log = string.Join('\n',
            new TrainEvent { Step = 50, TotalSteps = 100, Epoch = 0.5, Loss = 1.87, TokensPerSecond = 820.25 }.ToJsonLine(),
            new TrainEvent { Step = 75, TotalSteps = 100, Epoch = 0.75, Loss = 1.7, TokensPerSecond = 820.25 }.ToJsonLine(),
            new CheckpointEvent { Step = 75, Path = "/var/lib/executor/pvc/ml/models/adapters/alpaca/checkpoints/step-75/" }.ToJsonLine());

        var status = FineTuneJobStatusCalculator.Compute(job, plan, Fixtures.Placement(plan), new WorkloadObservation { Job = Job(), Pods = [Pod(s => s.Phase = "Running")], LogTail = log }, Now);

        Assert.Equal([25L, 75L], status.Checkpoints!.Select(c => c.Step));
        Assert.Equal("pvc://models/adapters/alpaca/checkpoints/step-75", status.Checkpoints![^1].Uri);
    }
}
