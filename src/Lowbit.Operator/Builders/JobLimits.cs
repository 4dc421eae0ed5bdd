using Lowbit.Planner;

namespace Lowbit.Operator.Builders;

/// <summary>
/// Bounds of the work a pod may do (issue 17, item 4): how long a Job may run (<c>activeDeadlineSeconds</c>, from
/// the plan's time estimate with a margin, or the spec's override) and how much disk its model cache may use
/// (<c>ephemeral-storage</c>, from the model's size), so a stuck Job ends and a download cannot evict neighbours.
/// </summary>
public static class JobLimits
{
    /// <summary>Download rate the estimate assumes (a slow link: 50 MB/s).</summary>
    public const double DownloadBytesPerSecond = 50e6;

    /// <summary>Rate of reading the checkpoint from the cache into memory.</summary>
    public const double LoadBytesPerSecond = 500e6;

    /// <summary>Tokens the engine's perplexity check before and after quantizing reads (an upper bound).</summary>
    public const double QualityTokens = 2 * 65_536;

    /// <summary>Disk beyond the checkpoint: tokenizer and config files, partial downloads, <c>/tmp</c>, logs.</summary>
    public static readonly ByteSize Headroom = ByteSize.FromGiB(2);

    /// <summary>
    /// The time the work should take on <paramref name="placement"/>: downloading and loading the checkpoint, then
    /// <paramref name="workTokens"/> at the placement's estimated rate. Null when the work is unknown.
    /// </summary>
    public static TimeSpan? Estimate(WorkloadPlacement placement, double? workTokens)
    {
        ArgumentNullException.ThrowIfNull(placement);
        var rate = placement.Option.Throughput.TokensPerSecond;
        if (workTokens is not { } tokens || !(rate > 0))
        {
            return null;
        }

        var bytes = (double)placement.SourceBytes.Bytes;
        return TimeSpan.FromSeconds((bytes / DownloadBytesPerSecond) + (bytes / LoadBytesPerSecond) + (tokens / rate));
    }

    /// <summary>
    /// <c>activeDeadlineSeconds</c>: the spec's value, else the estimate × <see cref="WorkloadOptions.JobDeadlineMargin"/>
    /// (at least <see cref="WorkloadOptions.MinJobDeadline"/>), else <see cref="WorkloadOptions.DefaultJobDeadline"/>.
    /// </summary>
    public static long ActiveDeadlineSeconds(long? requested, WorkloadPlacement placement, double? workTokens, WorkloadOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (requested is { } seconds)
        {
            return seconds;
        }

        return Estimate(placement, workTokens) is { } estimate
            ? (long)Math.Ceiling(Math.Max(options.MinJobDeadline.TotalSeconds, estimate.TotalSeconds * options.JobDeadlineMargin))
            : (long)Math.Ceiling(options.DefaultJobDeadline.TotalSeconds);
    }

    /// <summary>The cache volume's size limit and the container's ephemeral-storage: the checkpoint + 10% + <see cref="Headroom"/>.</summary>
    public static ByteSize EphemeralStorage(WorkloadPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        return (placement.SourceBytes * 1.1) + Headroom;
    }
}
