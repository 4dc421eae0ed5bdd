using System.Collections.Concurrent;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Runtime;

/// <summary>The kind-independent face of a controller, for the manager.</summary>
public interface IController
{
    string Name { get; }

    /// <summary>Runs the workers until <paramref name="stoppingToken"/> is cancelled; in-flight reconciles see the cancellation and finish.</summary>
    Task RunAsync(CancellationToken stoppingToken);
}

/// <summary>How one controller runs.</summary>
public sealed record ControllerOptions
{
    /// <summary>Controller name: the metric label and queue name; defaults to the primary kind in lowercase.</summary>
    public string? Name { get; init; }

    /// <summary>Reconciles running at once for this controller (never two for the same key).</summary>
    public int MaxConcurrentReconciles { get; init; } = 1;

    /// <summary>Bound on one reconcile; its CancellationToken fires after this.</summary>
    public TimeSpan ReconcileTimeout { get; init; } = TimeSpan.FromMinutes(2);
}

/// <summary>
/// A controller for kind <typeparamref name="T"/>: workers take keys from a rate-limited queue, read the object
/// from the informer cache and call the reconciler (resolved in a fresh DI scope per reconcile). Results map to
/// queue actions: Done → forget; RequeueAfter → forget and add after the delay; Failed or an exception → add
/// rate-limited (nothing is dropped); Terminal → not retried until the generation changes; 409 Conflict →
/// requeue rate-limited without counting an error; 404 for the object itself (a stale cache) → not reconciled
/// again until the cache drops it or holds a new UID. Exceptions never end a worker.
/// </summary>
public sealed class Controller<T> : IController
    where T : class, IKubernetesObject<V1ObjectMeta>
{
    private readonly Informer<T> _informer;
    private readonly Func<IServiceProvider, IReconciler<T>> _resolve;
    private readonly IServiceScopeFactory _scopes;
    private readonly ControllerOptions _options;
    private readonly TimeProvider _time;
    private readonly RuntimeMetrics _metrics;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<ObjectKey, long?> _terminal = new();
    private readonly ConcurrentDictionary<ObjectKey, string?> _gone = new();

    public Controller(
        Informer<T> informer,
        Func<IServiceProvider, IReconciler<T>> resolve,
        IServiceScopeFactory scopes,
        ControllerOptions options,
        TimeProvider time,
        RuntimeMetrics metrics,
        ILogger<Controller<T>> logger)
    {
        _informer = informer ?? throw new ArgumentNullException(nameof(informer));
        _resolve = resolve ?? throw new ArgumentNullException(nameof(resolve));
        _scopes = scopes ?? throw new ArgumentNullException(nameof(scopes));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _time = time ?? throw new ArgumentNullException(nameof(time));
        _metrics = metrics ?? throw new ArgumentNullException(nameof(metrics));
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxConcurrentReconciles, 1);
        Name = options.Name ?? informer.Type.LabelName;
        Queue = new RateLimitingQueue<ObjectKey>(Name, DefaultControllerRateLimiter.Create<ObjectKey>(time), time, metrics);
        _metrics.MaxConcurrentReconciles.WithLabels(Name).Set(options.MaxConcurrentReconciles);
        _metrics.ActiveWorkers.WithLabels(Name).Set(0);
        foreach (var result in new[] { "success", "error", "requeue", "requeue_after" })
        {
            _metrics.ReconcileTotal.WithLabels(Name, result);
        }

        _metrics.ReconcileErrors.WithLabels(Name);
        _metrics.TerminalReconcileErrors.WithLabels(Name);
        _metrics.ReconcilePanics.WithLabels(Name);
        informer.AddHandler(new EnqueueRequests<T>(Queue, RequestMappers.Self));
    }

    public string Name { get; }

    public RateLimitingQueue<ObjectKey> Queue { get; }

    /// <summary>Also reconcile when objects of another kind change, mapped to keys of <typeparamref name="T"/>.</summary>
    public void Watch<TOther>(Informer<TOther> informer, MapToRequests<TOther> map)
        where TOther : class, IKubernetesObject<V1ObjectMeta>
    {
        ArgumentNullException.ThrowIfNull(informer);
        informer.AddHandler(new EnqueueRequests<TOther>(Queue, map));
    }

    /// <summary>Reconcile the controller owner of <typeparamref name="TChild"/> objects when they change.</summary>
    public void Owns<TChild>(Informer<TChild> informer)
        where TChild : class, IKubernetesObject<V1ObjectMeta>
    {
        var owner = _informer.Type;
        Watch(informer, child => RequestMappers.ControllerOwnerOf(child, owner));
    }

    public async Task RunAsync(CancellationToken stoppingToken)
    {
        ControllerLog.Starting(_logger, Name, _options.MaxConcurrentReconciles);
        var workers = new Task[_options.MaxConcurrentReconciles];
        for (var i = 0; i < workers.Length; i++)
        {
            workers[i] = Task.Run(() => WorkerAsync(stoppingToken), CancellationToken.None);
        }

        try
        {
            await Task.WhenAll(workers).ConfigureAwait(false);
        }
        finally
        {
            Queue.ShutDown();
            ControllerLog.Stopped(_logger, Name);
        }
    }

    private async Task WorkerAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            RateLimitingQueue<ObjectKey>.Optional item;
            try
            {
                item = await Queue.GetAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (!item.HasValue)
            {
                return;
            }

            try
            {
                await ProcessAsync(item.Key, stoppingToken).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                // ProcessAsync handles reconcile failures; this is the last guard that keeps the worker alive.
                ControllerLog.WorkerFault(_logger, Name, item.Key.ToString(), ex);
                Queue.AddRateLimited(item.Key);
            }
            finally
            {
                Queue.Done(item.Key);
            }
        }
    }

    private async Task ProcessAsync(ObjectKey key, CancellationToken stoppingToken)
    {
        if (!_informer.TryGet(key, out var obj))
        {
            // Deleted: children go with their owner references; nothing to retry.
            Queue.Forget(key);
            _terminal.TryRemove(key, out _);
            _gone.TryRemove(key, out _);
            return;
        }

        if (_gone.TryGetValue(key, out var goneUid))
        {
            if (goneUid == obj.Metadata.Uid)
            {
                ControllerLog.SkippedGone(_logger, Name, key.ToString());
                return;
            }

            _gone.TryRemove(key, out _);
        }

        var generation = obj.Metadata.Generation;
        if (_terminal.TryGetValue(key, out var stalledAt))
        {
            if (stalledAt == generation)
            {
                ControllerLog.SkippedTerminal(_logger, Name, key.ToString(), generation);
                return;
            }

            _terminal.TryRemove(key, out _);
        }

        var started = _time.GetTimestamp();
        _metrics.ActiveWorkers.WithLabels(Name).Inc();
        using var timeout = new CancellationTokenSource(_options.ReconcileTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, timeout.Token);
        string result;
        try
        {
            ReconcileResult outcome;
            await using (var scope = _scopes.CreateAsyncScope())
            {
                outcome = await _resolve(scope.ServiceProvider).ReconcileAsync(obj, linked.Token).ConfigureAwait(false);
            }

            result = Apply(key, generation, outcome);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Shutting down: the next leader (or the next start) picks the key up from its own list.
            ControllerLog.Cancelled(_logger, Name, key.ToString());
            return;
        }
        catch (TerminalReconcileException ex)
        {
            result = Apply(key, generation, ReconcileResult.Terminal(ex.Reason, ex.Message));
        }
        catch (Exception ex) when (KubernetesRest.IsConflict(ex))
        {
            // Optimistic-concurrency conflict: our cache was stale. Read again soon; not an error.
            ControllerLog.Conflict(_logger, Name, key.ToString());
            Queue.AddRateLimited(key);
            result = "requeue";
        }
        catch (Exception ex) when (KubernetesRest.IsNotFound(ex, _informer.Type, key.Name))
        {
            // The server no longer has the object that our cache still holds (a delete not seen yet, e.g. behind a
            // stalled watch). Reconciling again would re-create children that the garbage collector deletes at once,
            // and each deletion would requeue us: wait for the cache to catch up (a delete, or a new UID) instead.
            ControllerLog.Gone(_logger, Name, key.ToString());
            Queue.Forget(key);
            _gone[key] = obj.Metadata.Uid;
            result = "success";
        }
        catch (OperationCanceledException ex) when (timeout.IsCancellationRequested)
        {
            ControllerLog.TimedOut(_logger, Name, key.ToString(), _options.ReconcileTimeout, ex);
            _metrics.ReconcileErrors.WithLabels(Name).Inc();
            Queue.AddRateLimited(key);
            result = "error";
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or KubernetesException)
        {
            ControllerLog.ApiError(_logger, Name, key.ToString(), ex);
            _metrics.ReconcileErrors.WithLabels(Name).Inc();
            Queue.AddRateLimited(key);
            result = "error";
        }
        catch (Exception ex)
        {
            // controller-runtime's RecoverPanic: an unexpected exception is counted and retried, never fatal.
            ControllerLog.Panic(_logger, Name, key.ToString(), ex);
            _metrics.ReconcilePanics.WithLabels(Name).Inc();
            _metrics.ReconcileErrors.WithLabels(Name).Inc();
            Queue.AddRateLimited(key);
            result = "error";
        }
        finally
        {
            _metrics.ActiveWorkers.WithLabels(Name).Dec();
        }

        _metrics.ReconcileTime.WithLabels(Name).Observe(_time.GetElapsedTime(started).TotalSeconds);
        _metrics.ReconcileTotal.WithLabels(Name, result).Inc();
    }

    private string Apply(ObjectKey key, long? generation, ReconcileResult outcome)
    {
        switch (outcome)
        {
            case ReconcileResult.Success:
                Queue.Forget(key);
                return "success";
            case ReconcileResult.Requeue requeue:
                Queue.Forget(key);
                Queue.AddAfter(key, requeue.Delay);
                return "requeue_after";
            case ReconcileResult.Failure failure:
                ControllerLog.Failed(_logger, Name, key.ToString(), failure.Reason, failure.Message);
                _metrics.ReconcileErrors.WithLabels(Name).Inc();
                Queue.AddRateLimited(key);
                return "error";
            case ReconcileResult.TerminalFailure terminal:
                ControllerLog.Terminal(_logger, Name, key.ToString(), terminal.Reason, terminal.Message, generation);
                _metrics.ReconcileErrors.WithLabels(Name).Inc();
                _metrics.TerminalReconcileErrors.WithLabels(Name).Inc();
                Queue.Forget(key);
                _terminal[key] = generation;
                return "error";
            default:
                throw new InvalidOperationException($"unknown reconcile result {outcome}");
        }
    }
}
