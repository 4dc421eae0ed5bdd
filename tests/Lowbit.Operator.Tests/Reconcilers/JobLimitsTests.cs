using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Controllers;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>Issue 17, item 4: Job deadlines from the plan's estimate, model-cache ephemeral storage, the progress watchdog.</summary>
public sealed class JobLimitsTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 4, 12, 0, 0, TimeSpan.Zero);

    private static readonly ArchitectureResolution Llama7B = new ArchitectureResolution.Resolved(ModelPresets.Llama2_7B, "preset");

    [Fact]
    public void Does_give_a_quantize_job_the_plans_estimate_times_the_margin_as_active_deadline()
    {
        var model = Fixtures.Model(change: m => m.Spec = m.Spec with { Method = QuantizationMethod.Gptq, Calibration = new CalibrationSpec { Samples = 512, SequenceLength = 2048, Dataset = new DataSource { Pvc = new PvcSource { ClaimName = "data", Path = "c4.jsonl" } } } });
        var placement = Fixtures.Placement(Fixtures.QuantizePlan(model));
        var options = new WorkloadOptions { MinJobDeadline = TimeSpan.FromMinutes(1) };

        var job = QuantizeJobBuilder.Build(model, placement, options);

        var estimate = JobLimits.Estimate(placement, QuantizeJobBuilder.Work(model))!.Value;
        // 7B at 2 bytes: 13.5 GB downloaded at 50 MB/s and loaded at 500 MB/s, plus 2 × 512 × 2048 calibration tokens.
        var expected = (13.5e9 / 50e6) + (13.5e9 / 500e6) + ((2.0 * 512 * 2048 + JobLimits.QualityTokens) / placement.Option.Throughput.TokensPerSecond);
        Assert.InRange(estimate.TotalSeconds, expected * 0.95, expected * 1.05);
        Assert.Equal((long)Math.Ceiling(estimate.TotalSeconds * 3), job.Spec.ActiveDeadlineSeconds);
    }

    [Fact]
    public void Does_use_at_least_the_minimum_deadline_and_the_specs_override_when_given()
    {
        var model = Fixtures.Model();
        var placement = Fixtures.Placement(Fixtures.QuantizePlan(model));

        Assert.Equal(30 * 60, QuantizeJobBuilder.Build(model, placement, Fixtures.Options).Spec.ActiveDeadlineSeconds);
        var overridden = Fixtures.Model(change: m => m.Spec = m.Spec with { ActiveDeadlineSeconds = 7200 });
        Assert.Equal(7200, QuantizeJobBuilder.Build(overridden, placement, Fixtures.Options).Spec.ActiveDeadlineSeconds);
    }

    [Fact]
    public void Does_give_a_fine_tune_without_max_steps_the_default_deadline_and_one_with_steps_an_estimate()
    {
        var job = Fixtures.FineTune();
        var baseModel = Fixtures.Model();
        var placement = Fixtures.Placement(Planning.FineTune(job, ModelPresets.Llama2_7B, GpuCatalog.Default));
        var options = new WorkloadOptions { MinJobDeadline = TimeSpan.FromMinutes(1) };

        var built = FineTuneJobBuilder.Build(job, baseModel, placement, options);
        var tokens = 100.0 * 1 * 8 * 512;
        Assert.Equal((long)Math.Ceiling(JobLimits.Estimate(placement, tokens)!.Value.TotalSeconds * 3), built.Spec.ActiveDeadlineSeconds);

        job.Spec = job.Spec with { Training = job.Spec.Training with { MaxSteps = null } };
        Assert.Equal(24 * 3600, FineTuneJobBuilder.Build(job, baseModel, placement, options).Spec.ActiveDeadlineSeconds);
    }

    [Fact]
    public void Does_bound_the_model_cache_of_a_downloading_pod_by_the_models_size_and_not_of_one_reading_a_pvc()
    {
        var model = Fixtures.Model();
        var placement = Fixtures.Placement(Fixtures.QuantizePlan(model));

        var pod = QuantizeJobBuilder.Build(model, placement, Fixtures.Options).Spec.Template.Spec;

        var cache = Assert.Single(pod.Volumes, v => v.Name == "cache").EmptyDir;
        var size = cache.SizeLimit.ToDecimal();
        Assert.InRange((double)size, 13.5e9 * 1.1, (13.5e9 * 1.1) + (3L << 30));
        var resources = pod.Containers[0].Resources;
        Assert.Equal(size, resources.Requests["ephemeral-storage"].ToDecimal());
        Assert.Equal(size, resources.Limits["ephemeral-storage"].ToDecimal());

        var fromPvc = Fixtures.Model(change: m => m.Spec = m.Spec with { Source = new ModelSource { Pvc = new PvcSource { ClaimName = "models", Path = "llama" } } });
        var pvcPod = QuantizeJobBuilder.Build(fromPvc, placement, Fixtures.Options).Spec.Template.Spec;
        Assert.Null(Assert.Single(pvcPod.Volumes, v => v.Name == "cache").EmptyDir.SizeLimit);
        Assert.False(pvcPod.Containers[0].Resources.Limits.ContainsKey("ephemeral-storage"));
    }

    private static V1Pod RunningPod(DateTimeOffset started) => new()
    {
        Metadata = new V1ObjectMeta { Name = "llama-7b-int4-quantize-x1", NamespaceProperty = "ml" },
        Status = new V1PodStatus
        {
            Phase = "Running",
            StartTime = started.UtcDateTime,
            ContainerStatuses = [new V1ContainerStatus { Name = "engine", State = new V1ContainerState { Running = new V1ContainerStateRunning { StartedAt = started.UtcDateTime } } }],
        },
    };

    private static string Line(DateTimeOffset at, string text) => $"{at.UtcDateTime:yyyy-MM-dd'T'HH:mm:ss.fffffff}12Z {text}\n";

    [Fact]
    public void Does_stall_with_no_progress_when_the_last_progress_line_is_older_than_the_timeout()
    {
        var pods = new[] { RunningPod(Now.AddMinutes(-30)) };
        var tail = Line(Now.AddMinutes(-11), """{"event":"progress","stage":"quantize","layer":3,"layers":32,"elapsedSeconds":120}""")
            + Line(Now.AddMinutes(-2), "a warning that is not a progress line");

        var stalled = ProgressWatchdog.Check(tail, pods, Now, TimeSpan.FromMinutes(10));

        Assert.Equal(StatusReasons.NoProgress, stalled?.Reason);
        Assert.Contains("11 min", stalled!.Message, StringComparison.Ordinal);
        Assert.Null(ProgressWatchdog.Check(tail, pods, Now.AddMinutes(-2), TimeSpan.FromMinutes(10)));
        Assert.Null(ProgressWatchdog.Check(tail, [], Now, TimeSpan.FromMinutes(10)));
    }

    [Fact]
    public void Does_count_from_the_container_start_before_the_first_progress_line()
    {
        var pods = new[] { RunningPod(Now.AddMinutes(-12)) };

        Assert.Equal(StatusReasons.NoProgress, ProgressWatchdog.Check("", pods, Now, TimeSpan.FromMinutes(10))?.Reason);
        Assert.Null(ProgressWatchdog.Check(Line(Now.AddMinutes(-1), """{"event":"download","file":"model.safetensors","bytes":5,"totalBytes":10,"elapsedSeconds":3}"""),
            pods, Now, TimeSpan.FromMinutes(10)));
    }

    [Fact]
    public void Does_decide_stalled_no_progress_for_a_running_quantize_job_and_running_again_once_it_progresses()
    {
        var model = Fixtures.Model();
        var context = new DecideContext { Catalog = GpuCatalog.Default, Options = Fixtures.Options, Now = Now };
        var placement = Fixtures.Placement(Fixtures.QuantizePlan(model));
        var job = QuantizeJobBuilder.Build(model, placement, Fixtures.Options);
        job.Metadata.Uid = "job-uid";
        job.Status = new V1JobStatus { Active = 1, StartTime = Now.AddMinutes(-30).UtcDateTime };
        var observed = new QuantizedModelObservation
        {
            Job = job,
            Pods = [RunningPod(Now.AddMinutes(-30))],
            Architecture = Llama7B,
            LogTail = Line(Now.AddMinutes(-15), """{"event":"progress","stage":"quantize","layer":3,"layers":32,"elapsedSeconds":120}"""),
        };

        var stalled = QuantizedModelReconciler.Decide(model, observed, context);

        Assert.Equal(StatusReasons.NoProgress, stalled.Outcome.Reason);
        Assert.True(Conditions.IsTrue(stalled.Status.Conditions, Conditions.Types.Stalled));
        var moving = QuantizedModelReconciler.Decide(model, observed with { LogTail = observed.LogTail + Line(Now.AddSeconds(-5), """{"event":"progress","stage":"quantize","layer":4,"layers":32,"elapsedSeconds":900}""") }, context);
        Assert.Equal(Conditions.Reasons.Running, moving.Outcome.Reason);
    }
}
