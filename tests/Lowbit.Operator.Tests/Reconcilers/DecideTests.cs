using Lowbit.Engine.Protocol;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Controllers;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Status;
using Lowbit.Planner;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>The three pure <c>Decide</c> functions: spec + observation + plan in, the whole decision out, no server.</summary>
public sealed class DecideTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 22, 12, 0, 0, TimeSpan.Zero);

    private static readonly DecideContext Context = new() { Catalog = GpuCatalog.Default, Options = Fixtures.Options, Now = Now };

    private static readonly ArchitectureResolution Llama7B = new ArchitectureResolution.Resolved(ModelPresets.Llama2_7B, "preset");

    private static QuantizedModel ReadyModel(Action<QuantizedModel>? change = null)
    {
        var model = Fixtures.Model(change: change);
        model.Status = new QuantizedModelStatus { ObservedGeneration = model.Metadata.Generation, Conditions = [Conditions.Ready("quantized", model.Metadata.Generation, Now)] };
        return model;
    }

    [Fact]
    public void Does_stall_an_invalid_quantized_model_spec_as_InvalidSpec_without_children()
    {
        var model = Fixtures.Model(change: m => m.Spec = m.Spec with { Bits = null });

        var decision = QuantizedModelReconciler.Decide(model, new QuantizedModelObservation { Architecture = Llama7B }, Context);

        var stalled = Assert.IsType<Outcome.Stalled>(decision.Outcome);
        Assert.Equal(Conditions.Reasons.InvalidSpec, stalled.Reason);
        Assert.StartsWith("spec.bits: ", stalled.Message, StringComparison.Ordinal);
        Assert.Empty(decision.Children);
        Assert.IsType<ReconcileResult.TerminalFailure>(decision.Result);
        Assert.True(Conditions.IsTrue(decision.Status.Conditions, Conditions.Types.Stalled));
    }

    [Fact]
    public void Does_create_the_quantize_job_on_the_cheapest_placement_when_the_architecture_is_known()
    {
        var model = Fixtures.Model();

        var decision = QuantizedModelReconciler.Decide(model, new QuantizedModelObservation { Architecture = Llama7B }, Context);

        var job = Assert.IsType<V1Job>(Assert.Single(decision.Children));
        Assert.Equal($"{model.Metadata.Name}-{QuantizeJobBuilder.Role}", job.Metadata.Name);
        Assert.Equal(Conditions.Reasons.Pending, decision.Outcome.Reason);
        Assert.Equal(0, decision.Placement?.Index);
        Assert.Equal(ReconcileResult.RequeueAfter(DecisionParts.PollRunning), decision.Result);
    }

    [Fact]
    public void Does_stall_quantize_head_for_a_model_with_tied_embeddings_as_InvalidSpec_without_a_job()
    {
        var model = Fixtures.Model(change: m => m.Spec = m.Spec with { QuantizeHead = true });
        var gemma = new ArchitectureResolution.Resolved(ModelPresets.Gemma2B, "preset");

        var tied = QuantizedModelReconciler.Decide(model, new QuantizedModelObservation { Architecture = gemma }, Context);
        var untied = QuantizedModelReconciler.Decide(model, new QuantizedModelObservation { Architecture = Llama7B }, Context);

        var stalled = Assert.IsType<Outcome.Stalled>(tied.Outcome);
        Assert.Equal(Conditions.Reasons.InvalidSpec, stalled.Reason);
        Assert.StartsWith("spec.quantizeHead: Gemma-2B ties lm_head to its input embeddings", stalled.Message, StringComparison.Ordinal);
        Assert.Empty(tied.Children);
        Assert.Null(tied.Placement);
        Assert.IsType<ReconcileResult.TerminalFailure>(tied.Result);
        Assert.False(Conditions.IsTrue(tied.Status.Conditions, Conditions.Types.Ready));
        Assert.IsType<V1Job>(Assert.Single(untied.Children));
    }

    [Fact]
    public void Does_size_the_head_at_the_linear_bits_when_quantizing_or_serving_a_quantize_head_model()
    {
        var plain = Fixtures.Model();
        var quantizeHead = Fixtures.Model(change: m => m.Spec = m.Spec with { QuantizeHead = true });
        var endpoint = Fixtures.Endpoint();
        // lm_head 32,000 × 4,096 at int4 group 64 (4.5 bpw) instead of 16 bits.
        var saved = (long)(32000L * 4096 * (16 - 4.5) / 8);

        var quantize = Planning.Quantize(plain, ModelPresets.Llama2_7B, GpuCatalog.Default).Total.Weights
                       - Planning.Quantize(quantizeHead, ModelPresets.Llama2_7B, GpuCatalog.Default).Total.Weights;
        var serve = Planning.Inference(endpoint, plain, ModelPresets.Llama2_7B, GpuCatalog.Default).Total.Weights
                    - Planning.Inference(endpoint, quantizeHead, ModelPresets.Llama2_7B, GpuCatalog.Default).Total.Weights;

        Assert.Equal(saved, quantize.Bytes);
        Assert.Equal(saved, serve.Bytes);
    }

    [Fact]
    public void Does_run_an_inspect_job_for_a_source_whose_architecture_needs_reading()
    {
        var decision = QuantizedModelReconciler.Decide(Fixtures.Model(), new QuantizedModelObservation { Architecture = new ArchitectureResolution.NeedsInspect() }, Context);

        var job = Assert.IsType<V1Job>(Assert.Single(decision.Children));
        Assert.EndsWith(InspectJobBuilder.Role, job.Metadata.Name, StringComparison.Ordinal);
        Assert.Equal(StatusReasons.Inspecting, decision.Outcome.Reason);
        Assert.Null(decision.Placement);
    }

    [Fact]
    public void Does_wait_for_a_referenced_quantized_model_that_is_not_ready()
    {
        var endpoint = Fixtures.Endpoint();

        var decision = InferenceEndpointReconciler.Decide(endpoint, new InferenceEndpointObservation { Model = Fixtures.Model() }, Context);

        Assert.Equal(Conditions.Reasons.WaitingForDependency, decision.Outcome.Reason);
        Assert.Contains("spec.model.quantizedModelRef", decision.Outcome.Message, StringComparison.Ordinal);
        Assert.Empty(decision.Children);
        Assert.IsType<ReconcileResult.Requeue>(decision.Result);
    }

    [Fact]
    public void Does_stall_vllm_without_a_gptq_export_as_InvalidSpec_naming_the_field()
    {
        var endpoint = Fixtures.Endpoint(runtime: ServingRuntime.Vllm);

        var decision = InferenceEndpointReconciler.Decide(endpoint, new InferenceEndpointObservation { Model = ReadyModel(), Architecture = Llama7B }, Context);

        Assert.Equal(Conditions.Reasons.InvalidSpec, decision.Outcome.Reason);
        Assert.StartsWith("spec.runtime: ", decision.Outcome.Message, StringComparison.Ordinal);
        Assert.Empty(decision.Children);
        Assert.Null(decision.Placement);
        Assert.IsType<ReconcileResult.TerminalFailure>(decision.Result);
    }

    [Fact]
    public void Does_apply_a_deployment_and_a_service_for_a_ready_model()
    {
        var endpoint = Fixtures.Endpoint();

        var decision = InferenceEndpointReconciler.Decide(endpoint, new InferenceEndpointObservation { Model = ReadyModel(), Architecture = Llama7B }, Context);

        Assert.Collection(decision.Children, c => Assert.IsType<V1Deployment>(c), c => Assert.IsType<V1Service>(c));
        Assert.NotNull(decision.Placement);
        Assert.Equal(InferenceDeploymentBuilder.Url(endpoint, Fixtures.Options), decision.Status.Url);
        Assert.IsType<Outcome.InProgress>(decision.Outcome);
    }

    [Fact]
    public void Does_stall_a_scheduling_timeout_that_is_not_a_duration_instead_of_throwing()
    {
        var job = Fixtures.FineTune();
        job.Spec = job.Spec with { Scheduling = new SchedulingSpec { Timeout = "ten minutes" } };

        var decision = FineTuneJobReconciler.Decide(job, new FineTuneJobObservation { BaseModel = ReadyModel(), Architecture = Llama7B }, Context);

        Assert.Equal(Conditions.Reasons.InvalidSpec, decision.Outcome.Reason);
        Assert.StartsWith("spec.scheduling.timeout: ", decision.Outcome.Message, StringComparison.Ordinal);
        Assert.Empty(decision.Children);
    }

    [Fact]
    public void Does_finish_a_fine_tune_job_whose_job_completed_and_count_its_gpu_time()
    {
        var job = Fixtures.FineTune();
        var started = Now.UtcDateTime.AddHours(-2);
        var child = new V1Job
        {
            Metadata = new V1ObjectMeta
            {
                Name = $"{job.Metadata.Name}-{FineTuneJobBuilder.Role}",
                NamespaceProperty = "ml",
                OwnerReferences = [new V1OwnerReference { ApiVersion = "lowbit.dev/v1alpha1", Kind = "FineTuneJob", Name = job.Metadata.Name, Uid = job.Metadata.Uid, Controller = true }],
            },
            Status = new V1JobStatus
            {
                StartTime = started,
                CompletionTime = started.AddHours(1),
                Conditions = [new V1JobCondition { Type = "Complete", Status = "True" }],
            },
        };

        var decision = FineTuneJobReconciler.Decide(job, new FineTuneJobObservation { Job = child, BaseModel = ReadyModel(), Architecture = Llama7B }, Context);

        Assert.IsType<Outcome.Succeeded>(decision.Outcome);
        Assert.Equal(ReconcileResult.Done, decision.Result);
        Assert.Equal("Succeeded", decision.Status.Phase);
        var placement = Assert.IsType<WorkloadPlacement>(decision.Placement);
        var expected = new GpuTime(placement.GpusPerReplica, new DateTimeOffset(started, TimeSpan.Zero), new DateTimeOffset(started.AddHours(1), TimeSpan.Zero));
        Assert.Equal(placement.OnGpu ? expected : null, decision.GpuTime);
    }
    private static QuantizedModel SucceededModel(long generation, long observedGeneration)
    {
        var model = Fixtures.Model(change: m => m.Metadata.Generation = generation);
        model.Status = new QuantizedModelStatus
        {
            ObservedGeneration = observedGeneration,
            Phase = "Succeeded",
            Conditions = [Conditions.Ready("quantized to 4.25 bits per weight", observedGeneration, Now)],
            Artifact = new ArtifactStatus { Uri = "pvc://models/llama-7b-int4", Format = "lowbit", Bytes = 3_800_000_000, BitsPerWeight = 4.25 },
        };
        return model;
    }

    [Fact]
    public void Does_not_recreate_the_deleted_job_of_a_quantized_model_that_succeeded_at_its_generation()
    {
        var model = SucceededModel(generation: 3, observedGeneration: 3);

        var decision = QuantizedModelReconciler.Decide(model, new QuantizedModelObservation { Architecture = Llama7B }, Context);

        Assert.Empty(decision.Children);
        Assert.IsType<Outcome.Succeeded>(decision.Outcome);
        Assert.Same(model.Status, decision.Status);
        Assert.Equal("pvc://models/llama-7b-int4", decision.Status.Artifact?.Uri);
        Assert.Equal(ReconcileResult.Done, decision.Result);
    }

    [Fact]
    public void Does_not_replace_the_finished_job_when_an_operator_upgrade_changes_the_default_image()
    {
        var model = SucceededModel(generation: 3, observedGeneration: 3);
        var placement = Planning.Choose(Planning.Quantize(model, ModelPresets.Llama2_7B, GpuCatalog.Default), 0)!;
        var oldJob = QuantizeJobBuilder.Build(model, placement, Fixtures.Options);
        var upgraded = Context with { Options = new WorkloadOptions { EngineImage = "ghcr.io/lowbit-dev/lowbit-engine:0.2.0", DefaultHostMemory = "16Gi" } };
        Assert.NotEqual(ChildMeta.SpecHash(oldJob), ChildMeta.SpecHash(QuantizeJobBuilder.Build(model, placement, upgraded.Options)));

        var decision = QuantizedModelReconciler.Decide(model, new QuantizedModelObservation { Job = oldJob, Architecture = Llama7B }, upgraded);

        Assert.Empty(decision.Children);
        Assert.IsType<Outcome.Succeeded>(decision.Outcome);
    }

    [Fact]
    public void Does_run_a_succeeded_quantized_model_again_when_its_spec_generation_changes()
    {
        var model = SucceededModel(generation: 4, observedGeneration: 3);

        var decision = QuantizedModelReconciler.Decide(model, new QuantizedModelObservation { Architecture = Llama7B }, Context);

        var job = Assert.IsType<V1Job>(Assert.Single(decision.Children));
        Assert.Equal("4", ChildMeta.Annotation(job, ChildMeta.GenerationAnnotation));
        Assert.IsType<Outcome.InProgress>(decision.Outcome);
    }

    [Fact]
    public void Does_keep_a_fine_tune_job_succeeded_with_its_adapter_when_its_job_is_gone()
    {
        var job = Fixtures.FineTune();
        job.Status = new FineTuneJobStatus
        {
            ObservedGeneration = job.Metadata.Generation,
            Phase = "Succeeded",
            Conditions = [Conditions.Ready("adapter trained", job.Metadata.Generation, Now)],
            Artifact = new ArtifactStatus { Uri = "pvc://adapters/alpaca", Format = "peft-lora", Bytes = 1000 },
        };

        var decision = FineTuneJobReconciler.Decide(job, new FineTuneJobObservation { BaseModel = ReadyModel(), Architecture = Llama7B }, Context);

        Assert.Empty(decision.Children);
        Assert.IsType<Outcome.Succeeded>(decision.Outcome);
        Assert.Equal("pvc://adapters/alpaca", decision.Status.Artifact?.Uri);

        job.Metadata.Generation++;
        var rerun = FineTuneJobReconciler.Decide(job, new FineTuneJobObservation { BaseModel = ReadyModel(), Architecture = Llama7B }, Context);
        Assert.IsType<V1Job>(Assert.Single(rerun.Children));
    }
    [Fact]
    public void Does_keep_the_running_serving_template_when_only_operator_defaults_change_and_roll_naming_the_fields_otherwise()
    {
        var endpoint = Fixtures.Endpoint();
        var observation = new InferenceEndpointObservation { Model = ReadyModel(), Architecture = Llama7B };
        var running = Assert.IsType<V1Deployment>(InferenceEndpointReconciler.Decide(endpoint, observation, Context).Children[0]);
        var upgraded = Context with { Options = new WorkloadOptions { EngineImage = "ghcr.io/lowbit-dev/lowbit-engine:0.2.0", DefaultHostMemory = "16Gi" } };

        var kept = InferenceEndpointReconciler.Decide(endpoint, observation with { Deployment = running }, upgraded);

        Assert.IsType<V1Service>(Assert.Single(kept.Children));
        Assert.Empty(kept.Events);
        endpoint.Spec = endpoint.Spec with { Replicas = endpoint.Spec.Replicas + 1 };
        var scaled = InferenceEndpointReconciler.Decide(endpoint, observation with { Deployment = running }, upgraded);
        Assert.Equal(endpoint.Spec.Replicas, Assert.IsType<V1Scale>(scaled.Children[0]).Spec.Replicas);
        Assert.Empty(scaled.Events);

        endpoint.Spec = endpoint.Spec with { MaxContextLength = endpoint.Spec.MaxContextLength / 2 };
        endpoint.Metadata.Generation++;
        var rolled = InferenceEndpointReconciler.Decide(endpoint, observation with { Deployment = running }, upgraded);

        var rolledDeployment = Assert.IsType<V1Deployment>(rolled.Children[0]);
        Assert.Equal("ghcr.io/lowbit-dev/lowbit-engine:0.2.0", rolledDeployment.Spec.Template.Spec.Containers[0].Image);
        var ev = Assert.Single(rolled.Events);
        Assert.Equal(StatusReasons.Rolling, ev.Reason);
        Assert.Contains("args, resources", ev.Message, StringComparison.Ordinal);
        Assert.Contains("image", ev.Message, StringComparison.Ordinal);
    }
}
