using System.Text.Json.Nodes;
using Lowbit.Engine.Protocol;
using k8s;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Api.Validation;

namespace Lowbit.Api.Tests;

public class StatusRoundTripTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 22, 12, 0, 0, TimeSpan.Zero);

    private static readonly PlanStatus Plan = new()
    {
        NodeType = "a100-40gb",
        GpuModel = "A100-40GB",
        GpusPerReplica = 1,
        Shards = 1,
        MemoryGiB = new MemoryBreakdown { Weights = 3.6, KvCache = 2, Activations = 0.5, Overhead = 1.2, PerGpu = 7.3, Total = 7.3 },
        HourlyUsd = 2.87,
        AlternativesCount = 9,
        Reason = "needs 7.3 GiB: 1x T4 at $0.35/h",
    };

    private static JsonNode RoundTrip<T>(T resource) =>
        JsonNode.Parse(KubernetesJson.Serialize(KubernetesJson.Deserialize<T>(KubernetesJson.Serialize(resource))))!;

    [Fact]
    public void Does_accept_a_full_inference_endpoint_status_and_round_trip_it()
    {
        var endpoint = new InferenceEndpoint
        {
            Metadata = new V1ObjectMeta { Name = "llama", Generation = 3 },
            Spec = new InferenceEndpointSpec { Model = new ModelReference { QuantizedModelRef = new ObjectRef { Name = "llama-int4" } } },
            Status = new InferenceEndpointStatus
            {
                ObservedGeneration = 3,
                Conditions =
                [
                    Conditions.Ready("1/1 replicas ready", 3, Now),
                    Conditions.NotReconciling(Conditions.Reasons.Succeeded, "", 3, Now),
                    Conditions.Create(Conditions.Types.Stalled, Conditions.False, Conditions.Reasons.Succeeded, "", 3, Now),
                    Conditions.Available("serving", 3, Now),
                ],
                Phase = "Ready",
                Plan = Plan,
                Url = "http://llama-inference.default.svc:8000/v1",
                Replicas = 1,
                ReadyReplicas = 1,
                Selector = "app.kubernetes.io/instance=llama,app.kubernetes.io/component=inference",
                Cost = new CostStatus { HourlyUsd = 0.35, UsdPerMillionTokens = 1.9, TokensPerSecond = 51 },
                Timings = new TimingsStatus { StartTime = Now.UtcDateTime, CompletionTime = Now.AddSeconds(95).UtcDateTime, DurationSeconds = 95 },
            },
        };
        Assert.Empty(ResourceValidator.Validate(endpoint));
        var json = RoundTrip(endpoint);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(KubernetesJson.Serialize(endpoint)), json));
        Assert.Equal("2026-11-22T12:00:00Z", (string?)json["status"]!["conditions"]![0]!["lastTransitionTime"]);
        Assert.Equal(2.87, (double)json["status"]!["plan"]!["hourlyUsd"]!);
    }

    [Fact]
    public void Does_accept_full_quantized_model_and_fine_tune_statuses()
    {
        var model = new QuantizedModel
        {
            Metadata = new V1ObjectMeta { Name = "llama-int4" },
            Spec = new QuantizedModelSpec
            {
                Source = new ModelSource { Pvc = new PvcSource { ClaimName = "models", Path = "llama" } },
                Bits = 4,
                Output = new OutputSpec { Pvc = new PvcSource { ClaimName = "models" } },
            },
            Status = new QuantizedModelStatus
            {
                ObservedGeneration = 1,
                Conditions = [Conditions.Quantized("3.9 GiB", 1, Now), Conditions.Ready("done", 1, Now)],
                Plan = Plan,
                Artifact = new ArtifactStatus { Uri = "pvc://models/llama-int4", Format = "lowbit", Bytes = 3_900_000_000, BitsPerWeight = 4.25, CompressionRatio = 3.76 },
                Exports = [new ArtifactStatus { Uri = "pvc://models/llama-int4/gguf", Format = "gguf-q4_k", Bytes = 4_080_000_000 }],
                Quality = new QualityStatus { PerplexityBefore = 5.47, PerplexityAfter = 5.72, MeanReconstructionError = 0.012 },
            },
        };
        Assert.Empty(ResourceValidator.Validate(model));
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(KubernetesJson.Serialize(model)), RoundTrip(model)));

        var job = new FineTuneJob
        {
            Metadata = new V1ObjectMeta { Name = "llama-lora" },
            Spec = new FineTuneJobSpec
            {
                BaseModel = new ModelReference { QuantizedModelRef = new ObjectRef { Name = "llama-int4" } },
                Method = FineTuneMethod.Qlora,
                Dataset = new DatasetSpec { Source = new DataSource { ConfigMap = new ConfigMapKeyRef { Name = "data", Key = "train.jsonl" } } },
                Output = new OutputSpec { Pvc = new PvcSource { ClaimName = "models" } },
            },
            Status = new FineTuneJobStatus
            {
                Conditions = [Conditions.Reconciling(Conditions.Reasons.Running, "step 40/100", null, Now)],
                Progress = new ProgressStatus { Step = 40, TotalSteps = 100, Epoch = 0.4, Loss = 1.83, TokensPerSecond = 2100 },
                Checkpoints = [new CheckpointStatus { Step = 20, Uri = "pvc://models/llama-lora/checkpoint-20" }],
            },
        };
        Assert.Empty(ResourceValidator.Validate(job));
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(KubernetesJson.Serialize(job)), RoundTrip(job)));
    }
}
