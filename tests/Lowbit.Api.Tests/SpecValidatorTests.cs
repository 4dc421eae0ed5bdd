using System.Text.Json.Nodes;
using Lowbit.Engine.Protocol;
using Lowbit.LocalCluster.Store;
using k8s.Models;
using Lowbit.Api.Generation;
using Lowbit.Schema;
using Lowbit.Api.V1Alpha1;
using Lowbit.Api.Validation;

namespace Lowbit.Api.Tests;

public class SpecValidatorTests
{
    private static readonly QuantizedModelSpec ValidModel = new()
    {
        Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "meta-llama/Llama-2-7b-hf" } },
        Method = QuantizationMethod.Hqq,
        Bits = 4,
        Output = new OutputSpec { Pvc = new PvcSource { ClaimName = "models", Path = "llama" } },
    };

    private static readonly FineTuneJobSpec ValidJob = new()
    {
        BaseModel = new ModelReference { QuantizedModelRef = new ObjectRef { Name = "llama" } },
        Method = FineTuneMethod.Qlora,
        Dataset = new DatasetSpec { Source = new DataSource { Url = "https://example.com/a.jsonl" }, Format = DatasetFormat.Alpaca },
        Output = new OutputSpec { Pvc = new PvcSource { ClaimName = "models" } },
    };

    private static readonly InferenceEndpointSpec ValidEndpoint = new()
    {
        Model = new ModelReference { QuantizedModelRef = new ObjectRef { Name = "llama" } },
    };

    /// <summary>
    /// Each CEL rule: the schema node (path from the root) that must carry it, and a spec that breaks it with the
    /// field path and message the C# mirror must report.
    /// </summary>
    public static TheoryData<string, string, string, string> Rules() => new()
    {
        { typeof(QuantizedModel).Name, "spec", CelRules.BitsXorTarget, "spec.bits" },
        { typeof(QuantizedModel).Name, "spec", CelRules.GptqNeedsCalibration, "spec.calibration" },
        { typeof(QuantizedModel).Name, "spec", CelRules.GptqFormatBits, "spec.formats" },
        { typeof(QuantizedModel).Name, "spec", CelRules.GgufFormatBits, "spec.formats" },
        { typeof(QuantizedModel).Name, "spec", CelRules.QuantizeHeadNotGptq, "spec.quantizeHead" },
        { typeof(QuantizedModel).Name, "spec.source", CelRules.ExactlyOneModelSource, "spec.source" },
        { typeof(QuantizedModel).Name, "spec.source.pvc", CelRules.NoParentPath, "spec.source.pvc.path" },
        { typeof(QuantizedModel).Name, "spec.calibration.dataset", CelRules.ExactlyOneDataSource, "spec.calibration.dataset" },
        { typeof(QuantizedModel).Name, "spec.image", CelRules.ImageDigest, "spec.image" },
        { typeof(QuantizedModel).Name, "", CelRules.NameLength, "metadata.name" },
        { typeof(FineTuneJob).Name, "spec", CelRules.QloraNeedsQuantizedBase, "spec.baseModel" },
        { typeof(FineTuneJob).Name, "spec", CelRules.FullHasNoLora, "spec.lora" },
        { typeof(FineTuneJob).Name, "spec.baseModel", CelRules.ExactlyOneModel, "spec.baseModel" },
        { typeof(FineTuneJob).Name, "spec.dataset.source", CelRules.ExactlyOneDataSource, "spec.dataset.source" },
        { typeof(FineTuneJob).Name, "spec.output.pvc", CelRules.NoParentPath, "spec.output.pvc.path" },
        { typeof(InferenceEndpoint).Name, "spec", CelRules.LlamacppNoAdapters, "spec.adapters" },
        { typeof(InferenceEndpoint).Name, "spec.autoscaling", CelRules.MinNotAboveMax, "spec.autoscaling.minReplicas" },
        { typeof(InferenceEndpoint).Name, "spec.model", CelRules.ExactlyOneModel, "spec.model" },
        { typeof(InferenceEndpoint).Name, "spec.image", CelRules.ImageDigest, "spec.image" },
    };

    [Theory]
    [MemberData(nameof(Rules))]
    public void Does_carry_each_cel_rule_in_the_crd_and_enforce_it_in_csharp(string kind, string schemaPath, string rule, string field)
    {
        var crd = CrdGenerator.Generate(CrdGenerator.ResourceTypes.Single(t => t.Name == kind));
        var node = schemaPath.Split('.', StringSplitOptions.RemoveEmptyEntries)
            .Aggregate(CustomResourceDefinitions.SchemaOf(crd), (s, name) => s.Properties[name]);
        var validation = Assert.Single(node.XKubernetesValidations, v => v.Rule == rule);

        var errors = CelMirror.Validate(Breaking(kind, rule));
        var error = Assert.Single(errors);
        Assert.Equal(field, error.Field);
        Assert.Contains(validation.Message, error.Message, StringComparison.Ordinal);
    }

    /// <summary>A manifest of <paramref name="kind"/> that breaks exactly <paramref name="rule"/>.</summary>
    private static JsonObject Breaking(string kind, string rule)
    {
        var name = rule == CelRules.NameLength ? new string('a', CelRules.MaxNameLength + 1) : "ok";
        object resource = kind switch
        {
            nameof(QuantizedModel) => new QuantizedModel { Metadata = new V1ObjectMeta { Name = name }, Spec = BreakModel(rule) },
            nameof(FineTuneJob) => new FineTuneJob { Metadata = new V1ObjectMeta { Name = name }, Spec = BreakJob(rule) },
            _ => new InferenceEndpoint { Metadata = new V1ObjectMeta { Name = name }, Spec = BreakEndpoint(rule) },
        };
        var obj = JsonNode.Parse(k8s.KubernetesJson.Serialize(resource))!.AsObject();
        var crd = CustomResourceDefinitions.Find(ManifestChecks.CommittedCrds, ApiGroup.ApiVersion, kind)!;
        Assert.Empty(StructuralSchema.Apply(obj, CustomResourceDefinitions.SchemaOf(crd)));
        return obj;
    }

    private static QuantizedModelSpec BreakModel(string rule) => rule switch
    {
        CelRules.BitsXorTarget => ValidModel with { TargetBitsPerWeight = 2.5 },
        CelRules.GptqNeedsCalibration => ValidModel with { Method = QuantizationMethod.Gptq },
        CelRules.GptqFormatBits => ValidModel with { Bits = 3, Formats = [ExportFormat.Lowbit, ExportFormat.Gptq] },
        CelRules.GgufFormatBits => ValidModel with { Bits = 4, Formats = [ExportFormat.Lowbit, ExportFormat.GgufQ80] },
        CelRules.QuantizeHeadNotGptq => ValidModel with { QuantizeHead = true, Formats = [ExportFormat.Lowbit, ExportFormat.Gptq] },
        CelRules.ExactlyOneModelSource => ValidModel with { Source = ValidModel.Source with { Url = "https://example.com/m" } },
        CelRules.NoParentPath => ValidModel with { Source = new ModelSource { Pvc = new PvcSource { ClaimName = "models", Path = "a/../b" } } },
        CelRules.ExactlyOneDataSource => ValidModel with { Calibration = new CalibrationSpec { Dataset = new DataSource() } },
        CelRules.ImageDigest => ValidModel with { Image = "ghcr.io/lowbit/engine:1.0" },
        _ => ValidModel,
    };

    private static FineTuneJobSpec BreakJob(string rule) => rule switch
    {
        CelRules.QloraNeedsQuantizedBase => ValidJob with { BaseModel = new ModelReference { Source = new ModelSource { Url = "https://example.com/m" } } },
        CelRules.FullHasNoLora => ValidJob with
        {
            Method = FineTuneMethod.Full,
            BaseModel = new ModelReference { Source = new ModelSource { Url = "https://example.com/m" } },
            Lora = new LoraSpec(),
        },
        CelRules.ExactlyOneModel => ValidJob with { BaseModel = ValidJob.BaseModel with { Source = new ModelSource { Url = "https://example.com/m" } } },
        CelRules.ExactlyOneDataSource => ValidJob with { Dataset = ValidJob.Dataset with { Source = new DataSource { Url = "https://example.com/a", ConfigMap = new ConfigMapKeyRef { Name = "c", Key = "k" } } } },
        CelRules.NoParentPath => ValidJob with { Output = new OutputSpec { Pvc = new PvcSource { ClaimName = "models", Path = "../x" } } },
        _ => ValidJob,
    };

    private static InferenceEndpointSpec BreakEndpoint(string rule) => rule switch
    {
        CelRules.LlamacppNoAdapters => ValidEndpoint with
        {
            Runtime = ServingRuntime.LlamaCpp,
            Adapters = [new AdapterSpec { Name = "a", FineTuneJobRef = new ObjectRef { Name = "j" } }],
        },
        CelRules.MinNotAboveMax => ValidEndpoint with { Autoscaling = new AutoscalingSpec { MinReplicas = 3, MaxReplicas = 2 } },
        CelRules.ExactlyOneModel => ValidEndpoint with { Model = new ModelReference() },
        CelRules.ImageDigest => ValidEndpoint with { Image = "vllm/vllm-openai:latest" },
        _ => ValidEndpoint,
    };

    [Fact]
    public void Does_accept_the_valid_specs()
    {
        Assert.Empty(QuantizedModelSpecValidator.Validate(ValidModel));
        Assert.Empty(FineTuneJobSpecValidator.Validate(ValidJob));
        Assert.Empty(InferenceEndpointSpecValidator.Validate(ValidEndpoint));
        Assert.Empty(InferenceEndpointSpecValidator.Validate(ValidEndpoint with { Image = "ghcr.io/lowbit/engine@sha256:" + new string('a', 64) }));
    }

    /// <summary>A 4-bit HQQ QuantizedModel manifest with <paramref name="specFields"/> (YAML lines) added to its spec.</summary>
    private static JsonObject ModelManifest(params string[] specFields) => Yaml.ParseObject($$"""
        apiVersion: lowbit.dev/v1alpha1
        kind: QuantizedModel
        metadata: {name: m}
        spec:
          source:
            huggingFace: {repo: "meta-llama/Llama-2-7b-hf"}
          method: hqq
          bits: 4
          output:
            pvc: {claimName: models}
          {{string.Join("\n  ", specFields)}}
        """);

    [Theory]
    [InlineData("[lowbit]")]
    [InlineData("[gguf-q4_k]")]
    [InlineData("[lowbit, gguf-q4_0]")]
    public void Does_admit_quantize_head_with_lowbit_and_gguf_formats(string formats)
    {
        var manifest = ModelManifest("quantizeHead: true", $"formats: {formats}");

        Assert.Empty(ManifestChecks.Admit(manifest));
        Assert.True((bool?)manifest["spec"]!["quantizeHead"]);
    }

    [Theory]
    [InlineData("[gptq]")]
    [InlineData("[lowbit, gptq]")]
    public void Does_reject_quantize_head_with_the_gptq_format_naming_the_field(string formats)
    {
        var error = Assert.Single(ManifestChecks.Admit(ModelManifest("quantizeHead: true", $"formats: {formats}")));

        Assert.Equal("spec.quantizeHead", error.Field);
        Assert.Contains(CelRules.QuantizeHeadNotGptqMessage, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("[lowbit]")]
    [InlineData("[gptq]")]
    public void Does_admit_a_model_written_before_quantize_head_existed_and_default_it_to_false(string formats)
    {
        var manifest = ModelManifest($"formats: {formats}");

        Assert.Empty(ManifestChecks.Admit(manifest));
        Assert.False((bool?)manifest["spec"]!["quantizeHead"]);
        Assert.False(k8s.KubernetesJson.Deserialize<QuantizedModel>(manifest.ToJsonString()).Spec.QuantizeHead);
    }

    [Fact]
    public void Does_report_every_broken_rule_at_once()
    {
        var spec = ValidModel with { Method = QuantizationMethod.Gptq, Bits = null, Image = "x:latest" };
        var fields = QuantizedModelSpecValidator.Validate(spec).Select(e => e.Field).Order(StringComparer.Ordinal);
        Assert.Equal(["spec.bits", "spec.calibration", "spec.image"], fields);
    }

    [Fact]
    public void Does_reject_changing_an_immutable_source_on_update()
    {
        var changed = ValidModel with { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "meta-llama/Llama-2-13b-hf" } } };
        var error = Assert.Single(QuantizedModelSpecValidator.ValidateUpdate(ValidModel, changed));
        Assert.Equal("spec.source", error.Field);
        Assert.Contains(CelRules.SourceImmutableMessage, error.Message, StringComparison.Ordinal);
        Assert.Empty(QuantizedModelSpecValidator.ValidateUpdate(ValidModel, ValidModel with { GroupSize = 128 }));

        var rebased = ValidJob with { BaseModel = new ModelReference { QuantizedModelRef = new ObjectRef { Name = "other" } } };
        Assert.Equal("spec.baseModel", Assert.Single(FineTuneJobSpecValidator.ValidateUpdate(ValidJob, rebased)).Field);
    }

    [Fact]
    public void Does_mirror_transition_rules_on_json_updates()
    {
        var oldObj = JsonNode.Parse(k8s.KubernetesJson.Serialize(new QuantizedModel { Metadata = new() { Name = "m" }, Spec = ValidModel }))!.AsObject();
        var newObj = JsonNode.Parse(k8s.KubernetesJson.Serialize(new QuantizedModel { Metadata = new() { Name = "m" }, Spec = ValidModel with { Source = new ModelSource { Url = "https://example.com/m" } } }))!.AsObject();
        Assert.Equal("spec.source", Assert.Single(CelMirror.ValidateUpdate(oldObj, newObj)).Field);
        Assert.Empty(CelMirror.ValidateUpdate(oldObj, oldObj));
    }

    [Fact]
    public void Does_ignore_objects_of_other_kinds()
    {
        Assert.Empty(CelMirror.Validate(new JsonObject { ["apiVersion"] = "v1", ["kind"] = "ConfigMap" }));
    }

    [Fact]
    public void Does_validate_typed_resources_structurally_and_by_rule()
    {
        var model = new QuantizedModel
        {
            Metadata = new V1ObjectMeta { Name = "m" },
            Spec = ValidModel with { Bits = 5, Calibration = null, Method = QuantizationMethod.Gptq },
        };
        var errors = ResourceValidator.Validate(model);
        Assert.Contains(errors, e => e.Field == "spec.bits" && e.Reason == SchemaErrorReasons.NotSupported);
        Assert.Contains(errors, e => e.Field == "spec.calibration" && e.Reason == SchemaErrorReasons.Required);
        Assert.Contains("spec.bits: Unsupported value: 5", ResourceValidator.Describe(errors), StringComparison.Ordinal);
    }

    [Fact]
    public void Does_validate_status_written_by_the_operator()
    {
        var model = new QuantizedModel
        {
            Metadata = new V1ObjectMeta { Name = "m" },
            Spec = ValidModel,
            Status = new QuantizedModelStatus
            {
                Conditions = [Conditions.Ready("done", 1, DateTimeOffset.UnixEpoch), new V1Condition { Type = "Ready", Status = "Maybe", Reason = "bad reason", Message = "" }],
            },
        };
        var errors = ResourceValidator.Validate(model);
        Assert.Contains(errors, e => e.Field == "status.conditions[1]" && e.Reason == SchemaErrorReasons.Duplicate);
        Assert.Contains(errors, e => e.Field == "status.conditions[1].status" && e.Reason == SchemaErrorReasons.NotSupported);
        Assert.Contains(errors, e => e.Field == "status.conditions[1].reason" && e.Reason == SchemaErrorReasons.Invalid);
    }
}
