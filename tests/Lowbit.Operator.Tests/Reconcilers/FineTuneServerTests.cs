using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.LocalCluster.Kubelet;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>FineTuneJob on a QuantizedModel (QLoRA) against the embedded API server, then an endpoint serving its adapter.</summary>
[Collection("OperatorServer")]
public sealed class FineTuneServerTests : IAsyncLifetime
{
    private OperatorHarness _h = null!;

    public async Task InitializeAsync() => _h = await OperatorHarness.StartAsync();

    public async Task DisposeAsync() => await _h.DisposeAsync();

    [Fact]
    public async Task Does_train_after_the_base_model_is_ready_and_serve_the_adapter()
    {
        var quantized = new EngineResult
        {
            Ok = true, Verb = EngineVerbs.Quantize, DurationSeconds = 3,
            Artifact = new ArtifactReport { Uri = "pvc://models/llama-7b-int4", Format = "lowbit", Bytes = 3_800_000_000, BitsPerWeight = 4.25 },
        }.ToJson();
        var trained = new EngineResult
        {
            Ok = true, Verb = EngineVerbs.FineTune, DurationSeconds = 5,
            Artifact = new ArtifactReport { Uri = "pvc://models/adapters/alpaca", Format = "peft-lora", Bytes = 8_400_000 },
        }.ToJson();
        var job = Fixtures.FineTune();
        job.Metadata = new V1ObjectMeta
        {
            Name = "alpaca-qlora",
            NamespaceProperty = "default",
            Annotations = new Dictionary<string, string>
            {
                [SimulationAnnotations.TerminationMessage] = trained,
                [SimulationAnnotations.Log] = new TrainEvent { Step = 100, TotalSteps = 100, Epoch = 1, Loss = 1.42, TokensPerSecond = 900 }.ToJsonLine(),
            },
        };
        _h.Create(job);
        _h.Create(new V1ConfigMap { Metadata = new V1ObjectMeta { Name = "alpaca", NamespaceProperty = "default" }, Data = new Dictionary<string, string> { ["train.jsonl"] = "{}" } });

        var waiting = await _h.WaitAsync<FineTuneJob>("alpaca-qlora", j => Conditions.Find(j.Status?.Conditions, Conditions.Types.Ready)?.Reason == Conditions.Reasons.WaitingForDependency, "waiting for the base model");
        Assert.Contains("spec.baseModel.quantizedModelRef", Conditions.Find(waiting.Status!.Conditions, Conditions.Types.Ready)!.Message, StringComparison.Ordinal);
        Assert.Null(_h.Api.TryGet<V1Job>("default", "alpaca-qlora-finetune"));

        var model = Fixtures.Model();
        model.Metadata = new V1ObjectMeta { Name = "llama-7b-int4", NamespaceProperty = "default", Annotations = new Dictionary<string, string> { [SimulationAnnotations.TerminationMessage] = quantized } };
        _h.Create(model);

        var ready = await _h.WaitAsync<FineTuneJob>("alpaca-qlora", j => Conditions.IsTrue(j.Status?.Conditions, Conditions.Types.Ready), "FineTuneJob Ready");
        Assert.Equal("peft-lora", ready.Status!.Artifact!.Format);
        Assert.True(Conditions.IsTrue(ready.Status.Conditions, Conditions.Types.Trained));
        var args = _h.Api.Get<V1Job>("default", "alpaca-qlora-finetune").Spec.Template.Spec.Containers[0].Args.ToList();
        Assert.Equal(FineTuneMethod.Qlora, FineTuneRequest.Parse(args).Method);

        _h.Create(new InferenceEndpoint
        {
            Metadata = new V1ObjectMeta { Name = "alpaca", NamespaceProperty = "default" },
            Spec = new InferenceEndpointSpec
            {
                Model = new ModelReference { QuantizedModelRef = new ObjectRef { Name = "llama-7b-int4" } },
                Adapters = [new AdapterSpec { Name = "alpaca", FineTuneJobRef = new ObjectRef { Name = "alpaca-qlora" } }],
            },
        });
        await _h.WaitAsync<InferenceEndpoint>("alpaca", e => Conditions.IsTrue(e.Status?.Conditions, Conditions.Types.Ready), "endpoint Ready");
        var serve = ServeRequest.Parse(_h.Api.Get<V1Deployment>("default", "alpaca-inference").Spec.Template.Spec.Containers[0].Args.ToList());
        Assert.Equal(["alpaca=/mnt/models/adapters/alpaca"], serve.Adapters);
        // serve reads the lowbit export, where quantize --out writes it (ExportFormats.Folder).
        Assert.Equal("/mnt/models/llama-7b-int4/lowbit", serve.Model);
    }
}
