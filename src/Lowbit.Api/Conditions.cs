using k8s.Models;

namespace Lowbit.Api;

/// <summary>
/// Condition types, reasons and named constructors (Kubernetes API conventions, kstatus-compatible):
/// positive polarity plus the abnormal-true <c>Reconciling</c> and <c>Stalled</c>, and a <c>Ready</c> summary on every kind.
/// </summary>
public static class Conditions
{
    public static class Types
    {
        /// <summary>The summary: True when the resource does what it declares.</summary>
        public const string Ready = "Ready";
        /// <summary>kstatus InProgress: work toward the spec is under way.</summary>
        public const string Reconciling = "Reconciling";
        /// <summary>kstatus Failed: no progress without a change (bad spec, no placement, repeated failure).</summary>
        public const string Stalled = "Stalled";
        /// <summary>A placement was chosen.</summary>
        public const string Planned = "Planned";
        /// <summary>QuantizedModel: the artifacts exist.</summary>
        public const string Quantized = "Quantized";
        /// <summary>FineTuneJob: the adapter exists.</summary>
        public const string Trained = "Trained";
        /// <summary>InferenceEndpoint: at least one replica answers.</summary>
        public const string Available = "Available";
    }

    public static class Reasons
    {
        public const string Succeeded = "Succeeded";
        public const string Progressing = "Progressing";
        public const string Pending = "Pending";
        public const string Planned = "Planned";
        public const string Running = "Running";
        public const string Available = "Available";
        public const string InvalidSpec = "InvalidSpec";
        public const string InsufficientGpuMemory = "InsufficientGpuMemory";
        public const string OverBudget = "OverBudget";
        public const string WaitingForGpu = "WaitingForGpu";
        public const string Unschedulable = "Unschedulable";
        public const string OOMKilled = "OOMKilled";
        public const string ImagePullFailed = "ImagePullFailed";
        public const string SecretNotFound = "SecretNotFound";
        public const string WaitingForDependency = "WaitingForDependency";
        public const string Failed = "Failed";
        public const string Unknown = "Unknown";
    }

    public const string True = "True";
    public const string False = "False";
    public const string UnknownStatus = "Unknown";

    /// <summary>A condition; <paramref name="now"/> comes from an injected <see cref="TimeProvider"/>.</summary>
    public static V1Condition Create(string type, string status, string reason, string message, long? generation, DateTimeOffset now) => new()
    {
        Type = type,
        Status = status,
        Reason = reason,
        Message = message,
        ObservedGeneration = generation,
        LastTransitionTime = now.UtcDateTime,
    };

    public static V1Condition Ready(string message, long? generation, DateTimeOffset now) =>
        Create(Types.Ready, True, Reasons.Succeeded, message, generation, now);

    public static V1Condition NotReady(string reason, string message, long? generation, DateTimeOffset now) =>
        Create(Types.Ready, False, reason, message, generation, now);

    public static V1Condition ReadyUnknown(string reason, string message, long? generation, DateTimeOffset now) =>
        Create(Types.Ready, UnknownStatus, reason, message, generation, now);

    public static V1Condition Reconciling(string reason, string message, long? generation, DateTimeOffset now) =>
        Create(Types.Reconciling, True, reason, message, generation, now);

    public static V1Condition NotReconciling(string reason, string message, long? generation, DateTimeOffset now) =>
        Create(Types.Reconciling, False, reason, message, generation, now);

    public static V1Condition Stalled(string reason, string message, long? generation, DateTimeOffset now) =>
        Create(Types.Stalled, True, reason, message, generation, now);

    public static V1Condition NotStalled(long? generation, DateTimeOffset now) =>
        Create(Types.Stalled, False, Reasons.Progressing, "", generation, now);

    public static V1Condition Planned(string message, long? generation, DateTimeOffset now) =>
        Create(Types.Planned, True, Reasons.Planned, message, generation, now);

    public static V1Condition NotPlanned(string reason, string message, long? generation, DateTimeOffset now) =>
        Create(Types.Planned, False, reason, message, generation, now);

    public static V1Condition Quantized(string message, long? generation, DateTimeOffset now) =>
        Create(Types.Quantized, True, Reasons.Succeeded, message, generation, now);

    public static V1Condition Trained(string message, long? generation, DateTimeOffset now) =>
        Create(Types.Trained, True, Reasons.Succeeded, message, generation, now);

    public static V1Condition Available(string message, long? generation, DateTimeOffset now) =>
        Create(Types.Available, True, Reasons.Available, message, generation, now);

    public static V1Condition Unavailable(string reason, string message, long? generation, DateTimeOffset now) =>
        Create(Types.Available, False, reason, message, generation, now);

    /// <summary>The spec failed validation: Stalled=True and Ready=False, both with reason InvalidSpec.</summary>
    public static IReadOnlyList<V1Condition> InvalidSpec(string message, long? generation, DateTimeOffset now) =>
    [
        NotReady(Reasons.InvalidSpec, message, generation, now),
        Stalled(Reasons.InvalidSpec, message, generation, now),
        NotReconciling(Reasons.InvalidSpec, message, generation, now),
    ];

    /// <summary>The condition of a type, or null.</summary>
    public static V1Condition? Find(IEnumerable<V1Condition>? conditions, string type) =>
        conditions?.FirstOrDefault(c => c.Type == type);

    /// <summary>True when the condition of <paramref name="type"/> has status True.</summary>
    public static bool IsTrue(IEnumerable<V1Condition>? conditions, string type) => Find(conditions, type)?.Status == True;

    /// <summary>
    /// Sets a condition in a list (list-map semantics keyed by type). <c>lastTransitionTime</c> changes only when
    /// the status flips; an unchanged condition keeps its old timestamp so that status writes stay idempotent.
    /// </summary>
    public static IReadOnlyList<V1Condition> Set(IEnumerable<V1Condition>? conditions, V1Condition condition)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var list = conditions?.ToList() ?? [];
        var index = list.FindIndex(c => c.Type == condition.Type);
        if (index < 0)
        {
            list.Add(condition);
            return list;
        }

        var existing = list[index];
        list[index] = new V1Condition
        {
            Type = condition.Type,
            Status = condition.Status,
            Reason = condition.Reason,
            Message = condition.Message,
            ObservedGeneration = condition.ObservedGeneration,
            LastTransitionTime = existing.Status == condition.Status ? existing.LastTransitionTime : condition.LastTransitionTime,
        };
        return list;
    }
}
