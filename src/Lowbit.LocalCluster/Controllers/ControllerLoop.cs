using System.Threading.Channels;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster.Controllers;

/// <summary>What a reconcile asks for next.</summary>
public readonly record struct Requeue(TimeSpan? After)
{
    public static Requeue Done { get; } = new(null);

    public static Requeue In(TimeSpan delay) => new(delay);
}

/// <summary>
/// A level-based work queue with workers, like controller-runtime's: a key is queued at most once at a time,
/// a key being reconciled that changes again is reconciled once more afterwards, a 409 Conflict requeues at
/// once, other errors requeue with per-key exponential backoff (never dropped), and a reconcile may ask to be
/// called again after a delay (measured on the injected <see cref="TimeProvider"/>).
/// </summary>
public sealed partial class ControllerLoop
{
    private readonly string _name;
    private readonly Func<string, CancellationToken, Task<Requeue>> _reconcile;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Channel<string> _ready = Channel.CreateUnbounded<string>();
    private readonly object _gate = new();
    private readonly HashSet<string> _queued = new(StringComparer.Ordinal);
    private readonly HashSet<string> _running = new(StringComparer.Ordinal);
    private readonly HashSet<string> _dirty = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _failures = new(StringComparer.Ordinal);

    public ControllerLoop(string name, Func<string, CancellationToken, Task<Requeue>> reconcile, TimeProvider time, ILogger logger)
    {
        _name = name;
        _reconcile = reconcile;
        _time = time;
        _logger = logger;
    }

    /// <summary>Queues a key ("namespace/name", or "/name" for cluster-scoped objects).</summary>
    public void Enqueue(string key)
    {
        lock (_gate)
        {
            if (_running.Contains(key))
            {
                _dirty.Add(key);
                return;
            }
            if (!_queued.Add(key))
            {
                return;
            }
        }
        _ready.Writer.TryWrite(key);
    }

    public void EnqueueAfter(string key, TimeSpan delay)
    {
        if (delay <= TimeSpan.Zero)
        {
            Enqueue(key);
            return;
        }
        ITimer? timer = null;
        timer = _time.CreateTimer(_ => { Enqueue(key); timer?.Dispose(); }, null, delay, Timeout.InfiniteTimeSpan);
    }

    public Task RunAsync(int workers, CancellationToken cancellationToken) =>
        Task.WhenAll(Enumerable.Range(0, workers).Select(_ => Task.Run(() => WorkAsync(cancellationToken), CancellationToken.None)));

    private async Task WorkAsync(CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var key in _ready.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                lock (_gate)
                {
                    _queued.Remove(key);
                    _running.Add(key);
                }
                Requeue result;
                try
                {
                    result = await _reconcile(key, cancellationToken).ConfigureAwait(false);
                    lock (_gate)
                    {
                        _failures.Remove(key);
                    }
                }
                catch (ApiException ex) when (ex.Code == 409)
                {
                    result = Requeue.In(TimeSpan.FromMilliseconds(5));
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
                {
                    int failures;
                    lock (_gate)
                    {
                        failures = _failures[key] = _failures.GetValueOrDefault(key) + 1;
                    }
                    var backoff = TimeSpan.FromMilliseconds(Math.Min(5_000, 10 * Math.Pow(2, Math.Min(failures, 10))));
                    Log.ReconcileFailed(_logger, ex, _name, key, backoff.TotalMilliseconds);
                    result = Requeue.In(backoff);
                }
                bool again;
                lock (_gate)
                {
                    _running.Remove(key);
                    again = _dirty.Remove(key);
                }
                if (again)
                {
                    Enqueue(key);
                }
                else if (result.After is { } after)
                {
                    EnqueueAfter(key, after);
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 4001, Level = LogLevel.Warning, Message = "{Controller}: reconcile of {Key} failed; retrying in {BackoffMs} ms")]
        public static partial void ReconcileFailed(ILogger logger, Exception exception, string controller, string key, double backoffMs);
    }
}
