using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Runtime;

/// <summary>What the process reports: readiness inputs and the exit code <c>Program</c> returns.</summary>
public sealed class OperatorState
{
    private volatile bool _synced;
    private volatile bool _leading;

    public bool CachesSynced => _synced;

    public bool Leading => _leading;

    /// <summary>0 normally; 1 after a lost leader election or a cache that never synced.</summary>
    public int ExitCode { get; private set; }

    internal void MarkSynced() => _synced = true;

    internal void SetLeading(bool leading) => _leading = leading;

    internal void Fail() => ExitCode = 1;
}

/// <summary>
/// Runs the operator: creates the controllers (which wire their watches), starts every informer, waits for the
/// caches to sync (bounded), then — as leader when leader election is on — runs the controllers. Leadership
/// lost → controllers are cancelled and the host stops with exit code 1. Host shutdown → in-flight reconciles
/// are cancelled and awaited, then the Lease is released.
/// </summary>
public sealed class OperatorManager : BackgroundService
{
    private readonly InformerRegistry _informers;
    private readonly IReadOnlyList<IController> _controllers;
    private readonly LeaderElection? _election;
    private readonly OperatorOptions _options;
    private readonly OperatorState _state;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly ILogger _logger;

    public OperatorManager(
        InformerRegistry informers,
        IEnumerable<IController> controllers,
        IOptions<OperatorOptions> options,
        OperatorState state,
        IHostApplicationLifetime lifetime,
        ILogger<OperatorManager> logger,
        LeaderElection? election = null)
    {
        _informers = informers ?? throw new ArgumentNullException(nameof(informers));
        _controllers = controllers?.ToList() ?? throw new ArgumentNullException(nameof(controllers));
        _options = options?.Value ?? throw new ArgumentNullException(nameof(options));
        _state = state ?? throw new ArgumentNullException(nameof(state));
        _lifetime = lifetime ?? throw new ArgumentNullException(nameof(lifetime));
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
        _election = election;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var informers = _informers.All;
        ManagerLog.Starting(_logger, _controllers.Count, informers.Count, _election?.Identity);
        var informerTasks = informers.Select(i => Task.Run(() => i.RunAsync(stoppingToken), CancellationToken.None)).ToArray();
        try
        {
            if (!await WaitForCachesAsync(informers, stoppingToken).ConfigureAwait(false))
            {
                return;
            }

            if (_election is null)
            {
                await RunControllersAsync(stoppingToken).ConfigureAwait(false);
                return;
            }

            var lost = await _election.RunAsync(RunControllersAsync, stoppingToken).ConfigureAwait(false);
            if (lost)
            {
                _state.Fail();
                _lifetime.StopApplication();
            }
        }
        finally
        {
            await Task.WhenAll(informerTasks).ConfigureAwait(false);
            if (stoppingToken.IsCancellationRequested)
            {
                ManagerLog.ShutdownComplete(_logger, _controllers.Count, informers.Count);
            }
        }
    }

    private async Task<bool> WaitForCachesAsync(IReadOnlyCollection<IInformer> informers, CancellationToken stoppingToken)
    {
        try
        {
            await Task.WhenAll(informers.Select(i => i.WaitForSyncAsync(stoppingToken)))
                .WaitAsync(_options.CacheSyncTimeout, stoppingToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            var pending = string.Join(", ", informers.Where(i => !i.HasSynced).Select(i => i.Type.ToString()));
            ManagerLog.CacheSyncTimedOut(_logger, _options.CacheSyncTimeout, pending);
            _state.Fail();
            _lifetime.StopApplication();
            return false;
        }
        catch (OperationCanceledException)
        {
            return false;
        }

        _state.MarkSynced();
        ManagerLog.CachesSynced(_logger, informers.Count);
        return true;
    }

    private async Task RunControllersAsync(CancellationToken leading)
    {
        _state.SetLeading(true);
        try
        {
            await Task.WhenAll(_controllers.Select(c => c.RunAsync(leading))).ConfigureAwait(false);
        }
        finally
        {
            _state.SetLeading(false);
        }
    }
}

/// <summary><c>/readyz</c>: ready once the caches synced and, with leader election on (and ReadyOnlyWhenLeading), while this instance leads.</summary>
public sealed class ReadinessCheck(OperatorState state, IOptions<OperatorOptions> options) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (!state.CachesSynced)
        {
            return Task.FromResult(HealthCheckResult.Unhealthy("caches not synced"));
        }

        var election = options.Value.LeaderElection;
        if (election.Enabled && election.ReadyOnlyWhenLeading && !state.Leading)
        {
            return Task.FromResult(HealthCheckResult.Unhealthy("not the leader"));
        }

        return Task.FromResult(HealthCheckResult.Healthy());
    }
}

internal static partial class ManagerLog
{
    [LoggerMessage(EventId = 1000, Level = LogLevel.Information, Message = "Starting operator: {Controllers} controllers, {Informers} informers, identity {Identity}")]
    public static partial void Starting(ILogger logger, int controllers, int informers, string? identity);

    [LoggerMessage(EventId = 1001, Level = LogLevel.Information, Message = "{Informers} caches synced")]
    public static partial void CachesSynced(ILogger logger, int informers);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Information, Message = "Shutdown complete: {Controllers} controllers drained, {Informers} informers stopped")]
    public static partial void ShutdownComplete(ILogger logger, int controllers, int informers);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Critical, Message = "Caches did not sync within {Timeout}: {Pending}; exiting")]
    public static partial void CacheSyncTimedOut(ILogger logger, TimeSpan timeout, string pending);
}
