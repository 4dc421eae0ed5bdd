using Lowbit.Engine.Protocol;
using k8s;
using k8s.Models;
using Lowbit.Api.Generation;

namespace Lowbit.Api.V1Alpha1;

/// <summary>A model compressed to low-bit weights by the engine's <c>quantize</c> verb.</summary>
[KubernetesEntity(Group = ApiGroup.Group, ApiVersion = ApiGroup.Version, Kind = KindName, PluralName = Plural)]
[ResourceNames("qm")]
[Description("QuantizedModel compresses a model's weights to a few bits per weight (RTN, HQQ or GPTQ), exports them (lowbit, GPTQ-compatible safetensors, GGUF) and reports size and quality.")]
[CelRule(CelRules.NameLength, CelRules.NameLengthMessage)]
[PrinterColumn("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status")]
[PrinterColumn("Phase", "string", ".status.phase")]
[PrinterColumn("Method", "string", ".spec.method")]
[PrinterColumn("GPU", "string", ".status.plan.gpuModel")]
[PrinterColumn("Shards", "integer", ".status.plan.shards")]
[PrinterColumn("USD/h", "number", ".status.plan.hourlyUsd")]
[PrinterColumn("BPW", "number", ".status.artifact.bitsPerWeight", Priority = 1)]
[PrinterColumn("Age", "date", ".metadata.creationTimestamp")]
public sealed class QuantizedModel : IKubernetesObject<V1ObjectMeta>, ISpec<QuantizedModelSpec>, IStatus<QuantizedModelStatus?>
{
    public const string KindName = "QuantizedModel";
    public const string Plural = "quantizedmodels";

    public string ApiVersion { get; set; } = ApiGroup.ApiVersion;
    public string Kind { get; set; } = KindName;
    public V1ObjectMeta Metadata { get; set; } = new();

    [Description("The desired quantization.")]
    [Required]
    public QuantizedModelSpec Spec { get; set; } = new();

    [Description("What the operator observed and produced; written only by the operator.")]
    public QuantizedModelStatus? Status { get; set; }
}

/// <summary>The desired quantization.</summary>
[CelRule(CelRules.BitsXorTarget, CelRules.BitsXorTargetMessage, FieldPath = ".bits")]
[CelRule(CelRules.GptqFormatBits, CelRules.GptqFormatBitsMessage, FieldPath = ".formats")]
[CelRule(CelRules.GgufFormatBits, CelRules.GgufFormatBitsMessage, FieldPath = ".formats")]
[CelRule(CelRules.GptqNeedsCalibration, CelRules.GptqNeedsCalibrationMessage, FieldPath = ".calibration", Reason = "FieldValueRequired")]
[CelRule(CelRules.QuantizeHeadNotGptq, CelRules.QuantizeHeadNotGptqMessage, FieldPath = ".quantizeHead")]
public sealed record QuantizedModelSpec
{
    [Description("The unquantized model. Immutable.")]
    [Required]
    [CelRule(CelRules.Immutable, CelRules.SourceImmutableMessage)]
    public ModelSource Source { get; init; } = new();

    [Description("Quantization algorithm: rtn, hqq or gptq (awq is reserved for a later version).")]
    [Required]
    public QuantizationMethod Method { get; init; } = QuantizationMethod.Hqq;

    [Description("Uniform bits per weight. Exactly one of bits or targetBitsPerWeight.")]
    [Enum(2, 3, 4, 8)]
    public int? Bits { get; init; }

    [Description("Mixed precision: the average bits per weight to reach (e.g. 2.5 mixes 2- and 4-bit layers). Exactly one of bits or targetBitsPerWeight.")]
    [Minimum(1.5)]
    [Maximum(8)]
    public double? TargetBitsPerWeight { get; init; }

    [Description("Weights per quantization group sharing one scale and zero point; -1 means one group per output channel.")]
    [Enum(-1, 32, 64, 128, 256)]
    [Default(64)]
    public int GroupSize { get; init; } = 64;

    [Description("Quantize lm_head too, with the same method, bits and group size (the embeddings stay dense). Lowbit artifacts then serve with an int4 head GEMV: the decode step's head reads a quarter of the bytes, +2-4 % int4 batch-1 tokens/s for a 7B at group size 64 and +7-8 % at 128 on an H100. It costs quality: the head is the most sensitive layer at 4 bits (llama.cpp's Q4_K_M keeps it at 6 bits). GGUF formats encode their own head and ignore it; it cannot be combined with the gptq format, whose readers expect a dense head. Models with tied embeddings have no separate head and fail with an input error.")]
    [Default(false)]
    public bool QuantizeHead { get; init; }

    [Description("Calibration data; required for gptq.")]
    public CalibrationSpec? Calibration { get; init; }

    [Description("Held-out text whose perplexity the engine measures before and after quantization (status.quality).")]
    public EvaluationSpec? Evaluation { get; init; }

    [Description("Artifact formats to export: lowbit (lowbit runtime), gptq (vLLM; bits 4 or 8), gguf-q8_0, gguf-q4_0, gguf-q4_k (llama.cpp).")]
    [MinItems(1)]
    [MaxItems(6)]
    [ListSet]
    [DefaultJson("[\"lowbit\"]")]
    public IReadOnlyList<ExportFormat> Formats { get; init; } = [ExportFormat.Lowbit];

    [Description("Where the artifacts are written.")]
    [Required]
    public OutputSpec Output { get; init; } = new();

    [Description("CPU and host-memory hints for the quantization pod.")]
    public ResourceHints? Resources { get; init; }

    [Description("Placement constraints and the unschedulable timeout.")]
    [DefaultJson("{}")]
    public SchedulingSpec Scheduling { get; init; } = new();

    [Description("Engine image override, pinned by digest.")]
    [MaxLength(512)]
    [Pattern(Patterns.Image)]
    [CelRule(CelRules.ImageDigest, CelRules.ImageDigestMessage)]
    public string? Image { get; init; }

    [Description("Seconds the quantize Job may run before Kubernetes stops it (the Job's activeDeadlineSeconds). Default: the plan's time estimate (download, load, compute) times the operator's margin, at least its minimum.")]
    [Minimum(60)]
    public long? ActiveDeadlineSeconds { get; init; }
}

/// <summary>Calibration samples for GPTQ.</summary>
public sealed record CalibrationSpec
{
    [Description("Text used to calibrate (JSONL with a text field, or a Hub dataset).")]
    [Required]
    public DataSource Dataset { get; init; } = new();

    [Description("Number of calibration sequences.")]
    [Minimum(1)]
    [Maximum(4096)]
    [Default(128)]
    public int Samples { get; init; } = 128;

    [Description("Tokens per calibration sequence.")]
    [Minimum(32)]
    [Maximum(32768)]
    [Default(2048)]
    public int SequenceLength { get; init; } = 2048;
}

/// <summary>The held-out text of a quantization's perplexity check.</summary>
public sealed record EvaluationSpec
{
    [Description("A plain-text file: a pvc path or a configMap key (url and huggingFace are not read for evaluation).")]
    [Required]
    public DataSource Text { get; init; } = new();
}

/// <summary>What the operator observed and produced.</summary>
public sealed record QuantizedModelStatus
{
    [Description("The metadata.generation this status describes.")]
    public long? ObservedGeneration { get; init; }

    [Description("Ready, Reconciling, Stalled, Planned, Quantized (Kubernetes condition convention).")]
    [MaxItems(16)]
    [ListMapKeys("type")]
    public IReadOnlyList<V1Condition>? Conditions { get; init; }

    [Description("Summary for printer columns only (Pending, Planning, Running, Succeeded, Failed); use conditions in automation.")]
    [MaxLength(32)]
    public string? Phase { get; init; }

    public PlanStatus? Plan { get; init; }

    [Description("The primary artifact (the first format).")]
    public ArtifactStatus? Artifact { get; init; }

    [Description("Every exported artifact, one per format.")]
    [MaxItems(8)]
    public IReadOnlyList<ArtifactStatus>? Exports { get; init; }

    public QualityStatus? Quality { get; init; }

    public TimingsStatus? Timings { get; init; }
}
