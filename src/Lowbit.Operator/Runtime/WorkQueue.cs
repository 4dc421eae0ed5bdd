namespace Lowbit.Operator.Runtime;

/// <summary>
/// client-go's rate-limiting work queue: an item is processed by one worker at a time (the dirty and processing
/// sets), repeated adds of a waiting item coalesce into one, an item added while it is being processed is queued
/// again when <see cref="Done"/> is called, delayed adds keep the earliest ready time, and retries wait for the
/// rate limiter. Nothing is ever dropped: an item that keeps failing waits up to the limiter's cap.
/// </summary>
public sealed class RateLimitingQueue<TKey> : IDisposable
    where TKey : notnull
{
    private readonly Lock _lock = new();
    private readonly Queue<TKey> _queue = new();
    private readonly HashSet<TKey> _dirty = [];
    private readonly Dictionary<TKey, long> _processing = [];
    private readonly Dictionary<TKey, long> _enqueuedAt = [];
    private readonly Dictionary<TKey, Waiting> _waiting = [];
    private readonly SemaphoreSlim _available = new(0);
    private readonly IRateLimiter<TKey> _limiter;
    private readonly TimeProvider _time;
    private readonly RuntimeMetrics? _metrics;
    private bool _shuttingDown;

    public RateLimitingQueue(string name, IRateLimiter<TKey> limiter, TimeProvider time, RuntimeMetrics? metrics = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        Name = name;
        _limiter = limiter ?? throw new ArgumentNullException(nameof(limiter));
        _time = time ?? throw new ArgumentNullException(nameof(time));
        _metrics = metrics;
        if (metrics is not null)
        {
            metrics.QueueDepth.WithLabels(name).Set(0);
            metrics.QueueAdds.WithLabels(name);
            metrics.QueueRetries.WithLabels(name);
            metrics.QueueUnfinishedWork.WithLabels(name);
            metrics.QueueLongestRunning.WithLabels(name);
            metrics.BeforeCollect(UpdateUnfinishedWork);
        }
    }

    public string Name { get; }

    /// <summary>Items waiting to be handed to a worker (not counting delayed ones or ones being processed).</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _queue.Count;
            }
        }
    }

    /// <summary>Items being processed right now.</summary>
    public int Processing
    {
        get
        {
            lock (_lock)
            {
                return _processing.Count;
            }
        }
    }

    /// <summary>Items waiting for a delay (AddAfter, AddRateLimited).</summary>
    public int Delayed
    {
        get
        {
            lock (_lock)
            {
                return _waiting.Count;
            }
        }
    }

    public bool IsShuttingDown
    {
        get
        {
            lock (_lock)
            {
                return _shuttingDown;
            }
        }
    }

    /// <summary>Queues <paramref name="key"/> unless it is already waiting; if it is being processed it is queued again after <see cref="Done"/>.</summary>
    public void Add(TKey key)
    {
        lock (_lock)
        {
            AddLocked(key);
        }
    }

    /// <summary>Queues <paramref name="key"/> after <paramref name="delay"/>; a key already waiting keeps the earlier of the two times.</summary>
    public void AddAfter(TKey key, TimeSpan delay)
    {
        if (delay <= TimeSpan.Zero)
        {
            Add(key);
            return;
        }

        lock (_lock)
        {
            if (_shuttingDown)
            {
                return;
            }

            var readyAt = _time.GetUtcNow() + delay;
            if (_waiting.TryGetValue(key, out var existing))
            {
                if (existing.ReadyAt <= readyAt)
                {
                    return;
                }

                existing.Timer.Dispose();
            }

            var timer = _time.CreateTimer(static state => ((WaitingCallback)state!).Fire(), new WaitingCallback(this, key, readyAt), Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            _waiting[key] = new Waiting(readyAt, timer);
            timer.Change(delay, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Queues <paramref name="key"/> after the rate limiter's delay (one more failure for that key).</summary>
    public void AddRateLimited(TKey key)
    {
        _metrics?.QueueRetries.WithLabels(Name).Inc();
        AddAfter(key, _limiter.When(key));
    }

    /// <summary>Clears the failure history of <paramref name="key"/>: its next failure waits the base delay again.</summary>
    public void Forget(TKey key) => _limiter.Forget(key);

    public int NumRequeues(TKey key) => _limiter.NumRequeues(key);

    /// <summary>
    /// Waits for the next item and marks it as processing; the caller must call <see cref="Done"/> with it.
    /// Returns an empty <see cref="Optional"/> once the queue is shut down and drained.
    /// </summary>
    public async Task<Optional> GetAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            await _available.WaitAsync(cancellationToken).ConfigureAwait(false);
            lock (_lock)
            {
                if (_queue.Count == 0)
                {
                    if (_shuttingDown)
                    {
                        // Let the other waiters see the shutdown too.
                        _available.Release();
                        return default;
                    }

                    continue;
                }

                var key = _queue.Dequeue();
                _metrics?.QueueDepth.WithLabels(Name).Set(_queue.Count);
                var now = _time.GetTimestamp();
                if (_enqueuedAt.Remove(key, out var enqueuedAt))
                {
                    _metrics?.QueueLatency.WithLabels(Name).Observe(_time.GetElapsedTime(enqueuedAt, now).TotalSeconds);
                }

                _processing[key] = now;
                _dirty.Remove(key);
                return new Optional(key);
            }
        }
    }

    /// <summary>Marks <paramref name="key"/> as no longer processed; if it was added meanwhile it is queued again.</summary>
    public void Done(TKey key)
    {
        lock (_lock)
        {
            if (_processing.Remove(key, out var started))
            {
                _metrics?.QueueWorkDuration.WithLabels(Name).Observe(_time.GetElapsedTime(started).TotalSeconds);
            }

            if (_dirty.Contains(key))
            {
                EnqueueLocked(key);
            }
        }
    }

    /// <summary>Stops accepting items; waiters get an empty result once the queue is drained. Delayed items are discarded.</summary>
    public void ShutDown()
    {
        lock (_lock)
        {
            if (_shuttingDown)
            {
                return;
            }

            _shuttingDown = true;
            foreach (var waiting in _waiting.Values)
            {
                waiting.Timer.Dispose();
            }

            _waiting.Clear();
            _available.Release();
        }
    }

    public void Dispose()
    {
        ShutDown();
        _available.Dispose();
    }

    private void AddLocked(TKey key)
    {
        if (_shuttingDown || !_dirty.Add(key))
        {
            return;
        }

        _metrics?.QueueAdds.WithLabels(Name).Inc();
        if (_processing.ContainsKey(key))
        {
            return;
        }

        EnqueueLocked(key);
    }

    private void EnqueueLocked(TKey key)
    {
        _queue.Enqueue(key);
        _enqueuedAt[key] = _time.GetTimestamp();
        _metrics?.QueueDepth.WithLabels(Name).Set(_queue.Count);
        _available.Release();
    }

    private void FireWaiting(TKey key, DateTimeOffset readyAt)
    {
        lock (_lock)
        {
            // A later AddAfter with an earlier time replaced this timer; only the current one may fire.
            if (!_waiting.TryGetValue(key, out var waiting) || waiting.ReadyAt != readyAt)
            {
                return;
            }

            _waiting.Remove(key);
            waiting.Timer.Dispose();
            AddLocked(key);
        }
    }

    private void UpdateUnfinishedWork()
    {
        if (_metrics is null)
        {
            return;
        }

        double total = 0;
        double longest = 0;
        lock (_lock)
        {
            var now = _time.GetTimestamp();
            foreach (var started in _processing.Values)
            {
                var seconds = _time.GetElapsedTime(started, now).TotalSeconds;
                total += seconds;
                longest = Math.Max(longest, seconds);
            }
        }

        _metrics.QueueUnfinishedWork.WithLabels(Name).Set(total);
        _metrics.QueueLongestRunning.WithLabels(Name).Set(longest);
    }

    /// <summary>An item from <see cref="GetAsync"/>, or none once the queue has shut down.</summary>
    public readonly record struct Optional(TKey Key)
    {
        public bool HasValue { get; } = true;
    }

    private sealed record Waiting(DateTimeOffset ReadyAt, ITimer Timer);

    private sealed class WaitingCallback(RateLimitingQueue<TKey> queue, TKey key, DateTimeOffset readyAt)
    {
        public void Fire() => queue.FireWaiting(key, readyAt);
    }
}
