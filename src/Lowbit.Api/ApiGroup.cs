namespace Lowbit.Api;

/// <summary>The API group and version of the Lowbit custom resources.</summary>
public static class ApiGroup
{
    public const string Group = "lowbit.dev";
    public const string Version = "v1alpha1";
    public const string ApiVersion = Group + "/" + Version;
    public const string Category = "lowbit";
}

/// <summary>Regular expressions shared by the schemas and the spec validators.</summary>
public static class Patterns
{
    /// <summary>A DNS-1123 subdomain: object names (PVCs, Secrets, resources).</summary>
    public const string Dns1123Subdomain = @"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    /// <summary>A DNS-1123 label (adapter names, which become served model ids).</summary>
    public const string Dns1123Label = @"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
    /// <summary>A Hugging Face repository id: <c>owner/name</c> or <c>name</c>.</summary>
    public const string HuggingFaceRepo = @"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$";
    /// <summary>A git revision: a branch, tag or commit SHA.</summary>
    public const string Revision = @"^[A-Za-z0-9][A-Za-z0-9._/-]*$";
    /// <summary>A Secret or ConfigMap data key.</summary>
    public const string DataKey = @"^[-._a-zA-Z0-9]+$";
    /// <summary>An HTTP(S) or S3 URL.</summary>
    public const string Url = @"^(https?|s3)://[^\s]+$";
    /// <summary>A relative path inside a volume.</summary>
    public const string RelativePath = @"^[A-Za-z0-9._-][A-Za-z0-9._/-]*$";
    /// <summary>A Go-style duration such as <c>10m</c>, <c>1h30m</c>, <c>90s</c>.</summary>
    public const string Duration = @"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
    /// <summary>A GPU type or node type name from the catalog (<c>A100-80GB</c>, <c>L4</c>, <c>cpu</c>).</summary>
    public const string GpuType = @"^[A-Za-z0-9][A-Za-z0-9._-]*$";
    /// <summary>A module name in the model (<c>q_proj</c>, <c>mlp.down_proj</c>).</summary>
    public const string ModuleName = @"^[A-Za-z_][A-Za-z0-9_.]*$";
    /// <summary>A container image reference.</summary>
    public const string Image = @"^[a-z0-9][a-z0-9._/:-]*(@sha256:[a-f0-9]{64})?$";
    /// <summary>A container image pinned by digest.</summary>
    public const string DigestSuffix = @"@sha256:[a-f0-9]{64}$";
    /// <summary>A resource quantity (the pattern Kubernetes uses for <c>resource.Quantity</c>).</summary>
    public const string Quantity = @"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
}
