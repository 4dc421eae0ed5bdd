using Lowbit.Engine.Protocol;
using k8s;
using k8s.Models;
using Lowbit.Api.Generation;

namespace Lowbit.Api.V1Alpha1;

/// <summary>An OpenAI-compatible endpoint serving a model and its adapters.</summary>
[KubernetesEntity(Group = ApiGroup.Group, ApiVersion = ApiGroup.Version, Kind = KindName, PluralName = Plural)]
[ResourceNames("ie", ScaleSpecReplicasPath = ".spec.replicas", ScaleStatusReplicasPath = ".status.replicas", ScaleLabelSelectorPath = ".status.selector")]
[Description("InferenceEndpoint serves a model (and LoRA adapters) behind an OpenAI-compatible API on the cheapest GPU placement that meets its SLO and budget.")]
[CelRule(CelRules.NameLength, CelRules.NameLengthMessage)]
[PrinterColumn("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status")]
[PrinterColumn("Phase", "string", ".status.phase")]
[PrinterColumn("Replicas", "integer", ".status.readyReplicas")]
[PrinterColumn("GPU", "string", ".status.plan.gpuModel")]
[PrinterColumn("Shards", "integer", ".status.plan.shards")]
[PrinterColumn("Group", "string", ".status.group.kind", Priority = 1)]
[PrinterColumn("Pods/Replica", "integer", ".status.group.size", Priority = 1)]
[PrinterColumn("USD/h", "number", ".status.cost.hourlyUsd")]
[PrinterColumn("URL", "string", ".status.url", Priority = 1)]
[PrinterColumn("Age", "date", ".metadata.creationTimestamp")]
public sealed class InferenceEndpoint : IKubernetesObject<V1ObjectMeta>, ISpec<InferenceEndpointSpec>, IStatus<InferenceEndpointStatus?>
{
    public const string KindName = "InferenceEndpoint";
    public const string Plural = "inferenceendpoints";

    public string ApiVersion { get; set; } = ApiGroup.ApiVersion;
    public string Kind { get; set; } = KindName;
    public V1ObjectMeta Metadata { get; set; } = new();

    [Description("The desired endpoint.")]
    [Required]
    public InferenceEndpointSpec Spec { get; set; } = new();

    [Description("What the operator observed and produced; written only by the operator.")]
    public InferenceEndpointStatus? Status { get; set; }
}

/// <summary>The desired endpoint.</summary>
[CelRule(CelRules.LlamacppNoAdapters, CelRules.LlamacppNoAdaptersMessage, FieldPath = ".adapters", Reason = "FieldValueForbidden")]
public sealed record InferenceEndpointSpec
{
    [Description("The model to serve: a QuantizedModel or a source.")]
    [Required]
    public ModelReference Model { get; init; } = new();

    [Description("LoRA adapters from FineTuneJobs, each served under its own model name.")]
    [MaxItems(16)]
    [ListMapKeys("name")]
    public IReadOnlyList<AdapterSpec>? Adapters { get; init; }

    [Description("Serving runtime.")]
    [Default("lowbit")]
    [Enum("lowbit", "vllm", "llamacpp")] // ServingRuntime.Transformers is the planner's reference, not a runtime to deploy
    public ServingRuntime Runtime { get; init; } = ServingRuntime.Lowbit;

    [Description("Desired replicas (the scale subresource; an autoscaler may change it within the autoscaling bounds).")]
    [Minimum(0)]
    [Maximum(64)]
    [Default(1)]
    public int Replicas { get; init; } = 1;

    [Description("Bounds for autoscalers driving the scale subresource.")]
    public AutoscalingSpec? Autoscaling { get; init; }

    [Description("Longest prompt plus completion in tokens.")]
    [Minimum(128)]
    [Maximum(1048576)]
    [Default(4096)]
    public int MaxContextLength { get; init; } = 4096;

    [Description("Concurrent sequences per replica (sizes the KV cache).")]
    [Minimum(1)]
    [Maximum(1024)]
    [Default(8)]
    public int MaxConcurrency { get; init; } = 8;

    [Description("Service-level objectives the planner must meet.")]
    public SloSpec? Slo { get; init; }

    [Description("Cost limits for the placement.")]
    public BudgetSpec? Budget { get; init; }

    [Description("CPU and host-memory hints for the serving pods.")]
    public ResourceHints? Resources { get; init; }

    [Description("Placement constraints and the unschedulable timeout.")]
    [DefaultJson("{}")]
    public SchedulingSpec Scheduling { get; init; } = new();

    [Description("Runtime image override, pinned by digest.")]
    [MaxLength(512)]
    [Pattern(Patterns.Image)]
    [CelRule(CelRules.ImageDigest, CelRules.ImageDigestMessage)]
    public string? Image { get; init; }
}

/// <summary>A LoRA adapter to serve.</summary>
public sealed record AdapterSpec
{
    [Description("Model name clients pass in requests for this adapter.")]
    [Required]
    [MaxLength(63)]
    [Pattern(Patterns.Dns1123Label)]
    public string Name { get; init; } = "";

    [Description("The FineTuneJob whose adapter is served (it must be Ready).")]
    [Required]
    public ObjectRef FineTuneJobRef { get; init; } = new();
}

/// <summary>Autoscaling bounds.</summary>
[CelRule(CelRules.MinNotAboveMax, CelRules.MinNotAboveMaxMessage, FieldPath = ".minReplicas")]
public sealed record AutoscalingSpec
{
    [Description("Fewest replicas an autoscaler may set.")]
    [Minimum(0)]
    [Maximum(64)]
    [Default(1)]
    public int MinReplicas { get; init; } = 1;

    [Description("Most replicas an autoscaler may set.")]
    [Required]
    [Minimum(1)]
    [Maximum(64)]
    public int MaxReplicas { get; init; } = 1;
}

/// <summary>Latency and throughput targets.</summary>
public sealed record SloSpec
{
    [Description("Upper bound on time to first token, seconds.")]
    [Minimum(0, exclusive: true)]
    [Maximum(600)]
    public double? MaxTimeToFirstTokenSeconds { get; init; }

    [Description("Lower bound on decode tokens per second per sequence.")]
    [Minimum(0)]
    [Maximum(100000)]
    public double? MinTokensPerSecond { get; init; }
}

/// <summary>Cost limits.</summary>
public sealed record BudgetSpec
{
    [Description("Most USD per hour for all replicas at catalog prices.")]
    [Minimum(0)]
    [Maximum(100000)]
    public double? MaxHourlyCostUsd { get; init; }

    [Description("GPU types the planner may choose (catalog names); all when empty.")]
    [MaxItems(16)]
    [Items(63, Patterns.GpuType)]
    [ListSet]
    public IReadOnlyList<string>? AllowedGpuTypes { get; init; }
}

/// <summary>What the operator observed and produced.</summary>
public sealed record InferenceEndpointStatus
{
    [Description("The metadata.generation this status describes.")]
    public long? ObservedGeneration { get; init; }

    [Description("Ready, Reconciling, Stalled, Planned, Available (Kubernetes condition convention).")]
    [MaxItems(16)]
    [ListMapKeys("type")]
    public IReadOnlyList<V1Condition>? Conditions { get; init; }

    [Description("Summary for printer columns only; use conditions in automation.")]
    [MaxLength(32)]
    public string? Phase { get; init; }

    public PlanStatus? Plan { get; init; }

    [Description("Base URL of the OpenAI-compatible API inside the cluster.")]
    [MaxLength(2048)]
    public string? Url { get; init; }

    [Description("Serving pods (the scale subresource's status replicas).")]
    [Minimum(0)]
    public int? Replicas { get; init; }

    [Description("Serving pods that pass readiness.")]
    [Minimum(0)]
    public int? ReadyReplicas { get; init; }

    [Description("Label selector of the serving pods (for the scale subresource).")]
    [MaxLength(1024)]
    public string? Selector { get; init; }

    public CostStatus? Cost { get; init; }

    public TimingsStatus? Timings { get; init; }

    public ServingGroupStatus? Group { get; init; }
}

/// <summary>The workload that serves the endpoint: a Deployment (one pod per replica) or a LeaderWorkerSet (a group of pods per replica, one per node).</summary>
[Description("The workload serving the endpoint: a Deployment (one pod per replica) or, for a placement over several nodes, a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1) whose groups of one leader and size-1 workers are the replicas.")]
public sealed record ServingGroupStatus
{
    [Description("Kind of the serving workload: Deployment or LeaderWorkerSet.")]
    [Enum("Deployment", "LeaderWorkerSet")]
    public string? Kind { get; init; }

    [Description("Name of the serving workload (in the endpoint's namespace).")]
    [MaxLength(253)]
    public string? Name { get; init; }

    [Description("Pods per replica: 1 for a Deployment, the nodes of one group for a LeaderWorkerSet.")]
    [Minimum(0)]
    public int Size { get; init; }

    [Description("Replicas (groups) whose pods are all ready, as the workload reports them.")]
    [Minimum(0)]
    public int ReadyReplicas { get; init; }
}
