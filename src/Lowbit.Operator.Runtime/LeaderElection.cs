using k8s;
using k8s.Autorest;
using k8s.LeaderElection;
using k8s.LeaderElection.ResourceLock;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// Leader election on a coordination.k8s.io/v1 Lease through KubernetesClient's <see cref="LeaderElector"/> and
/// <see cref="LeaseLock"/>, with its pitfalls handled here: <c>RunUntilLeadershipLostAsync</c> returns after the
/// first loss (we never try to re-acquire: the process exits); a renew that times out is not cancelled by the
/// elector, so the leading work is cancelled here the moment leadership ends; lock errors go to a metric.
/// </summary>
public sealed class LeaderElection
{
    private readonly IKubernetes _client;
    private readonly LeaderElectionOptions _options;
    private readonly RuntimeMetrics _metrics;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private volatile bool _leading;

    public LeaderElection(IKubernetes client, LeaderElectionOptions options, string leaseNamespace, string identity, TimeProvider time, RuntimeMetrics metrics, ILogger<LeaderElection> logger)
    {
        _time = time ?? throw new ArgumentNullException(nameof(time));
        _client = client ?? throw new ArgumentNullException(nameof(client));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        LeaseNamespace = leaseNamespace ?? throw new ArgumentNullException(nameof(leaseNamespace));
        Identity = identity ?? throw new ArgumentNullException(nameof(identity));
        _metrics = metrics ?? throw new ArgumentNullException(nameof(metrics));
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
        _metrics.LeaderStatus.WithLabels(_options.LeaseName).Set(0);
        _metrics.LeaderElectionErrors.WithLabels(_options.LeaseName);
    }

    public string Identity { get; }

    public string LeaseNamespace { get; }

    public bool IsLeader => _leading;

    /// <summary>
    /// Campaigns until this instance leads, runs <paramref name="lead"/> while it does, and returns when leadership
    /// ends. Returns true when leadership was lost (the caller exits), false when <paramref name="cancellationToken"/> ended it.
    /// </summary>
    public async Task<bool> RunAsync(Func<CancellationToken, Task> lead, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(lead);
        var leaseLock = new LeaseLock(_client, LeaseNamespace, _options.LeaseName, Identity);
        leaseLock.OnHttpError += ex =>
        {
            _metrics.LeaderElectionErrors.WithLabels(_options.LeaseName).Inc();
            LeaderElectionLog.LockError(_logger, _options.LeaseName, (int?)ex.Response?.StatusCode, ex);
        };
        var config = new LeaderElectionConfig(leaseLock)
        {
            LeaseDuration = _options.LeaseDuration,
            RenewDeadline = _options.RenewDeadline,
            RetryPeriod = _options.RetryPeriod,
        };

        using var elector = new LeaderElector(config);
        using var leading = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Task work = Task.CompletedTask;
        elector.OnStartedLeading += () =>
        {
            _leading = true;
            _metrics.LeaderStatus.WithLabels(_options.LeaseName).Set(1);
            LeaderElectionLog.StartedLeading(_logger, Identity, _options.LeaseName);
            work = Task.Run(() => lead(leading.Token), CancellationToken.None);
        };
        elector.OnStoppedLeading += () =>
        {
            _leading = false;
            _metrics.LeaderStatus.WithLabels(_options.LeaseName).Set(0);
            leading.Cancel();
        };
        elector.OnNewLeader += leader => LeaderElectionLog.NewLeader(_logger, leader, _options.LeaseName);
        elector.OnError += ex =>
        {
            _metrics.LeaderElectionErrors.WithLabels(_options.LeaseName).Inc();
            LeaderElectionLog.ElectionError(_logger, _options.LeaseName, ex);
        };

        var wasLeading = false;
        try
        {
            await elector.RunUntilLeadershipLostAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        finally
        {
            wasLeading = work != Task.CompletedTask;
            _leading = false;
            _metrics.LeaderStatus.WithLabels(_options.LeaseName).Set(0);
            await leading.CancelAsync().ConfigureAwait(false);
            try
            {
                await work.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }

        if (cancellationToken.IsCancellationRequested)
        {
            if (wasLeading && _options.ReleaseOnShutdown)
            {
                await ReleaseAsync().ConfigureAwait(false);
            }

            return false;
        }

        LeaderElectionLog.Lost(_logger, Identity, _options.LeaseName);
        return true;
    }

    /// <summary>Clears the holder of our Lease (only if we still hold it) so a successor acquires it at once.</summary>
    private async Task ReleaseAsync()
    {
        using var timeout = new CancellationTokenSource(_options.RenewDeadline, _time);
        try
        {
            var lease = await _client.CoordinationV1.ReadNamespacedLeaseAsync(_options.LeaseName, LeaseNamespace, cancellationToken: timeout.Token).ConfigureAwait(false);
            if (lease.Spec?.HolderIdentity != Identity)
            {
                return;
            }

            lease.Spec.HolderIdentity = string.Empty;
            lease.Spec.LeaseDurationSeconds = 1;
            lease.Spec.RenewTime = _time.GetUtcNow().UtcDateTime;
            await _client.CoordinationV1.ReplaceNamespacedLeaseAsync(lease, _options.LeaseName, LeaseNamespace, cancellationToken: timeout.Token).ConfigureAwait(false);
            LeaderElectionLog.Released(_logger, Identity, _options.LeaseName);
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or OperationCanceledException)
        {
            LeaderElectionLog.ReleaseFailed(_logger, _options.LeaseName, ex);
        }
    }
}

internal static partial class LeaderElectionLog
{
    [LoggerMessage(EventId = 1400, Level = LogLevel.Information, Message = "{Identity} became leader of lease {Lease}")]
    public static partial void StartedLeading(ILogger logger, string identity, string lease);

    [LoggerMessage(EventId = 1401, Level = LogLevel.Information, Message = "Leader of lease {Lease} is now {Leader}")]
    public static partial void NewLeader(ILogger logger, string leader, string lease);

    [LoggerMessage(EventId = 1402, Level = LogLevel.Error, Message = "{Identity} lost leadership of lease {Lease}: leader election lost, stopping")]
    public static partial void Lost(ILogger logger, string identity, string lease);

    [LoggerMessage(EventId = 1403, Level = LogLevel.Warning, Message = "Lease {Lease}: HTTP {Code} from the lock")]
    public static partial void LockError(ILogger logger, string lease, int? code, Exception exception);

    [LoggerMessage(EventId = 1404, Level = LogLevel.Warning, Message = "Lease {Lease}: error while electing")]
    public static partial void ElectionError(ILogger logger, string lease, Exception exception);

    [LoggerMessage(EventId = 1405, Level = LogLevel.Information, Message = "{Identity} released lease {Lease}")]
    public static partial void Released(ILogger logger, string identity, string lease);

    [LoggerMessage(EventId = 1406, Level = LogLevel.Warning, Message = "Lease {Lease}: release on shutdown failed")]
    public static partial void ReleaseFailed(ILogger logger, string lease, Exception exception);
}
