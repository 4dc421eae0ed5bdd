using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Planner;

namespace Lowbit.Operator.Tests.Reconcilers;

public sealed class BuilderTests
{
    private static void AssertRestricted(V1PodSpec pod)
    {
        Assert.False(pod.AutomountServiceAccountToken);
        Assert.True(pod.SecurityContext.RunAsNonRoot);
        Assert.Equal(65532, pod.SecurityContext.RunAsUser);
        Assert.Equal("RuntimeDefault", pod.SecurityContext.SeccompProfile.Type);
        foreach (var container in pod.Containers)
        {
            var security = container.SecurityContext;
            Assert.True(security.RunAsNonRoot);
            Assert.False(security.AllowPrivilegeEscalation);
            Assert.False(security.Privileged);
            Assert.Equal(["ALL"], security.Capabilities.Drop);
            Assert.Null(security.Capabilities.Add);
            Assert.Equal("RuntimeDefault", security.SeccompProfile.Type);
            Assert.Equal("FallbackToLogsOnError", container.TerminationMessagePolicy);
            Assert.DoesNotContain(":latest", container.Image, StringComparison.Ordinal);
            Assert.Contains(container.VolumeMounts, m => m.MountPath == "/dev/shm");
        }

        var shm = Assert.Single(pod.Volumes, v => v.Name == "dshm");
        Assert.Equal("Memory", shm.EmptyDir.Medium);
        Assert.All(pod.Volumes, v => Assert.Null(v.HostPath));
    }

    [Fact]
    public void Does_build_a_restricted_quantize_job_with_owner_labels_and_failure_policy()
    {
        var model = Fixtures.Model();
        var placement = Fixtures.Placement(Fixtures.QuantizePlan(model));
        var job = QuantizeJobBuilder.Build(model, placement, Fixtures.Options);

        Assert.Equal("llama-7b-int4-quantize", job.Metadata.Name);
        Assert.Equal("ml", job.Metadata.NamespaceProperty);
        var owner = Assert.Single(job.Metadata.OwnerReferences);
        Assert.True(owner.Controller);
        Assert.True(owner.BlockOwnerDeletion);
        Assert.Equal("uid-llama-7b-int4", owner.Uid);
        Assert.Equal("QuantizedModel", owner.Kind);
        Assert.Equal("lowbit.dev/v1alpha1", owner.ApiVersion);
        Assert.Equal("llama-7b-int4", job.Metadata.Labels["app.kubernetes.io/instance"]);
        Assert.Equal("quantize", job.Metadata.Labels["app.kubernetes.io/component"]);
        Assert.Equal("lowbit-operator", job.Metadata.Labels["app.kubernetes.io/managed-by"]);
        Assert.Equal("lowbit", job.Metadata.Labels["app.kubernetes.io/name"]);
        Assert.Equal("llama-7b-int4", job.Metadata.Labels["lowbit.dev/quantizedmodel"]);
        Assert.DoesNotContain(job.Metadata.Labels.Keys, k => k.StartsWith("argocd.argoproj.io", StringComparison.Ordinal));
        Assert.DoesNotContain(job.Metadata.Annotations.Keys, k => k.StartsWith("argocd.argoproj.io", StringComparison.Ordinal));

        var pod = job.Spec.Template.Spec;
        Assert.Equal("Never", pod.RestartPolicy);
        AssertRestricted(pod);
        var rules = job.Spec.PodFailurePolicy.Rules;
        Assert.Equal("Ignore", rules[0].Action);
        Assert.Equal("DisruptionTarget", Assert.Single(rules[0].OnPodConditions).Type);
        Assert.Equal("FailJob", rules[1].Action);
        Assert.Equal([42, 43, 137], rules[1].OnExitCodes.Values);
        Assert.Equal("Count", rules[2].Action);
    }

    [Fact]
    public void Does_round_trip_quantize_args_through_the_protocol_parser()
    {
        var model = Fixtures.Model();
        var placement = Fixtures.Placement(Fixtures.QuantizePlan(model));
        var container = QuantizeJobBuilder.Build(model, placement, Fixtures.Options).Spec.Template.Spec.Containers[0];

        var request = Assert.IsType<QuantizeRequest>(EngineRequest.Parse(container.Args.ToList()));
        Assert.Equal("meta-llama/Llama-2-7b-hf", request.Model);
        Assert.Equal("01c7f73d771dfac7d292323805ebc428287df4f9", request.Revision);
        Assert.Equal(Engine.Protocol.QuantizationMethod.Hqq, request.Method);
        Assert.Equal(4, request.Bits);
        Assert.Equal(64, request.GroupSize);
        Assert.Equal(["lowbit", "gguf-q4_0"], request.Formats);
        Assert.Equal("/mnt/models/llama-7b-int4", request.Out);
        Assert.Equal(container.Args, request.ToArgs());
        var mount = Assert.Single(container.VolumeMounts, m => m.MountPath == "/mnt/models");
        Assert.False(mount.ReadOnlyProperty);
    }

    [Fact]
    public void Does_pass_the_hub_token_only_as_a_secret_reference()
    {
        var model = Fixtures.Model();
        var job = QuantizeJobBuilder.Build(model, Fixtures.Placement(Fixtures.QuantizePlan(model)), Fixtures.Options);
        var env = job.Spec.Template.Spec.Containers[0].Env;

        var token = Assert.Single(env, e => e.Name == EngineEnv.HfToken);
        Assert.Null(token.Value);
        Assert.Equal("hf-token", token.ValueFrom.SecretKeyRef.Name);
        Assert.Equal("token", token.ValueFrom.SecretKeyRef.Key);
        Assert.DoesNotContain(job.Spec.Template.Spec.Containers[0].Args, a => a.Contains("hf-token", StringComparison.Ordinal));
    }

    [Fact]
    public void Does_request_gpus_and_select_the_node_type_of_the_placement()
    {
        var endpoint = Fixtures.Endpoint();
        var placement = Fixtures.GpuPlacement(endpoint);
        var deployment = InferenceDeploymentBuilder.Build(endpoint, new ServedModel { QuantizedModel = Fixtures.Model() }, placement, Fixtures.Options);
        var pod = deployment.Spec.Template.Spec;
        var resources = pod.Containers[0].Resources;

        Assert.Equal("1", resources.Limits["nvidia.com/gpu"].ToString());
        Assert.Equal(resources.Requests["nvidia.com/gpu"], resources.Limits["nvidia.com/gpu"]);
        Assert.Equal(resources.Requests["memory"], resources.Limits["memory"]);
        Assert.Equal(placement.NodeType.NodeSelector[GpuCatalog.GpuProductLabel], pod.NodeSelector[GpuCatalog.GpuProductLabel]);
        Assert.Contains(pod.Tolerations, t => t.Key == "nvidia.com/gpu" && t.Effect == "NoSchedule");
        Assert.Equal("Always", pod.RestartPolicy);
        AssertRestricted(pod);
    }

    [Fact]
    public void Does_build_a_lowbit_serving_deployment_with_probes_replicas_and_a_stable_selector()
    {
        var endpoint = Fixtures.Endpoint(replicas: 3);
        var placement = Fixtures.GpuPlacement(endpoint);
        var deployment = InferenceDeploymentBuilder.Build(endpoint, new ServedModel { QuantizedModel = Fixtures.Model() }, placement, Fixtures.Options);
        var container = deployment.Spec.Template.Spec.Containers[0];

        Assert.Equal("llama-chat-inference", deployment.Metadata.Name);
        Assert.Equal(3, deployment.Spec.Replicas);
        Assert.Equal(60, container.StartupProbe.FailureThreshold);
        Assert.Equal("/health", container.StartupProbe.HttpGet.Path);
        Assert.Equal("/ready", container.ReadinessProbe.HttpGet.Path);
        var request = Assert.IsType<ServeRequest>(EngineRequest.Parse(container.Args.ToList()));
        Assert.Equal("/mnt/models/llama-7b-int4/lowbit", request.Model); // the lowbit export inside the quantize output
        Assert.Equal(4096, request.MaxContext);
        Assert.Equal(8, request.MaxConcurrency);
        Assert.Equal(ComputeDevice.Cuda, request.Device);
        Assert.Equal(ServeRequest.CudaMaxNumBatchedTokens, request.MaxNumBatchedTokens);
        Assert.Contains("--max-num-batched-tokens", container.Args);
        foreach (var (key, value) in deployment.Spec.Selector.MatchLabels)
        {
            Assert.Equal(value, deployment.Spec.Template.Metadata.Labels[key]);
        }

        var service = InferenceServiceBuilder.Build(endpoint);
        Assert.Equal("llama-chat-inference", service.Metadata.Name);
        Assert.Equal(deployment.Spec.Selector.MatchLabels, service.Spec.Selector);
        Assert.True(Assert.Single(service.Metadata.OwnerReferences).Controller);
    }

    [Fact]
    public void Does_pass_tensor_parallel_size_and_quantization_flags_to_vllm()
    {
        var endpoint = Fixtures.Endpoint(runtime: ServingRuntime.Vllm);
        var model = Fixtures.Model(change: m => m.Spec = m.Spec with { Formats = [ExportFormat.Gptq] });
        var placement = Fixtures.GpuPlacement(endpoint, shards: 2);
        var args = InferenceDeploymentBuilder.Build(endpoint, new ServedModel { QuantizedModel = model }, placement, Fixtures.Options).Spec.Template.Spec.Containers[0].Args;

        Assert.Equal("2", args[args.IndexOf("--tensor-parallel-size") + 1]);
        Assert.Equal("gptq", args[args.IndexOf("--quantization") + 1]);
        Assert.Equal("4096", args[args.IndexOf("--max-model-len") + 1]);
        Assert.Equal("0.90", args[args.IndexOf("--gpu-memory-utilization") + 1]);
        Assert.Equal("2", placement.GpusPerReplica.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public void Does_reject_vllm_without_a_gptq_export_naming_the_field()
    {
        var endpoint = Fixtures.Endpoint(runtime: ServingRuntime.Vllm);
        var error = InferenceDeploymentBuilder.Check(endpoint, new ServedModel { QuantizedModel = Fixtures.Model() });
        Assert.NotNull(error);
        Assert.Equal("spec.runtime", error.Field);
        Assert.Throws<ArgumentException>(() =>
            InferenceDeploymentBuilder.Build(endpoint, new ServedModel { QuantizedModel = Fixtures.Model() }, Fixtures.GpuPlacement(endpoint), Fixtures.Options));
    }

    [Fact]
    public void Does_serve_the_gguf_export_with_llamacpp()
    {
        var endpoint = Fixtures.Endpoint(runtime: ServingRuntime.LlamaCpp);
        var args = InferenceDeploymentBuilder.Build(endpoint, new ServedModel { QuantizedModel = Fixtures.Model() }, Fixtures.GpuPlacement(endpoint), Fixtures.Options)
            .Spec.Template.Spec.Containers[0].Args;

        Assert.EndsWith(".gguf", args[args.IndexOf("-m") + 1], StringComparison.Ordinal);
        Assert.Equal((4096 * 8).ToString(System.Globalization.CultureInfo.InvariantCulture), args[args.IndexOf("-c") + 1]); // n_ctx is shared by the slots
        Assert.Equal("8", args[args.IndexOf("--parallel") + 1]);
    }

    [Fact]
    public void Does_have_every_finetune_pod_resume_from_the_latest_checkpoint_of_its_run()
    {
        // The Job controller replaces a preempted or failed pod from the same template, so the template itself must
        // resume: --resume-from latest with the checkpoint folder on the output claim, the same on every build.
        var job = Fixtures.FineTune();
        var placement = Fixtures.Placement(Lowbit.Operator.Controllers.Planning.FineTune(job, ModelPresets.Llama2_7B, GpuCatalog.Default));
        var first = FineTuneJobBuilder.Build(job, Fixtures.Model(), placement, Fixtures.Options);
        var again = FineTuneJobBuilder.Build(job, Fixtures.Model(), placement, Fixtures.Options);

        var request = FineTuneRequest.Parse(first.Spec.Template.Spec.Containers[0].Args.ToList());
        Assert.Equal(FineTuneRequest.ResumeLatest, request.ResumeFrom);
        Assert.Equal("/mnt/models/adapters/alpaca/checkpoints", request.CheckpointDir);
        Assert.StartsWith("/mnt/models/adapters/alpaca", request.Out, StringComparison.Ordinal);
        Assert.Equal(FineTuneMethod.Qlora, request.Method);
        Assert.Equal("/config/alpaca/train.jsonl", request.Dataset);
        Assert.Equal("/mnt/models/llama-7b-int4/lowbit", request.BaseModel); // the lowbit export inside the quantize output
        Assert.Equal(Lowbit.Operator.Builders.ChildMeta.SpecHash(first), Lowbit.Operator.Builders.ChildMeta.SpecHash(again));
        AssertRestricted(first.Spec.Template.Spec);
    }

    [Fact]
    public void Does_pass_save_steps_eval_split_warmup_and_checkpointing_of_the_training_spec_to_the_engine()
    {
        var job = Fixtures.FineTune();
        job.Spec = job.Spec with { Training = job.Spec.Training with { EvalSplit = 0, WarmupRatio = 0.1, GradientCheckpointing = true } };
        var placement = Fixtures.Placement(Lowbit.Operator.Controllers.Planning.FineTune(job, ModelPresets.Llama2_7B, GpuCatalog.Default));

        var request = FineTuneRequest.Parse(FineTuneJobBuilder.Build(job, Fixtures.Model(), placement, Fixtures.Options).Spec.Template.Spec.Containers[0].Args.ToList());

        Assert.Equal(25, request.SaveSteps);
        Assert.Equal(0, request.EvalSplit);
        Assert.Equal(0.1, request.WarmupRatio);
        Assert.Equal(10, request.WarmupStepsOf(100));
        Assert.True(request.GradientCheckpointing);
    }

    [Fact]
    public void Does_pass_the_evaluation_text_to_quantize_and_reject_a_remote_one_naming_the_field()
    {
        var local = Fixtures.Model(change: m => m.Spec = m.Spec with
        {
            Evaluation = new EvaluationSpec { Text = new DataSource { ConfigMap = new ConfigMapKeyRef { Name = "held-out", Key = "eval.txt" } } },
        });
        var remote = Fixtures.Model(change: m => m.Spec = m.Spec with
        {
            Evaluation = new EvaluationSpec { Text = new DataSource { Url = "https://example.com/eval.txt" } },
        });
        var placement = Fixtures.Placement(Fixtures.QuantizePlan(local));

        var request = Assert.IsType<QuantizeRequest>(EngineRequest.Parse(QuantizeJobBuilder.Build(local, placement, Fixtures.Options).Spec.Template.Spec.Containers[0].Args.ToList()));
        var error = QuantizeJobBuilder.Check(remote, placement);

        Assert.Equal("/config/held-out/eval.txt", request.EvalText);
        Assert.Equal("spec.evaluation.text", error?.Field);
    }

    [Fact]
    public void Does_give_the_same_spec_hash_for_the_same_inputs_and_a_new_one_for_a_spec_change()
    {
        var model = Fixtures.Model();
        var placement = Fixtures.Placement(Fixtures.QuantizePlan(model));
        var a = QuantizeJobBuilder.Build(model, placement, Fixtures.Options);
        var b = QuantizeJobBuilder.Build(Fixtures.Model(), placement, Fixtures.Options);
        var changed = QuantizeJobBuilder.Build(Fixtures.Model(change: m => { m.Spec = m.Spec with { Bits = 3 }; m.Metadata.Generation = 2; }), placement, Fixtures.Options);

        Assert.Equal(ChildMeta.SpecHash(a), ChildMeta.SpecHash(b));
        Assert.NotEqual(ChildMeta.SpecHash(a), ChildMeta.SpecHash(changed));
    }

    [Fact]
    public void Does_report_a_gptq_export_with_mixed_precision_as_invalid_spec_naming_the_field()
    {
        var model = Fixtures.Model(change: m => m.Spec = m.Spec with { Bits = null, TargetBitsPerWeight = 2.5, Formats = [ExportFormat.Gptq] });
        var error = QuantizeJobBuilder.Check(model, Fixtures.Placement(Fixtures.QuantizePlan(model)));
        Assert.NotNull(error);
        Assert.Equal("spec.formats", error.Field);
    }

    [Fact]
    public void Does_pass_quantize_head_to_the_engine_only_when_the_spec_sets_it()
    {
        var dense = Fixtures.Model();
        var quantized = Fixtures.Model(change: m => m.Spec = m.Spec with { QuantizeHead = true });
        var placement = Fixtures.Placement(Fixtures.QuantizePlan(dense));

        var denseArgs = QuantizeJobBuilder.Build(dense, placement, Fixtures.Options).Spec.Template.Spec.Containers[0].Args;
        var quantizedArgs = QuantizeJobBuilder.Build(quantized, placement, Fixtures.Options).Spec.Template.Spec.Containers[0].Args.ToList();

        Assert.DoesNotContain("--quantize-head", denseArgs);
        Assert.Contains("--quantize-head", quantizedArgs);
        Assert.Equal("true", quantizedArgs[quantizedArgs.IndexOf("--quantize-head") + 1]);
        Assert.True(Assert.IsType<QuantizeRequest>(EngineRequest.Parse(quantizedArgs)).QuantizeHead);
    }

    [Fact]
    public void Does_report_quantize_head_with_a_gptq_export_as_invalid_spec_naming_the_field()
    {
        var model = Fixtures.Model(change: m => m.Spec = m.Spec with { QuantizeHead = true, Formats = [ExportFormat.Lowbit, ExportFormat.Gptq] });
        var error = QuantizeJobBuilder.Check(model, Fixtures.Placement(Fixtures.QuantizePlan(model)));
        Assert.NotNull(error);
        Assert.Equal("spec.quantizeHead", error.Field);
    }

    [Theory]
    [InlineData("ghcr.io/x/engine:latest", false)]
    [InlineData("ghcr.io/x/engine", false)]
    [InlineData("localhost:5000/engine", false)]
    [InlineData("ghcr.io/x/engine:1.2.3", true)]
    [InlineData("ghcr.io/x/engine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true)]
    public void Does_accept_only_pinned_images(string image, bool pinned) =>
        Assert.Equal(pinned, ImageReference.PinError(image) is null);

    [Fact]
    public void Does_reject_latest_images_in_operator_options_naming_the_setting()
    {
        var result = new WorkloadOptionsValidator().Validate(null, new WorkloadOptions { VllmImage = "vllm/vllm-openai:latest" });
        Assert.True(result.Failed);
        Assert.Contains("Operator:Workloads:VllmImage", result.FailureMessage, StringComparison.Ordinal);
    }
}
