using System.Text.Json.Serialization;
using k8s.Models;
using Lowbit.Api.Generation;

namespace Lowbit.Api.V1Alpha1;

/// <summary>Where model weights come from: exactly one of <c>huggingFace</c>, <c>url</c>, <c>pvc</c>.</summary>
[Description("Where the model weights come from: exactly one of huggingFace, url or pvc.")]
[CelRule(CelRules.ExactlyOneModelSource, CelRules.ExactlyOneModelSourceMessage)]
public sealed record ModelSource
{
    [Description("A Hugging Face Hub repository.")]
    public HuggingFaceSource? HuggingFace { get; init; }

    [Description("An HTTP(S) or S3 URL of a directory or archive holding config.json and *.safetensors.")]
    [MaxLength(2048)]
    [Pattern(Patterns.Url)]
    public string? Url { get; init; }

    [Description("A path inside a PersistentVolumeClaim in the resource's namespace.")]
    public PvcSource? Pvc { get; init; }
}

/// <summary>A dataset (calibration or training data): exactly one of <c>huggingFace</c>, <c>url</c>, <c>pvc</c>, <c>configMap</c>.</summary>
[Description("Where a dataset comes from: exactly one of huggingFace, url, pvc or configMap.")]
[CelRule(CelRules.ExactlyOneDataSource, CelRules.ExactlyOneDataSourceMessage)]
public sealed record DataSource
{
    [Description("A Hugging Face Hub dataset repository.")]
    public HuggingFaceSource? HuggingFace { get; init; }

    [Description("An HTTP(S) or S3 URL of a JSONL file.")]
    [MaxLength(2048)]
    [Pattern(Patterns.Url)]
    public string? Url { get; init; }

    [Description("A JSONL file inside a PersistentVolumeClaim.")]
    public PvcSource? Pvc { get; init; }

    [Description("A key of a ConfigMap holding JSONL text (small datasets).")]
    public ConfigMapKeyRef? ConfigMap { get; init; }
}

/// <summary>A Hugging Face Hub repository at a revision, with an optional token Secret.</summary>
public sealed record HuggingFaceSource
{
    [Description("Repository id, e.g. meta-llama/Llama-2-7b-hf.")]
    [Required]
    [MaxLength(192)]
    [Pattern(Patterns.HuggingFaceRepo)]
    public string Repo { get; init; } = "";

    [Description("Branch, tag or commit SHA; pin a 40-character commit SHA for reproducible artifacts. Defaults to main at run time.")]
    [MaxLength(255)]
    [Pattern(Patterns.Revision)]
    public string? Revision { get; init; }

    [Description("The Secret key holding the Hub token. The operator never reads it; pods get it as the HF_TOKEN environment variable.")]
    public SecretKeyRef? TokenSecretRef { get; init; }
}

/// <summary>A key of a Secret in the resource's namespace.</summary>
public sealed record SecretKeyRef
{
    [Description("Secret name.")]
    [Required]
    [MaxLength(253)]
    [Pattern(Patterns.Dns1123Subdomain)]
    public string Name { get; init; } = "";

    [Description("Key inside the Secret.")]
    [MaxLength(253)]
    [Pattern(Patterns.DataKey)]
    [Default("token")]
    public string Key { get; init; } = "token";
}

/// <summary>A key of a ConfigMap in the resource's namespace.</summary>
public sealed record ConfigMapKeyRef
{
    [Description("ConfigMap name.")]
    [Required]
    [MaxLength(253)]
    [Pattern(Patterns.Dns1123Subdomain)]
    public string Name { get; init; } = "";

    [Description("Key inside the ConfigMap.")]
    [Required]
    [MaxLength(253)]
    [Pattern(Patterns.DataKey)]
    public string Key { get; init; } = "";
}

/// <summary>A path inside a PersistentVolumeClaim.</summary>
[CelRule(CelRules.NoParentPath, CelRules.NoParentPathMessage, FieldPath = ".path")]
public sealed record PvcSource
{
    [Description("PersistentVolumeClaim name.")]
    [Required]
    [MaxLength(253)]
    [Pattern(Patterns.Dns1123Subdomain)]
    public string ClaimName { get; init; } = "";

    [Description("Relative path inside the volume; the volume root when empty.")]
    [MaxLength(1024)]
    [Pattern(Patterns.RelativePath)]
    public string? Path { get; init; }
}

/// <summary>Where results are written.</summary>
public sealed record OutputSpec
{
    [Description("The PersistentVolumeClaim and directory that receive the artifacts.")]
    [Required]
    public PvcSource Pvc { get; init; } = new();
}

/// <summary>A reference to another Lowbit resource in the same namespace.</summary>
public sealed record ObjectRef
{
    [Description("Name of the referenced resource in the same namespace.")]
    [Required]
    [MaxLength(253)]
    [Pattern(Patterns.Dns1123Subdomain)]
    public string Name { get; init; } = "";
}

/// <summary>A model given either as a QuantizedModel in the namespace or as a source.</summary>
[Description("The model: exactly one of quantizedModelRef or source.")]
[CelRule(CelRules.ExactlyOneModel, CelRules.ExactlyOneModelMessage)]
public sealed record ModelReference
{
    [Description("A QuantizedModel in the same namespace; its artifact is used once it is Ready.")]
    public ObjectRef? QuantizedModelRef { get; init; }

    [Description("Unquantized weights from a source.")]
    public ModelSource? Source { get; init; }
}

/// <summary>Resource hints; the planner sizes GPU memory itself, these bound CPU and host memory.</summary>
public sealed record ResourceHints
{
    [Description("CPU request per pod (a quantity, e.g. 4 or 500m).")]
    public ResourceQuantity? Cpu { get; init; }

    [Description("Host memory request per pod (a quantity, e.g. 32Gi).")]
    public ResourceQuantity? Memory { get; init; }

    [Description("Ephemeral storage request per pod (a quantity, e.g. 50Gi).")]
    public ResourceQuantity? EphemeralStorage { get; init; }
}

/// <summary>Where and how long to wait for a placement.</summary>
public sealed record SchedulingSpec
{
    [Description("How long a pod may stay unschedulable before the next placement of the plan is tried (Go duration).")]
    [MaxLength(32)]
    [Pattern(Patterns.Duration)]
    [Default("10m")]
    public string Timeout { get; init; } = "10m";

    [Description("GPU types (catalog names, e.g. L4, A100-80GB, cpu) the planner may choose; all when empty.")]
    [MaxItems(16)]
    [Items(63, Patterns.GpuType)]
    [ListSet]
    public IReadOnlyList<string>? AllowedGpuTypes { get; init; }
}

/// <summary>Artifact formats a QuantizedModel can export (the engine's <c>quantize --format</c> values).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ExportFormat>))]
public enum ExportFormat
{
    /// <summary>Lowbit's packed safetensors layout, loadable by the lowbit runtime.</summary>
    [JsonStringEnumMemberName("lowbit")] Lowbit,
    /// <summary>AutoGPTQ-compatible safetensors (4 or 8 bits), loadable by vLLM.</summary>
    [JsonStringEnumMemberName("gptq")] Gptq,
    [JsonStringEnumMemberName("gguf-q8_0")] GgufQ80,
    [JsonStringEnumMemberName("gguf-q4_0")] GgufQ40,
    [JsonStringEnumMemberName("gguf-q4_k")] GgufQ4K,
}
