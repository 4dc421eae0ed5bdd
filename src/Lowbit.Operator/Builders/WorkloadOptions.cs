using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Builders;

/// <summary>
/// Images and pod settings of the workloads the operator creates: configuration section <c>Operator:Workloads</c>.
/// Images are pinned (a version tag or a digest), never <c>:latest</c> or untagged; validated at start.
/// </summary>
public sealed class WorkloadOptions
{
    public const string Section = "Operator:Workloads";

    /// <summary>The lowbit-engine image (inspect, quantize, finetune, eval, serve).</summary>
    public string EngineImage { get; set; } = "ghcr.io/lowbit-dev/lowbit-engine:0.1.0";

    /// <summary>The vLLM OpenAI server image (spec.runtime vllm).</summary>
    public string VllmImage { get; set; } = "vllm/vllm-openai:v0.6.3";

    /// <summary>The llama.cpp server image (spec.runtime llamacpp).</summary>
    public string LlamaCppImage { get; set; } = "ghcr.io/ggml-org/llama.cpp:server-b4719";

    /// <summary>UID (and GID) engine containers run as (PSS restricted: non-root).</summary>
    public long RunAsUser { get; set; } = 65532;

    /// <summary>Size limit of the <c>/dev/shm</c> memory volume.</summary>
    public string SharedMemorySize { get; set; } = "2Gi";

    /// <summary>Job retries for failures the pod failure policy counts (not OOM, not bad input).</summary>
    public int JobBackoffLimit { get; set; } = 3;

    /// <summary>Startup probe: periods of 10 s a serving pod may take to load its model.</summary>
    public int StartupFailureThreshold { get; set; } = 60;

    /// <summary>Host memory a GPU pod requests when the spec gives none, beyond the weights it stages.</summary>
    public string DefaultHostMemory { get; set; } = "8Gi";

    /// <summary>Hugging Face Hub endpoint the operator fetches config.json from (a mirror, or a test server).</summary>
    public string HubEndpoint { get; set; } = Lowbit.Engine.Protocol.EngineEnv.DefaultHfEndpoint;

    /// <summary>How long the operator waits for a source's config.json before it reports Pending and retries.</summary>
    public TimeSpan ConfigFetchTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>A Job's <c>activeDeadlineSeconds</c> is the plan's time estimate times this margin (spec.activeDeadlineSeconds overrides).</summary>
    public double JobDeadlineMargin { get; set; } = 3.0;

    /// <summary>The least <c>activeDeadlineSeconds</c> an estimated Job gets (small models finish in minutes, pulls and queues take longer).</summary>
    public TimeSpan MinJobDeadline { get; set; } = TimeSpan.FromMinutes(30);

    /// <summary><c>activeDeadlineSeconds</c> of a Job whose work cannot be estimated (a fine-tune without maxSteps).</summary>
    public TimeSpan DefaultJobDeadline { get; set; } = TimeSpan.FromHours(24);

    /// <summary>
    /// Progress watchdog: a running engine pod that printed no JSON progress line (progress, download, train,
    /// checkpoint) for this long makes its resource Stalled with reason NoProgress.
    /// </summary>
    public TimeSpan ProgressTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Cluster DNS suffix for <c>status.url</c>.</summary>
    public string ClusterDomain { get; set; } = "cluster.local";
}

/// <summary>Rejects unpinned images and impossible settings, naming the field.</summary>
public sealed class WorkloadOptionsValidator : IValidateOptions<WorkloadOptions>
{
    public ValidateOptionsResult Validate(string? name, WorkloadOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        foreach (var (field, image) in new[]
        {
            (nameof(options.EngineImage), options.EngineImage),
            (nameof(options.VllmImage), options.VllmImage),
            (nameof(options.LlamaCppImage), options.LlamaCppImage),
        })
        {
            if (ImageReference.PinError(image) is { } error)
            {
                errors.Add($"{WorkloadOptions.Section}:{field}: {error}");
            }
        }

        if (options.RunAsUser <= 0)
        {
            errors.Add($"{WorkloadOptions.Section}:RunAsUser must be a non-root UID (> 0), got {options.RunAsUser}");
        }

        if (options.JobBackoffLimit is < 0 or > 100)
        {
            errors.Add($"{WorkloadOptions.Section}:JobBackoffLimit must be between 0 and 100, got {options.JobBackoffLimit}");
        }

        if (options.JobDeadlineMargin < 1)
        {
            errors.Add($"{WorkloadOptions.Section}:JobDeadlineMargin must be at least 1 (the estimate itself), got {options.JobDeadlineMargin}");
        }

        foreach (var (field, value) in new[]
        {
            (nameof(options.MinJobDeadline), options.MinJobDeadline),
            (nameof(options.DefaultJobDeadline), options.DefaultJobDeadline),
            (nameof(options.ProgressTimeout), options.ProgressTimeout),
        })
        {
            if (value < TimeSpan.FromMinutes(1))
            {
                errors.Add($"{WorkloadOptions.Section}:{field} must be at least 00:01:00, got {value}");
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>Checks on container image references.</summary>
public static class ImageReference
{
    /// <summary>Null when <paramref name="image"/> is pinned (a tag other than latest, or a digest); otherwise why not.</summary>
    public static string? PinError(string? image)
    {
        if (string.IsNullOrWhiteSpace(image))
        {
            return "an image is required (registry/name:tag or name@sha256:digest)";
        }

        if (image.Contains("@sha256:", StringComparison.Ordinal))
        {
            return null;
        }

        var lastSlash = image.LastIndexOf('/');
        var colon = image.IndexOf(':', lastSlash + 1);
        if (colon < 0)
        {
            return $"'{image}' has no tag; pin a version tag or a digest";
        }

        var tag = image[(colon + 1)..];
        return tag == "latest" ? $"'{image}' uses :latest; pin a version tag or a digest" : null;
    }
}
