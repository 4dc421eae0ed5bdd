namespace Lowbit.Api;

/// <summary>Label and annotation keys on the operator's children, and the server-side-apply field manager.</summary>
public static class Labels
{
    /// <summary>The field manager of every server-side apply the operator makes.</summary>
    public const string FieldManager = "lowbit-operator";

    public const string Name = "app.kubernetes.io/name";
    public const string Instance = "app.kubernetes.io/instance";
    public const string Component = "app.kubernetes.io/component";
    public const string ManagedBy = "app.kubernetes.io/managed-by";
    public const string PartOf = "app.kubernetes.io/part-of";

    /// <summary>Value of <see cref="ManagedBy"/> on children.</summary>
    public const string ManagedByValue = "lowbit-operator";

    /// <summary>Value of <see cref="PartOf"/>.</summary>
    public const string PartOfValue = "lowbit";

    /// <summary>Owner labels: <c>lowbit.dev/quantizedmodel: &lt;name&gt;</c> etc.</summary>
    public const string QuantizedModel = ApiGroup.Group + "/quantizedmodel";
    public const string FineTuneJob = ApiGroup.Group + "/finetunejob";
    public const string InferenceEndpoint = ApiGroup.Group + "/inferenceendpoint";

    /// <summary>Annotation on children: hash of the owner spec they were built from.</summary>
    public const string SpecHashAnnotation = ApiGroup.Group + "/spec-hash";

    /// <summary>Annotation on children: index of the placement in the plan they run on.</summary>
    public const string PlacementAnnotation = ApiGroup.Group + "/placement";

    /// <summary>The finalizer, where cleanup outside owner references is needed.</summary>
    public const string Finalizer = ApiGroup.Group + "/cleanup";

    /// <summary>Component values (<see cref="Component"/>), also the child name suffix (<c>&lt;owner&gt;-&lt;role&gt;</c>).</summary>
    public static class Components
    {
        public const string Quantize = "quantize";
        public const string FineTune = "finetune";
        public const string Inference = "inference";
    }

    /// <summary>The name of a child: <c>&lt;owner&gt;-&lt;component&gt;</c> (owner names are at most 52 characters).</summary>
    public static string ChildName(string ownerName, string component) => $"{ownerName}-{component}";

    /// <summary>The owner label key of a kind (<c>lowbit.dev/&lt;kind&gt;</c>).</summary>
    public static string OwnerKey(string kind)
    {
        ArgumentException.ThrowIfNullOrEmpty(kind);
        return $"{ApiGroup.Group}/{kind.ToLowerInvariant()}";
    }

    /// <summary>
    /// The standard labels of a child of <paramref name="ownerName"/> (of <paramref name="ownerKind"/>).
    /// Argo CD tracking metadata is never copied (GitOps rule G3): only these keys are set.
    /// </summary>
    public static IReadOnlyDictionary<string, string> ForChild(string ownerKind, string ownerName, string component) =>
        new Dictionary<string, string>
        {
            [Name] = PartOfValue,
            [Instance] = ownerName,
            [Component] = component,
            [ManagedBy] = ManagedByValue,
            [PartOf] = PartOfValue,
            [OwnerKey(ownerKind)] = ownerName,
        };
}
