using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Controllers;
using Lowbit.Operator.Status;
using Lowbit.Planner;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>
/// A FineTuneJob or InferenceEndpoint whose model is a PVC source without the <c>lowbit.dev/architecture</c>
/// annotation: the resolver asks for an inspect Job of that resource, <c>Decide</c> applies it and reports
/// <c>Inspecting</c> (or <c>Stalled</c> with the inspect pod's diagnosis), and plans from the succeeded pod's result.
/// </summary>
public sealed class InspectSourceTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 22, 12, 0, 0, TimeSpan.Zero);

    private static readonly DecideContext Context = new() { Catalog = GpuCatalog.Default, Options = Fixtures.Options, Now = Now };

    private static readonly ModelSource Pvc = new() { Pvc = new PvcSource { ClaimName = "models", Path = "custom-base" } };

    /// <summary>What <c>lowbit-engine inspect</c> reports for a model no preset matches (a 1.2B-parameter shape).</summary>
    private static readonly EngineResult Inspected = new()
    {
        Ok = true,
        Verb = EngineVerbs.Inspect,
        DurationSeconds = 0.4,
        Metrics = new Dictionary<string, double>
        {
            ["layers"] = 20, ["hiddenSize"] = 2304, ["attentionHeads"] = 18, ["keyValueHeads"] = 6, ["vocabSize"] = 50304,
            ["intermediateSize"] = 6144, ["maxPositionEmbeddings"] = 2048,
        },
        Info = new Dictionary<string, string> { ["modelType"] = "llama" },
    };

    private static FineTuneJob FineTune(Action<FineTuneJob>? change = null)
    {
        var job = Fixtures.FineTune();
        job.Spec = job.Spec with { BaseModel = new ModelReference { Source = Pvc }, Method = FineTuneMethod.Lora };
        change?.Invoke(job);
        return job;
    }

    private static InferenceEndpoint Endpoint(Action<InferenceEndpoint>? change = null)
    {
        var endpoint = Fixtures.Endpoint();
        endpoint.Spec = endpoint.Spec with { Model = new ModelReference { Source = Pvc } };
        change?.Invoke(endpoint);
        return endpoint;
    }

    private static ArchitectureResolver Resolver(params V1Pod[] pods) =>
        new(new MemoryObjectCache(pods), Options.Create(new WorkloadOptions { HubEndpoint = "http://hub.invalid" }),
            new HttpClient(new NoFetch()));

    /// <summary>A pod of <paramref name="owner"/>'s inspect Job that ended with <paramref name="exitCode"/> and <paramref name="message"/>.</summary>
    private static V1Pod InspectPod(IKubernetesObject<V1ObjectMeta> owner, int exitCode, string message) => new()
    {
        Metadata = new V1ObjectMeta
        {
            Name = $"{owner.Metadata.Name}-inspect-x7k2p",
            NamespaceProperty = owner.Metadata.NamespaceProperty,
            Labels = ChildMeta.Labels(owner, InspectJobBuilder.Role),
            CreationTimestamp = Now.UtcDateTime.AddMinutes(-2),
        },
        Status = new V1PodStatus
        {
            Phase = exitCode == 0 ? "Succeeded" : "Failed",
            ContainerStatuses =
            [
                new V1ContainerStatus
                {
                    Name = PodTemplates.ContainerName,
                    Image = "engine:1",
                    State = new V1ContainerState { Terminated = new V1ContainerStateTerminated { ExitCode = exitCode, Reason = exitCode == 0 ? "Completed" : "Error", Message = message } },
                },
            ],
        },
    };

    private static V1Pod BadInputPod(IKubernetesObject<V1ObjectMeta> owner) =>
        InspectPod(owner, EngineExitCodes.BadInput, "--model: /models/models/custom-base has no config.json");

    [Fact]
    public async Task Does_run_an_inspect_job_for_a_fine_tune_job_whose_pvc_base_model_has_no_architecture_annotation()
    {
        var job = FineTune();

        var architecture = await Resolver().ResolveReferenceAsync(job, null, job.Spec.BaseModel.Source, CancellationToken.None);
        var decision = FineTuneJobReconciler.Decide(job, new FineTuneJobObservation { Architecture = architecture }, Context);

        Assert.IsType<ArchitectureResolution.NeedsInspect>(architecture);
        var inspect = Assert.IsType<V1Job>(Assert.Single(decision.Children));
        Assert.Equal($"{job.Metadata.Name}-{InspectJobBuilder.Role}", inspect.Metadata.Name);
        Assert.True(ChildMeta.IsControlledBy(inspect, job));
        var args = inspect.Spec.Template.Spec.Containers[0].Args;
        Assert.Equal(EngineVerbs.Inspect, args[0]);
        Assert.Contains(args, a => a.EndsWith("/models/custom-base", StringComparison.Ordinal));
        Assert.Equal(StatusReasons.Inspecting, decision.Outcome.Reason);
        Assert.IsType<Outcome.InProgress>(decision.Outcome);
        Assert.Equal("Pending", decision.Status.Phase);
        Assert.Equal(StatusReasons.Inspecting, decision.Status.Conditions?.Single(c => c.Type == Conditions.Types.Reconciling).Reason);
        Assert.Null(decision.Placement);
        Assert.Null(decision.Status.Plan);
    }

    [Fact]
    public async Task Does_build_the_finetune_job_from_the_architecture_its_inspect_pod_read()
    {
        var job = FineTune();

        var architecture = await Resolver(InspectPod(job, 0, Inspected.ToJson())).ResolveReferenceAsync(job, null, job.Spec.BaseModel.Source, CancellationToken.None);
        var decision = FineTuneJobReconciler.Decide(job, new FineTuneJobObservation { Architecture = architecture }, Context);

        var resolved = Assert.IsType<ArchitectureResolution.Resolved>(architecture);
        Assert.Equal("inspect", resolved.Via);
        Assert.Equal((20, 2304, 6, 50304), (resolved.Architecture.Layers, resolved.Architecture.HiddenSize, resolved.Architecture.KvHeads, resolved.Architecture.VocabSize));
        var child = Assert.IsType<V1Job>(Assert.Single(decision.Children));
        Assert.Equal($"{job.Metadata.Name}-{FineTuneJobBuilder.Role}", child.Metadata.Name);
        // Planned for the inspected shape: the weights it sized are those of 20 layers of 2304, not a preset's.
        var expected = Planning.Choose(Planning.FineTune(job, resolved.Architecture, GpuCatalog.Default), 0)!;
        Assert.Equal(expected.Option.PerDevice.Weights, decision.Placement?.Option.PerDevice.Weights);
        var llama7B = Planning.Choose(Planning.FineTune(job, ModelPresets.Llama2_7B, GpuCatalog.Default), 0)!;
        Assert.NotEqual(llama7B.Option.PerDevice.Weights, decision.Placement?.Option.PerDevice.Weights);
        Assert.NotEqual(StatusReasons.Inspecting, decision.Outcome.Reason);
    }

    [Fact]
    public async Task Does_stall_a_fine_tune_job_whose_inspect_pod_rejected_its_input_with_the_pod_reason()
    {
        var job = FineTune();
        var pod = BadInputPod(job);

        var architecture = await Resolver(pod).ResolveReferenceAsync(job, null, job.Spec.BaseModel.Source, CancellationToken.None);
        var decision = FineTuneJobReconciler.Decide(job, new FineTuneJobObservation { Architecture = architecture, InspectPods = [pod] }, Context);

        var stalled = Assert.IsType<Outcome.Stalled>(decision.Outcome);
        Assert.Equal(PodDiagnosis.Of([pod]).Reason, stalled.Reason);
        Assert.Equal(Conditions.Reasons.InvalidSpec, stalled.Reason);
        Assert.StartsWith("inspect: ", stalled.Message, StringComparison.Ordinal);
        Assert.Contains("has no config.json", stalled.Message, StringComparison.Ordinal);
        Assert.Equal("Failed", decision.Status.Phase);
        Assert.True(Conditions.IsTrue(decision.Status.Conditions, Conditions.Types.Stalled));
        Assert.EndsWith(InspectJobBuilder.Role, Assert.IsType<V1Job>(Assert.Single(decision.Children)).Metadata.Name, StringComparison.Ordinal);
        Assert.Null(decision.Placement);
    }

    [Fact]
    public async Task Does_let_the_architecture_annotation_skip_a_fine_tune_jobs_inspect_job()
    {
        var job = FineTune(j => j.Metadata.Annotations = new Dictionary<string, string> { [ArchitectureResolver.Annotation] = "tinyllama-1.1b" });

        var architecture = await Resolver().ResolveReferenceAsync(job, null, job.Spec.BaseModel.Source, CancellationToken.None);
        var decision = FineTuneJobReconciler.Decide(job, new FineTuneJobObservation { Architecture = architecture }, Context);

        Assert.Equal("annotation", Assert.IsType<ArchitectureResolution.Resolved>(architecture).Via);
        var child = Assert.IsType<V1Job>(Assert.Single(decision.Children));
        Assert.Equal($"{job.Metadata.Name}-{FineTuneJobBuilder.Role}", child.Metadata.Name);
        Assert.NotNull(decision.Placement);
    }

    [Fact]
    public void Does_stall_a_fine_tune_job_whose_inspect_job_name_is_taken_by_a_foreign_job()
    {
        var job = FineTune();
        var foreign = new V1Job { Metadata = new V1ObjectMeta { Name = $"{job.Metadata.Name}-{InspectJobBuilder.Role}", NamespaceProperty = "ml" } };

        var decision = FineTuneJobReconciler.Decide(job, new FineTuneJobObservation { Architecture = new ArchitectureResolution.NeedsInspect(), InspectJob = foreign }, Context);

        Assert.Equal(StatusReasons.ChildConflict, decision.Outcome.Reason);
        Assert.Contains(foreign.Metadata.Name, decision.Outcome.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_keep_waiting_on_a_referenced_quantized_model_whose_own_inspect_result_is_gone()
    {
        // NeedsInspect from a referenced QuantizedModel: nothing of the FineTuneJob's own to inspect.
        var job = Fixtures.FineTune();

        var decision = FineTuneJobReconciler.Decide(job, new FineTuneJobObservation { BaseModel = ReadyModel(), Architecture = new ArchitectureResolution.NeedsInspect() }, Context);

        Assert.Empty(decision.Children);
        Assert.Equal(Conditions.Reasons.WaitingForDependency, decision.Outcome.Reason);
    }

    [Fact]
    public async Task Does_run_an_inspect_job_for_an_endpoint_whose_pvc_model_has_no_architecture_annotation()
    {
        var endpoint = Endpoint();

        var architecture = await Resolver().ResolveReferenceAsync(endpoint, null, endpoint.Spec.Model.Source, CancellationToken.None);
        var decision = InferenceEndpointReconciler.Decide(endpoint, new InferenceEndpointObservation { Architecture = architecture }, Context);

        Assert.IsType<ArchitectureResolution.NeedsInspect>(architecture);
        var inspect = Assert.IsType<V1Job>(Assert.Single(decision.Children));
        Assert.Equal($"{endpoint.Metadata.Name}-{InspectJobBuilder.Role}", inspect.Metadata.Name);
        Assert.True(ChildMeta.IsControlledBy(inspect, endpoint));
        Assert.Equal(Fixtures.Options.EngineImage, inspect.Spec.Template.Spec.Containers[0].Image);
        Assert.Equal(StatusReasons.Inspecting, decision.Outcome.Reason);
        Assert.Equal("Progressing", decision.Status.Phase);
        var available = decision.Status.Conditions?.Single(c => c.Type == Conditions.Types.Available);
        Assert.Equal(("False", StatusReasons.Inspecting), (available?.Status, available?.Reason));
        Assert.Null(decision.Placement);
    }

    [Fact]
    public void Does_not_run_an_endpoints_inspect_job_in_its_vllm_image()
    {
        var endpoint = Endpoint(e => e.Spec = e.Spec with { Runtime = ServingRuntime.Vllm, Image = "registry.example/vllm@sha256:" + new string('a', 64) });

        var decision = InferenceEndpointReconciler.Decide(endpoint, new InferenceEndpointObservation { Architecture = new ArchitectureResolution.NeedsInspect() }, Context);

        var inspect = Assert.IsType<V1Job>(Assert.Single(decision.Children));
        Assert.Equal(Fixtures.Options.EngineImage, inspect.Spec.Template.Spec.Containers[0].Image);
    }

    [Fact]
    public async Task Does_build_the_deployment_from_the_architecture_its_inspect_pod_read()
    {
        var endpoint = Endpoint();

        var architecture = await Resolver(InspectPod(endpoint, 0, Inspected.ToJson())).ResolveReferenceAsync(endpoint, null, endpoint.Spec.Model.Source, CancellationToken.None);
        var decision = InferenceEndpointReconciler.Decide(endpoint, new InferenceEndpointObservation { Architecture = architecture }, Context);

        var resolved = Assert.IsType<ArchitectureResolution.Resolved>(architecture);
        Assert.Equal("inspect", resolved.Via);
        Assert.Collection(decision.Children, c => Assert.IsType<V1Deployment>(c), c => Assert.IsType<V1Service>(c));
        var expected = Planning.Choose(Planning.Inference(endpoint, null, resolved.Architecture, GpuCatalog.Default), 0)!;
        Assert.Equal(expected.Option.PerDevice.Weights, decision.Placement?.Option.PerDevice.Weights);
        var llama7B = Planning.Choose(Planning.Inference(endpoint, null, ModelPresets.Llama2_7B, GpuCatalog.Default), 0)!;
        Assert.NotEqual(llama7B.Option.PerDevice.Weights, decision.Placement?.Option.PerDevice.Weights);
        Assert.NotEqual(StatusReasons.Inspecting, decision.Outcome.Reason);
    }

    [Fact]
    public async Task Does_stall_an_endpoint_whose_inspect_pod_rejected_its_input_with_the_pod_reason()
    {
        var endpoint = Endpoint();
        var pod = BadInputPod(endpoint);

        var architecture = await Resolver(pod).ResolveReferenceAsync(endpoint, null, endpoint.Spec.Model.Source, CancellationToken.None);
        var decision = InferenceEndpointReconciler.Decide(endpoint, new InferenceEndpointObservation { Architecture = architecture, InspectPods = [pod] }, Context);

        var stalled = Assert.IsType<Outcome.Stalled>(decision.Outcome);
        Assert.Equal(Conditions.Reasons.InvalidSpec, stalled.Reason);
        Assert.StartsWith("inspect: ", stalled.Message, StringComparison.Ordinal);
        Assert.Equal("Failed", decision.Status.Phase);
        Assert.IsType<V1Job>(Assert.Single(decision.Children));
    }

    [Fact]
    public async Task Does_let_the_architecture_annotation_skip_an_endpoints_inspect_job()
    {
        var endpoint = Endpoint(e => e.Metadata.Annotations = new Dictionary<string, string> { [ArchitectureResolver.Annotation] = "tinyllama-1.1b" });

        var architecture = await Resolver().ResolveReferenceAsync(endpoint, null, endpoint.Spec.Model.Source, CancellationToken.None);
        var decision = InferenceEndpointReconciler.Decide(endpoint, new InferenceEndpointObservation { Architecture = architecture }, Context);

        Assert.Equal("annotation", Assert.IsType<ArchitectureResolution.Resolved>(architecture).Via);
        Assert.Collection(decision.Children, c => Assert.IsType<V1Deployment>(c), c => Assert.IsType<V1Service>(c));
    }

    [Fact]
    public async Task Does_resolve_a_gated_quantized_model_from_its_succeeded_inspect_pod()
    {
        var model = Fixtures.Model(change: m => m.Spec = m.Spec with
        {
            Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "acme/private-model", TokenSecretRef = new SecretKeyRef { Name = "hf", Key = "token" } } },
        });

        var before = await Resolver().ResolveAsync(model, CancellationToken.None);
        var after = await Resolver(InspectPod(model, 0, Inspected.ToJson())).ResolveAsync(model, CancellationToken.None);

        Assert.IsType<ArchitectureResolution.NeedsInspect>(before);
        Assert.Equal(20, Assert.IsType<ArchitectureResolution.Resolved>(after).Architecture.Layers);
    }

    private static QuantizedModel ReadyModel()
    {
        var model = Fixtures.Model();
        model.Status = new QuantizedModelStatus { ObservedGeneration = model.Metadata.Generation, Conditions = [Conditions.Ready("quantized", model.Metadata.Generation, Now)] };
        return model;
    }

    /// <summary>PVC sources are never fetched.</summary>
    private sealed class NoFetch : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            throw new InvalidOperationException($"must not fetch {request.RequestUri}");
    }
}
