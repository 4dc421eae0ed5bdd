using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Runtime;

/// <summary>The operator's settings: configuration section <c>Operator</c> (e.g. <c>--Operator:WatchNamespace=ml</c>), validated at start.</summary>
public sealed class OperatorOptions
{
    public const string Section = "Operator";

    /// <summary>Namespace to watch; empty watches all namespaces.</summary>
    public string? WatchNamespace { get; set; }

    /// <summary>kubeconfig path (also <c>--kubeconfig</c> or KUBECONFIG); empty: KUBECONFIG, ~/.kube/config, then in-cluster.</summary>
    public string? Kubeconfig { get; set; }

    /// <summary>kubeconfig context (also <c>--context</c>); empty: the current context.</summary>
    public string? Context { get; set; }

    public LeaderElectionOptions LeaderElection { get; set; } = new();

    /// <summary>The watch's <c>timeoutSeconds</c> (jittered up to +20 %).</summary>
    public TimeSpan WatchTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>A watch with no event or bookmark for this long is cancelled and resumed.</summary>
    public TimeSpan WatchIdleTimeout { get; set; } = TimeSpan.FromSeconds(150);

    /// <summary>How long the caches may take to list before the operator gives up and exits non-zero.</summary>
    public TimeSpan CacheSyncTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>Bound on one reconcile.</summary>
    public TimeSpan ReconcileTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>Default reconciles at once per controller (a controller may set its own).</summary>
    public int MaxConcurrentReconciles { get; set; } = 1;

    /// <summary>Graceful shutdown bound; keep it below the pod's terminationGracePeriodSeconds (30 s by default).</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(25);

    public int ClientMaxAttempts { get; set; } = 5;

    public TimeSpan ClientMaxRetryAfter { get; set; } = TimeSpan.FromSeconds(60);
}

/// <summary>Lease-based leader election (controller-runtime's defaults: 15 s lease, 10 s renew deadline, 2 s retry).</summary>
public sealed class LeaderElectionOptions
{
    public bool Enabled { get; set; } = true;

    public string LeaseName { get; set; } = "lowbit-operator";

    /// <summary>Namespace of the Lease; empty: POD_NAMESPACE, then the in-cluster namespace file, then <c>default</c>.</summary>
    public string? LeaseNamespace { get; set; }

    /// <summary>This instance's identity; empty: the host name plus a random suffix.</summary>
    public string? Identity { get; set; }

    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(15);

    public TimeSpan RenewDeadline { get; set; } = TimeSpan.FromSeconds(10);

    public TimeSpan RetryPeriod { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// /readyz fails while this instance is a follower. Note: with a Deployment rollout that waits for new pods to be
    /// Ready, a follower that never becomes Ready stalls the rollout; turn this off there (controller-runtime's readyz
    /// does not consider leadership).
    /// </summary>
    public bool ReadyOnlyWhenLeading { get; set; } = true;

    /// <summary>On graceful shutdown, clear the holder so a successor need not wait out the lease (safe: the process exits right after).</summary>
    public bool ReleaseOnShutdown { get; set; } = true;
}

/// <summary>Rejects settings that cannot work, naming the field and what is accepted.</summary>
public sealed class OperatorOptionsValidator : IValidateOptions<OperatorOptions>
{
    public ValidateOptionsResult Validate(string? name, OperatorOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        void Positive(TimeSpan value, string field)
        {
            if (value <= TimeSpan.Zero)
            {
                errors.Add($"{OperatorOptions.Section}:{field} must be a positive duration (got {value})");
            }
        }

        Positive(options.WatchTimeout, nameof(options.WatchTimeout));
        Positive(options.WatchIdleTimeout, nameof(options.WatchIdleTimeout));
        Positive(options.CacheSyncTimeout, nameof(options.CacheSyncTimeout));
        Positive(options.ReconcileTimeout, nameof(options.ReconcileTimeout));
        Positive(options.ShutdownTimeout, nameof(options.ShutdownTimeout));
        if (options.WatchTimeout > TimeSpan.FromMinutes(30))
        {
            errors.Add($"{OperatorOptions.Section}:WatchTimeout must be at most 30 minutes (the API server ends watches after --min-request-timeout anyway); got {options.WatchTimeout}");
        }

        if (options.MaxConcurrentReconciles is < 1 or > 1000)
        {
            errors.Add($"{OperatorOptions.Section}:MaxConcurrentReconciles must be between 1 and 1000 (got {options.MaxConcurrentReconciles})");
        }

        if (options.ClientMaxAttempts is < 1 or > 20)
        {
            errors.Add($"{OperatorOptions.Section}:ClientMaxAttempts must be between 1 and 20 (got {options.ClientMaxAttempts})");
        }

        var le = options.LeaderElection;
        if (le.Enabled)
        {
            Positive(le.LeaseDuration, "LeaderElection:LeaseDuration");
            Positive(le.RenewDeadline, "LeaderElection:RenewDeadline");
            Positive(le.RetryPeriod, "LeaderElection:RetryPeriod");
            if (le.RenewDeadline >= le.LeaseDuration)
            {
                errors.Add($"{OperatorOptions.Section}:LeaderElection:RenewDeadline ({le.RenewDeadline}) must be shorter than LeaseDuration ({le.LeaseDuration})");
            }

            if (le.RetryPeriod >= le.RenewDeadline)
            {
                errors.Add($"{OperatorOptions.Section}:LeaderElection:RetryPeriod ({le.RetryPeriod}) must be shorter than RenewDeadline ({le.RenewDeadline})");
            }

            if (le.LeaseDuration < TimeSpan.FromSeconds(1))
            {
                errors.Add($"{OperatorOptions.Section}:LeaderElection:LeaseDuration must be at least 1 s (the Lease stores whole seconds); got {le.LeaseDuration}");
            }

            if (string.IsNullOrWhiteSpace(le.LeaseName))
            {
                errors.Add($"{OperatorOptions.Section}:LeaderElection:LeaseName must be a non-empty object name");
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
