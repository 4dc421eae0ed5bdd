using k8s;
using k8s.Models;
using Lowbit.Api.Generation;

namespace Lowbit.Api.V1Alpha1;

/// <summary>A (Q)LoRA or full fine-tune run by the engine's <c>finetune</c> verb.</summary>
[KubernetesEntity(Group = ApiGroup.Group, ApiVersion = ApiGroup.Version, Kind = KindName, PluralName = Plural)]
[ResourceNames("ftj")]
[Description("FineTuneJob trains LoRA adapters on a QuantizedModel (QLoRA) or on unquantized weights (LoRA, full) and writes a PEFT-compatible adapter.")]
[CelRule(CelRules.NameLength, CelRules.NameLengthMessage)]
[PrinterColumn("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status")]
[PrinterColumn("Phase", "string", ".status.phase")]
[PrinterColumn("Method", "string", ".spec.method")]
[PrinterColumn("GPU", "string", ".status.plan.gpuModel")]
[PrinterColumn("Shards", "integer", ".status.plan.shards")]
[PrinterColumn("USD/h", "number", ".status.plan.hourlyUsd")]
[PrinterColumn("Step", "integer", ".status.progress.step", Priority = 1)]
[PrinterColumn("Loss", "number", ".status.progress.loss", Priority = 1)]
[PrinterColumn("Age", "date", ".metadata.creationTimestamp")]
public sealed class FineTuneJob : IKubernetesObject<V1ObjectMeta>, ISpec<FineTuneJobSpec>, IStatus<FineTuneJobStatus?>
{
    public const string KindName = "FineTuneJob";
    public const string Plural = "finetunejobs";

    public string ApiVersion { get; set; } = ApiGroup.ApiVersion;
    public string Kind { get; set; } = KindName;
    public V1ObjectMeta Metadata { get; set; } = new();

    [Description("The desired fine-tune.")]
    [Required]
    public FineTuneJobSpec Spec { get; set; } = new();

    [Description("What the operator observed and produced; written only by the operator.")]
    public FineTuneJobStatus? Status { get; set; }
}

/// <summary>The desired fine-tune.</summary>
[CelRule(CelRules.QloraNeedsQuantizedBase, CelRules.QloraNeedsQuantizedBaseMessage, FieldPath = ".baseModel")]
[CelRule(CelRules.FullHasNoLora, CelRules.FullHasNoLoraMessage, FieldPath = ".lora", Reason = "FieldValueForbidden")]
public sealed record FineTuneJobSpec
{
    [Description("The base model: a QuantizedModel (QLoRA) or a source (LoRA, full). Immutable.")]
    [Required]
    [CelRule(CelRules.Immutable, CelRules.BaseModelImmutableMessage)]
    public ModelReference BaseModel { get; init; } = new();

    [Description("lora (16-bit frozen base), qlora (4-bit frozen base) or full.")]
    [Required]
    public FineTuneMethod Method { get; init; } = FineTuneMethod.Lora;

    [Description("LoRA hyper-parameters (lora and qlora).")]
    public LoraSpec? Lora { get; init; }

    [Description("Training data.")]
    [Required]
    public DatasetSpec Dataset { get; init; } = new();

    [Description("Training hyper-parameters.")]
    [DefaultJson("{}")]
    public TrainingSpec Training { get; init; } = new();

    [Description("Where the adapter (or full weights) and checkpoints are written.")]
    [Required]
    public OutputSpec Output { get; init; } = new();

    [Description("CPU and host-memory hints for the training pod.")]
    public ResourceHints? Resources { get; init; }

    [Description("Placement constraints and the unschedulable timeout.")]
    [DefaultJson("{}")]
    public SchedulingSpec Scheduling { get; init; } = new();

    [Description("Engine image override, pinned by digest.")]
    [MaxLength(512)]
    [Pattern(Patterns.Image)]
    [CelRule(CelRules.ImageDigest, CelRules.ImageDigestMessage)]
    public string? Image { get; init; }

    [Description("Seconds the training Job may run before Kubernetes stops it (the Job's activeDeadlineSeconds). Default: the plan's time estimate (download, load, compute) times the operator's margin, at least its minimum.")]
    [Minimum(60)]
    public long? ActiveDeadlineSeconds { get; init; }
}

/// <summary>LoRA adapter shape.</summary>
public sealed record LoraSpec
{
    [Description("Rank of the low-rank update.")]
    [Minimum(1)]
    [Maximum(1024)]
    [Default(16)]
    public int R { get; init; } = 16;

    [Description("Scaling numerator (the update is scaled by alpha / r).")]
    [Minimum(0, exclusive: true)]
    [Maximum(4096)]
    [Default(32)]
    public double Alpha { get; init; } = 32;

    [Description("Dropout on the adapter input.")]
    [Minimum(0)]
    [Maximum(0.9)]
    [Default(0.05)]
    public double Dropout { get; init; } = 0.05;

    [Description("Linear modules that get adapters (Llama-family names).")]
    [MinItems(1)]
    [MaxItems(7)]
    [Items(16)]
    [Enum("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")]
    [ListSet]
    [DefaultJson("[\"q_proj\",\"v_proj\"]")]
    public IReadOnlyList<string> TargetModules { get; init; } = ["q_proj", "v_proj"];
}

/// <summary>Training data and its layout.</summary>
public sealed record DatasetSpec
{
    [Description("Where the JSONL data is.")]
    [Required]
    public DataSource Source { get; init; } = new();

    [Description("Line layout: alpaca {instruction,input,output}, chat {messages:[{role,content}]} or text {text}.")]
    [Required]
    public DatasetFormat Format { get; init; } = DatasetFormat.Alpaca;
}

/// <summary>Optimizer and schedule.</summary>
public sealed record TrainingSpec
{
    [Description("Passes over the dataset (ignored when maxSteps is set).")]
    [Minimum(1)]
    [Maximum(1000)]
    [Default(1)]
    public int Epochs { get; init; } = 1;

    [Description("Stop after this many optimizer steps.")]
    [Minimum(1)]
    [Maximum(10000000)]
    public int? MaxSteps { get; init; }

    [Description("Peak learning rate (AdamW).")]
    [Minimum(0, exclusive: true)]
    [Maximum(1)]
    [Default(0.0002)]
    public double LearningRate { get; init; } = 0.0002;

    [Description("Sequences per forward pass.")]
    [Minimum(1)]
    [Maximum(1024)]
    [Default(1)]
    public int MicroBatchSize { get; init; } = 1;

    [Description("Micro-batches accumulated per optimizer step.")]
    [Minimum(1)]
    [Maximum(1024)]
    [Default(8)]
    public int GradientAccumulation { get; init; } = 8;

    [Description("Tokens per training sequence (longer ones are truncated).")]
    [Minimum(16)]
    [Maximum(131072)]
    [Default(1024)]
    public int SequenceLength { get; init; } = 1024;

    [Description("Fraction of steps with linear learning-rate warm-up.")]
    [Minimum(0)]
    [Maximum(0.5)]
    [Default(0.03)]
    public double WarmupRatio { get; init; } = 0.03;

    [Description("Recompute activations in the backward pass to save memory.")]
    [Default(true)]
    public bool GradientCheckpointing { get; init; } = true;

    [Description("Write a checkpoint every this many steps; only at the end when unset.")]
    [Minimum(1)]
    [Maximum(10000000)]
    public int? SaveSteps { get; init; }

    [Description("Fraction of the dataset held out to measure loss and perplexity after training (status.evaluation); 0 disables it.")]
    [Minimum(0)]
    [Maximum(0.5)]
    [Default(0.05)]
    public double EvalSplit { get; init; } = 0.05;

    [Description("Random seed (data order, adapter initialization, dropout).")]
    [Minimum(0)]
    [Maximum(2147483647)]
    [Default(42)]
    public int Seed { get; init; } = 42;
}

/// <summary>What the operator observed and produced.</summary>
public sealed record FineTuneJobStatus
{
    [Description("The metadata.generation this status describes.")]
    public long? ObservedGeneration { get; init; }

    [Description("Ready, Reconciling, Stalled, Planned, Trained (Kubernetes condition convention).")]
    [MaxItems(16)]
    [ListMapKeys("type")]
    public IReadOnlyList<V1Condition>? Conditions { get; init; }

    [Description("Summary for printer columns only; use conditions in automation.")]
    [MaxLength(32)]
    public string? Phase { get; init; }

    public PlanStatus? Plan { get; init; }

    public ProgressStatus? Progress { get; init; }

    [Description("The trained adapter (format peft-lora) or full weights.")]
    public ArtifactStatus? Artifact { get; init; }

    [Description("Loss and perplexity on the held-out split (spec.training.evalSplit) after training.")]
    public TrainingEvaluationStatus? Evaluation { get; init; }

    [Description("Checkpoints written so far (most recent last).")]
    [MaxItems(64)]
    public IReadOnlyList<CheckpointStatus>? Checkpoints { get; init; }

    public TimingsStatus? Timings { get; init; }
}
