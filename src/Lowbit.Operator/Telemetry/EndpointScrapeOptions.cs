using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Telemetry;

/// <summary>How the operator scrapes serving pods' <c>/metrics</c>: configuration section <c>Operator:Scrape</c>, validated at start.</summary>
public sealed class EndpointScrapeOptions
{
    public const string Section = "Operator:Scrape";

    /// <summary>Scrape at all (off: the observed-throughput gauges are never set).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Time between two scrapes of every serving pod; rates are computed over it.</summary>
    public TimeSpan Interval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>Bound on one pod's scrape (connect, headers and body).</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>Pods scraped at once.</summary>
    public int MaxConcurrency { get; set; } = 16;

    /// <summary>A larger <c>/metrics</c> body is a scrape error (vLLM's is about 100 KiB).</summary>
    public int MaxResponseBytes { get; set; } = 4 * 1024 * 1024;
}

/// <summary>Rejects scrape settings that cannot work, naming the field and the accepted range.</summary>
public sealed class EndpointScrapeOptionsValidator : IValidateOptions<EndpointScrapeOptions>
{
    public ValidateOptionsResult Validate(string? name, EndpointScrapeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        if (options.Interval < TimeSpan.FromMilliseconds(100) || options.Interval > TimeSpan.FromHours(1))
        {
            errors.Add($"{EndpointScrapeOptions.Section}:Interval must be between 00:00:00.1 and 01:00:00, got {options.Interval}");
        }

        if (options.Timeout <= TimeSpan.Zero || options.Timeout > TimeSpan.FromMinutes(1))
        {
            errors.Add($"{EndpointScrapeOptions.Section}:Timeout must be above 0 and at most 00:01:00, got {options.Timeout}");
        }

        if (options.MaxConcurrency is < 1 or > 256)
        {
            errors.Add($"{EndpointScrapeOptions.Section}:MaxConcurrency must be between 1 and 256, got {options.MaxConcurrency}");
        }

        if (options.MaxResponseBytes is < 1024 or > 64 * 1024 * 1024)
        {
            errors.Add($"{EndpointScrapeOptions.Section}:MaxResponseBytes must be between 1024 and 67108864, got {options.MaxResponseBytes}");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
