using Lowbit.Engine.Protocol;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Controllers;
using Lowbit.Planner;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>Resources and placements the builder and calculator tests share.</summary>
internal static class Fixtures
{
    public static readonly WorkloadOptions Options = new();

    public static QuantizedModel Model(string name = "llama-7b-int4", Action<QuantizedModel>? change = null)
    {
        var model = new QuantizedModel
        {
            Metadata = new V1ObjectMeta
            {
                Name = name,
                NamespaceProperty = "ml",
                Uid = "uid-" + name,
                Generation = 1,
                Labels = new Dictionary<string, string> { ["app.kubernetes.io/instance"] = "argo-app", ["argocd.argoproj.io/instance"] = "argo-app" },
                Annotations = new Dictionary<string, string> { ["argocd.argoproj.io/tracking-id"] = "argo-app:lowbit.dev/QuantizedModel:ml/" + name },
            },
            Spec = new QuantizedModelSpec
            {
                Source = new ModelSource
                {
                    HuggingFace = new HuggingFaceSource
                    {
                        Repo = "meta-llama/Llama-2-7b-hf",
                        Revision = "01c7f73d771dfac7d292323805ebc428287df4f9",
                        TokenSecretRef = new SecretKeyRef { Name = "hf-token", Key = "token" },
                    },
                },
                Method = QuantizationMethod.Hqq,
                Bits = 4,
                GroupSize = 64,
                Formats = [ExportFormat.Lowbit, ExportFormat.GgufQ40],
                Output = new OutputSpec { Pvc = new PvcSource { ClaimName = "models", Path = "llama-7b-int4" } },
            },
        };
        change?.Invoke(model);
        return model;
    }

    public static FineTuneJob FineTune(string name = "alpaca-qlora") => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "ml", Uid = "uid-" + name, Generation = 1 },
        Spec = new FineTuneJobSpec
        {
            BaseModel = new ModelReference { QuantizedModelRef = new ObjectRef { Name = "llama-7b-int4" } },
            Method = FineTuneMethod.Qlora,
            Lora = new LoraSpec { R = 8, Alpha = 16, Dropout = 0, TargetModules = ["q_proj", "v_proj"] },
            Dataset = new DatasetSpec { Source = new DataSource { ConfigMap = new ConfigMapKeyRef { Name = "alpaca", Key = "train.jsonl" } }, Format = DatasetFormat.Alpaca },
            Training = new TrainingSpec { MaxSteps = 100, SaveSteps = 25, SequenceLength = 512 },
            Output = new OutputSpec { Pvc = new PvcSource { ClaimName = "models", Path = "adapters/alpaca" } },
        },
    };

    public static InferenceEndpoint Endpoint(string name = "llama-chat", ServingRuntime runtime = ServingRuntime.Lowbit, int replicas = 2) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "ml", Uid = "uid-" + name, Generation = 3 },
        Spec = new InferenceEndpointSpec
        {
            Model = new ModelReference { QuantizedModelRef = new ObjectRef { Name = "llama-7b-int4" } },
            Runtime = runtime,
            Replicas = replicas,
            MaxContextLength = 4096,
            MaxConcurrency = 8,
        },
    };

    public static PlanResult QuantizePlan(QuantizedModel model) => Planning.Quantize(model, ModelPresets.Llama2_7B, GpuCatalog.Default);

    public static WorkloadPlacement Placement(PlanResult plan, int index = 0) => Planning.Choose(plan, index) ?? throw new InvalidOperationException("no placement");

    /// <summary>A GPU placement for inference of the 4-bit 7B model (several GPUs when <paramref name="shards"/> &gt; 1).</summary>
    public static WorkloadPlacement GpuPlacement(InferenceEndpoint endpoint, int shards = 1)
    {
        var plan = Planning.Inference(endpoint, Model(), ModelPresets.Llama2_7B, GpuCatalog.Default);
        var feasible = plan.Options.OfType<Fits>().ToList();
        var index = feasible.FindIndex(o => o.NodeType.Kind == DeviceKind.Gpu && o.Devices == shards);
        return Planning.Choose(plan, index)!;
    }
}
