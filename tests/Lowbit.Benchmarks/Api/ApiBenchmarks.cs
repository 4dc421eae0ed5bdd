using System.Text.Json.Nodes;
using BenchmarkDotNet.Attributes;
using Lowbit.LocalCluster.Store;
using k8s.Models;
using Lowbit.Api.Generation;
using Lowbit.Schema;
using Lowbit.Api.Validation;
using Lowbit.Api.V1Alpha1;

namespace Lowbit.Benchmarks.Api;

/// <summary>What admission of one Lowbit resource costs: structural schema (prune, default, validate) and the CEL mirror.</summary>
[MemoryDiagnoser]
public class ApiBenchmarks
{
    private const string Manifest = """
        apiVersion: lowbit.dev/v1alpha1
        kind: FineTuneJob
        metadata: {name: llama-2-7b-qlora-alpaca, namespace: default}
        spec:
          baseModel: {quantizedModelRef: {name: llama-2-7b-hqq-int4}}
          method: qlora
          lora: {r: 16, alpha: 32, dropout: 0.05, targetModules: [q_proj, k_proj, v_proj, o_proj]}
          dataset: {source: {huggingFace: {repo: tatsu-lab/alpaca}}, format: alpaca}
          training: {epochs: 3, learningRate: 0.0002, microBatchSize: 4, gradientAccumulation: 4, sequenceLength: 512}
          output: {pvc: {claimName: models, path: adapters/llama-2-7b-alpaca}}
          unknownField: pruned
        """;

    private readonly JsonObject _manifest = Yaml.ParseObject(Manifest);
    private readonly V1JSONSchemaProps _schema = CustomResourceDefinitions.SchemaOf(CrdGenerator.Generate(typeof(FineTuneJob)));
    private JsonObject _defaulted = null!;

    [GlobalSetup]
    public void Setup()
    {
        _defaulted = (JsonObject)_manifest.DeepClone();
        if (StructuralSchema.Apply(_defaulted, _schema).Count > 0)
        {
            throw new InvalidOperationException("benchmark manifest is invalid");
        }
    }

    [Benchmark(Description = "clone manifest (baseline)")]
    public JsonNode Clone() => _manifest.DeepClone();

    [Benchmark(Description = "StructuralSchema.Apply (clone + prune + default + validate)")]
    public int Apply() => StructuralSchema.Apply((JsonObject)_manifest.DeepClone(), _schema).Count;

    [Benchmark(Description = "StructuralSchema.Validate (defaulted)")]
    public int Validate() => StructuralSchema.Validate(_defaulted, _schema).Count;

    [Benchmark(Description = "CelMirror.Validate (typed rules)")]
    public int Cel() => CelMirror.Validate(_defaulted).Count;
}
