using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.DependencyInjection;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>The three reconcilers against the embedded API server with simulated catalog nodes.</summary>
[Collection("OperatorServer")]
public sealed class ReconcilerServerTests : IAsyncLifetime
{
    private OperatorHarness _h = null!;

    public async Task InitializeAsync() => _h = await OperatorHarness.StartAsync();

    public async Task DisposeAsync() => await _h.DisposeAsync();

    private static readonly string QuantizeResult = new EngineResult
    {
        Ok = true,
        Verb = EngineVerbs.Quantize,
        DurationSeconds = 42,
        Artifact = new ArtifactReport { Uri = "pvc://models/llama-7b-int4", Format = "lowbit", Bytes = 3_800_000_000, BitsPerWeight = 4.25, CompressionRatio = 3.76 },
        Quality = new QualityReport { PerplexityBefore = 5.47, PerplexityAfter = 5.62 },
    }.ToJson();

    private static QuantizedModel Model(string name, Dictionary<string, string>? sim = null)
    {
        var model = Fixtures.Model(name);
        model.Metadata = new V1ObjectMeta
        {
            Name = name,
            NamespaceProperty = "default",
            Annotations = sim ?? new Dictionary<string, string> { [SimulationAnnotations.TerminationMessage] = QuantizeResult },
        };
        return model;
    }

    private static bool IsTrue(QuantizedModel m, string type) => Conditions.IsTrue(m.Status?.Conditions, type) && m.Status?.ObservedGeneration == m.Metadata.Generation;

    [Fact]
    public async Task Does_quantize_to_ready_with_artifact_and_then_make_zero_writes_on_a_second_reconcile()
    {
        _h.Create(Model("llama"));
        var ready = await _h.WaitAsync<QuantizedModel>("llama", m => IsTrue(m, Conditions.Types.Ready), "QuantizedModel Ready");

        Assert.Equal(4.25, ready.Status!.Artifact!.BitsPerWeight);
        Assert.Equal(5.62, ready.Status.Quality!.PerplexityAfter);
        Assert.Equal("Succeeded", ready.Status.Phase);
        Assert.True(Conditions.IsTrue(ready.Status.Conditions, Conditions.Types.Quantized));
        Assert.True(Conditions.IsTrue(ready.Status.Conditions, Conditions.Types.Planned));
        Assert.Equal("t4", ready.Status.Plan!.NodeType);
        var job = _h.Api.Get<V1Job>("default", "llama-quantize");
        Assert.Equal(ready.Metadata.Uid, Assert.Single(job.Metadata.OwnerReferences).Uid);
        var writes = _h.Server.Journal.Writes;
        Assert.Contains(writes, w => w.Path.EndsWith("/quantizedmodels/llama/status", StringComparison.Ordinal) && w.FieldManager == Labels.FieldManager);
        Assert.Contains(writes, w => w.Verb == "patch" && w.Path.EndsWith("/jobs/llama-quantize", StringComparison.Ordinal) && w.FieldManager == Labels.FieldManager);
        Assert.DoesNotContain(writes, w => w.Verb == "update" && w.Path.EndsWith("/quantizedmodels/llama", StringComparison.Ordinal));

        // A metadata-only change makes the operator reconcile again; converged, it must write nothing.
        await _h.WaitIdleAsync("quantizedmodel");
        var before = _h.TotalReconciles("quantizedmodel");
        _h.Server.Journal.Clear();
        var touched = _h.Api.Get<QuantizedModel>("default", "llama");
        touched.Metadata.Labels = new Dictionary<string, string> { ["touched"] = "yes" };
        _h.Api.Update(touched);
        await _h.WaitForReconcilesAsync("quantizedmodel", before);
        Assert.Empty(_h.OperatorWrites());
    }

    [Fact]
    public async Task Does_report_bad_input_as_stalled_with_the_engine_message_and_stop_retrying()
    {
        var failed = EngineResult.Failed(EngineVerbs.Quantize, ErrorReasons.BadInput, "unsupported architecture 'mamba' in config.json", 0.2).ToJson();
        _h.Create(Model("bad", new Dictionary<string, string>
        {
            [SimulationAnnotations.ExitCode] = "42",
            [SimulationAnnotations.TerminationMessage] = failed,
        }));

        var stalled = await _h.WaitAsync<QuantizedModel>("bad", m => IsTrue(m, Conditions.Types.Stalled)
            && Conditions.Find(m.Status!.Conditions, Conditions.Types.Stalled)!.Reason == Conditions.Reasons.InvalidSpec, "Stalled with InvalidSpec");
        var ready = Conditions.Find(stalled.Status!.Conditions, Conditions.Types.Ready)!;
        Assert.Equal("False", ready.Status);
        Assert.Equal(Conditions.Reasons.InvalidSpec, ready.Reason);
        Assert.Contains("mamba", ready.Message, StringComparison.Ordinal);
        // Terminal: counted, then silence until the generation changes (no retries with backoff).
        await _h.WaitIdleAsync("quantizedmodel");
        var terminal = _h.Metrics.TerminalReconcileErrors.WithLabels("quantizedmodel").Value;
        Assert.True(terminal >= 1);
        var reconciles = _h.TotalReconciles("quantizedmodel");
        await Task.Delay(1000);
        Assert.Equal(reconciles, _h.TotalReconciles("quantizedmodel"));
        var events = _h.Api.List<Corev1Event>("default").Where(e => e.InvolvedObject.Name == "bad").ToList();
        Assert.Contains(events, e => e.Type == "Warning" && e.Reason == Conditions.Reasons.InvalidSpec);
    }

    [Fact]
    public async Task Does_name_the_field_of_bad_input_the_server_accepts_without_creating_a_job()
    {
        // The API server's schema and CEL mirror reject invalid specs at admission; what is left for the
        // operator are inputs only it can judge, such as an unknown architecture preset.
        var model = Model("invalid");
        model.Metadata.Annotations["lowbit.dev/architecture"] = "llama-9000";
        _h.Create(model);

        var stalled = await _h.WaitAsync<QuantizedModel>("invalid", m => IsTrue(m, Conditions.Types.Stalled), "Stalled");
        var ready = Conditions.Find(stalled.Status!.Conditions, Conditions.Types.Ready)!;
        Assert.Equal(Conditions.Reasons.InvalidSpec, ready.Reason);
        Assert.Contains("metadata.annotations[lowbit.dev/architecture]", ready.Message, StringComparison.Ordinal);
        Assert.Contains("llama-2-7b", ready.Message, StringComparison.Ordinal);
        Assert.Null(_h.Api.TryGet<V1Job>("default", "invalid-quantize"));
    }

    [Fact]
    public async Task Does_move_up_to_a_placement_with_more_memory_after_an_oom_kill()
    {
        _h.Create(Model("oom", new Dictionary<string, string> { [SimulationAnnotations.Reason] = "OOMKilled" }));

        var moved = await _h.WaitAsync<QuantizedModel>("oom", m => m.Status?.Plan?.PlacementIndex > 0, "placement moved");
        Assert.NotEqual("t4", moved.Status!.Plan!.NodeType);
        var job = await _h.WaitAsync<V1Job>("oom-quantize", j => ChildMetaPlacement(j) is { } index && index != "0", "Job recreated on the new placement");
        Assert.Equal("1", job.Spec.Template.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"].ToString());
        Assert.Contains(_h.Api.List<Corev1Event>("default"), e => e.InvolvedObject.Name == "oom" && e.Type == "Warning" && e.Reason == Conditions.Reasons.OOMKilled);
    }

    private static string? ChildMetaPlacement(V1Job job) =>
        job.Metadata.Annotations?.TryGetValue(Labels.PlacementAnnotation, out var p) == true ? p.Split(':')[0] : null;

    [Fact]
    public async Task Does_report_an_image_pull_failure_without_a_hot_loop()
    {
        _h.Create(Model("pull", new Dictionary<string, string> { [SimulationAnnotations.ImagePull] = "fail" }));

        var stalled = await _h.WaitAsync<QuantizedModel>("pull", m => IsTrue(m, Conditions.Types.Stalled), "Stalled");
        Assert.Equal(Conditions.Reasons.ImagePullFailed, Conditions.Find(stalled.Status!.Conditions, Conditions.Types.Ready)!.Reason);
        await _h.WaitIdleAsync("quantizedmodel");
        _h.Server.Journal.Clear();
        await Task.Delay(1500);
        Assert.Empty(_h.OperatorWrites());
        Assert.Single(_h.Api.List<Corev1Event>("default"), e => e.InvolvedObject.Name == "pull" && e.Reason == Conditions.Reasons.ImagePullFailed);
    }

    [Fact]
    public async Task Does_report_a_missing_token_secret_as_secret_not_found()
    {
        var model = Model("nosecret");
        model.Spec = model.Spec with { Source = new ModelSource { HuggingFace = model.Spec.Source.HuggingFace! with { TokenSecretRef = new SecretKeyRef { Name = "missing", Key = "token" } } } };
        _h.Create(model);

        var stalled = await _h.WaitAsync<QuantizedModel>("nosecret", m => IsTrue(m, Conditions.Types.Stalled), "Stalled");
        Assert.Equal(Conditions.Reasons.SecretNotFound, Conditions.Find(stalled.Status!.Conditions, Conditions.Types.Ready)!.Reason);
        Assert.DoesNotContain("hf_canary", Newtonsoft(stalled), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_stall_with_child_conflict_naming_a_foreign_job_that_has_our_childs_name_and_leave_it_alone()
    {
        _h.Create(new V1Job
        {
            Metadata = new V1ObjectMeta { Name = "taken-quantize", NamespaceProperty = "default", Labels = new Dictionary<string, string> { ["team"] = "other" } },
            Spec = new V1JobSpec
            {
                Template = new V1PodTemplateSpec
                {
                    Spec = new V1PodSpec { RestartPolicy = "Never", Containers = [new V1Container { Name = "main", Image = "busybox:1.36" }] },
                },
            },
        });
        _h.Create(Model("taken"));

        var stalled = await _h.WaitAsync<QuantizedModel>("taken", m => IsTrue(m, Conditions.Types.Stalled), "Stalled");

        var condition = Conditions.Find(stalled.Status!.Conditions, Conditions.Types.Stalled)!;
        Assert.Equal("ChildConflict", condition.Reason);
        Assert.Contains("Job default/taken-quantize", condition.Message, StringComparison.Ordinal);
        var foreign = _h.Api.Get<V1Job>("default", "taken-quantize");
        Assert.Null(foreign.Metadata.OwnerReferences);
        Assert.Equal("other", foreign.Metadata.Labels["team"]);
        Assert.DoesNotContain(_h.Server.Journal.Writes, w => w.Path.EndsWith("/jobs/taken-quantize", StringComparison.Ordinal) && w.FieldManager == Labels.FieldManager);
    }

    private static string Newtonsoft(object value) => k8s.KubernetesJson.Serialize(value);

    [Fact]
    public async Task Does_converge_through_a_conflict_storm_on_status_writes()
    {
        _h.Server.Faults.FailNext(5, 409, verb: "update", pathContains: "/quantizedmodels/storm/status", message: "the object has been modified");
        _h.Create(Model("storm"));

        await _h.WaitAsync<QuantizedModel>("storm", m => IsTrue(m, Conditions.Types.Ready), "Ready despite conflicts");
        var conflicts = _h.Server.Journal.Entries.Count(e => e.Path.EndsWith("/quantizedmodels/storm/status", StringComparison.Ordinal) && e.Status == 409);
        Assert.True(conflicts >= 5, $"{conflicts} conflicts seen; the 5 injected ones must have been retried");
        Assert.Equal(0, _h.Metrics.ReconcilePanics.WithLabels("quantizedmodel").Value);
    }

    [Fact]
    public async Task Does_wait_for_retry_after_when_the_server_answers_429()
    {
        _h.Server.Faults.FailNext(1, 429, verb: "patch", pathContains: "/jobs/throttled-quantize", retryAfterSeconds: 2);
        _h.Create(Model("throttled"));

        await _h.WaitAsync<QuantizedModel>("throttled", m => IsTrue(m, Conditions.Types.Ready), "Ready after 429");
        var patches = _h.Server.Journal.Entries.Where(e => e.Verb == "patch" && e.Path.EndsWith("/jobs/throttled-quantize", StringComparison.Ordinal)).ToList();
        Assert.Equal(429, patches[0].Status);
        Assert.True(patches[1].Time - patches[0].Time >= TimeSpan.FromSeconds(1.9), $"retried after {(patches[1].Time - patches[0].Time).TotalSeconds:0.00} s");
    }

    [Fact]
    public async Task Does_delete_children_with_the_owner()
    {
        _h.Create(Model("gone"));
        await _h.WaitAsync<QuantizedModel>("gone", m => IsTrue(m, Conditions.Types.Ready), "Ready");
        Assert.NotNull(_h.Api.TryGet<V1Job>("default", "gone-quantize"));
        await _h.WaitIdleAsync("quantizedmodel");

        _h.Api.Delete<QuantizedModel>("default", "gone");
        var deadline = DateTime.UtcNow + OperatorHarness.Patience;
        while (_h.Api.TryGet<V1Job>("default", "gone-quantize") is not null && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.Null(_h.Api.TryGet<V1Job>("default", "gone-quantize"));
    }

    [Fact]
    public async Task Does_not_rerun_a_succeeded_quantize_after_an_operator_upgrade_or_when_its_finished_job_is_deleted()
    {
        _h.Create(Model("done"));
        await _h.WaitAsync<QuantizedModel>("done", m => IsTrue(m, Conditions.Types.Ready), "Ready");
        await _h.WaitIdleAsync("quantizedmodel");
        var image = _h.Api.Get<V1Job>("default", "done-quantize").Spec.Template.Spec.Containers[0].Image;

        // The upgrade: a new operator with another default engine image and host memory takes over the same server.
        await _h.Operator.StopAsync();
        _h.Server.Journal.Clear();
        await using var upgraded = OperatorHarness.StartOperator(_h.Server, Planner.GpuCatalog.Default, op => op.Services.PostConfigure<Builders.WorkloadOptions>(o =>
        {
            o.EngineImage = "ghcr.io/lowbit-dev/lowbit-engine:9.9.9";
            o.DefaultHostMemory = "32Gi";
        }), null);
        await upgraded.StartAsync();
        var metrics = upgraded.Services.GetRequiredService<Lowbit.Operator.Runtime.RuntimeMetrics>();
        await WaitForAsync(() => metrics.ReconcileTotal.WithLabels("quantizedmodel", "success").Value >= 1, "the upgraded operator's first reconcile");
        var job = _h.Api.Get<V1Job>("default", "done-quantize");
        Assert.Equal(image, job.Spec.Template.Spec.Containers[0].Image);
        Assert.DoesNotContain(_h.Server.Journal.Writes, w => w.Path.Contains("/jobs/done-quantize", StringComparison.Ordinal));

        // The finished Job is deleted (by hand, or by a TTL): it is not created again and the status keeps its artifact.
        _h.Api.Delete<V1Job>("default", "done-quantize");
        var before = metrics.ReconcileTotal.WithLabels("quantizedmodel", "success").Value;
        var touched = _h.Api.Get<QuantizedModel>("default", "done");
        touched.Metadata.Labels = new Dictionary<string, string> { ["touched"] = "yes" };
        _h.Api.Update(touched);
        await WaitForAsync(() => metrics.ReconcileTotal.WithLabels("quantizedmodel", "success").Value > before, "a reconcile after the Job's deletion");
        await Task.Delay(500);
        Assert.Null(_h.Api.TryGet<V1Job>("default", "done-quantize"));
        var done = _h.Api.Get<QuantizedModel>("default", "done");
        Assert.Equal("Succeeded", done.Status!.Phase);
        Assert.Equal(4.25, done.Status.Artifact!.BitsPerWeight);
        Assert.True(IsTrue(done, Conditions.Types.Ready));
        await upgraded.StopAsync();
    }

    [Fact]
    public async Task Does_stall_a_running_quantize_with_no_progress_when_the_operators_clock_passes_the_watchdog_timeout()
    {
        // The operator's clock (a fake TimeProvider) is 11 minutes ahead of the pod's log timestamps: the engine's
        // progress line is then older than the 10-minute watchdog.
        await _h.Operator.StopAsync();
        var clock = new Lowbit.Operator.Runtime.Tests.FakeTimeProvider(DateTimeOffset.UtcNow.AddMinutes(11));
        await using var op = OperatorHarness.StartOperator(_h.Server, Planner.GpuCatalog.Default, o => o.UseTimeProvider(clock), null);
        await op.StartAsync();
        _h.Create(Model("quiet", new Dictionary<string, string>
        {
            [SimulationAnnotations.Duration] = "10m",
            [SimulationAnnotations.Log] = """{"event":"progress","stage":"quantize","layer":1,"layers":32,"elapsedSeconds":5}""",
        }));

        var stalled = await _h.WaitAsync<QuantizedModel>("quiet", m => IsTrue(m, Conditions.Types.Stalled), "Stalled NoProgress");

        var condition = Conditions.Find(stalled.Status!.Conditions, Conditions.Types.Stalled)!;
        Assert.Equal("NoProgress", condition.Reason);
        Assert.Contains("quiet-quantize", condition.Message, StringComparison.Ordinal);
        Assert.NotNull(_h.Api.Get<V1Job>("default", "quiet-quantize").Spec.ActiveDeadlineSeconds);
        await op.StopAsync();
    }

    private static async Task WaitForAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + OperatorHarness.Patience;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException(what + " not seen");
            }

            await Task.Delay(20);
        }
    }
}

[CollectionDefinition("OperatorServer", DisableParallelization = true)]
public sealed class OperatorServerCollection;
