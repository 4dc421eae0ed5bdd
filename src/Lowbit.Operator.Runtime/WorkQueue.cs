namespace Lowbit.Operator.Runtime;

/// <summary>
/// client-go's rate-limiting work queue: an item is processed by one worker at a time (the dirty and processing
/// sets), repeated adds of a waiting item coalesce into one, an item added while it is being processed is queued
/// again when <see cref="Done"/> is called, delayed adds keep the earliest ready time, and retries wait for the
/// rate limiter. Nothing is ever dropped: an item that keeps failing waits up to the limiter's cap. Delayed items
/// wait in one priority queue behind one timer set to the earliest ready time (not a timer per item: at 10,000
/// objects that each requeue after a poll interval, timers were ~350 bytes per key).
/// </summary>
public sealed class RateLimitingQueue<TKey> : IDisposable
    where TKey : notnull
{
    private readonly Lock _lock = new();
    private readonly Queue<TKey> _queue = new();
    private readonly HashSet<TKey> _dirty = [];
    private readonly Dictionary<TKey, long> _processing = [];
    private readonly Dictionary<TKey, long> _enqueuedAt = [];
    private readonly Dictionary<TKey, DateTimeOffset> _waiting = [];
    private readonly PriorityQueue<TKey, DateTimeOffset> _delayed = new();
    private readonly ITimer _timer;
    private DateTimeOffset? _timerDue;
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
        _timer = time.CreateTimer(static state => ((RateLimitingQueue<TKey>)state!).FireDue(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
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

            var now = _time.GetUtcNow();
            var readyAt = now + delay;
            if (_waiting.TryGetValue(key, out var existing) && existing <= readyAt)
            {
                return;
            }

            // A replaced entry stays in the priority queue and is skipped when it comes up (its time no longer matches).
            _waiting[key] = readyAt;
            _delayed.Enqueue(key, readyAt);
            if (_timerDue is null || readyAt < _timerDue)
            {
                _timerDue = readyAt;
                _timer.Change(delay, Timeout.InfiniteTimeSpan);
            }
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
            _timer.Dispose();
            _waiting.Clear();
            _delayed.Clear();
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

    /// <summary>The timer fired: queue every delayed item that is due, then set the timer to the next one.</summary>
    private void FireDue()
    {
        lock (_lock)
        {
            if (_shuttingDown)
            {
                return;
            }

            var now = _time.GetUtcNow();
            while (_delayed.TryPeek(out var key, out var readyAt) && readyAt <= now)
            {
                _delayed.Dequeue();

                // Only the key's current entry counts: an AddAfter with an earlier time superseded the others.
                if (_waiting.TryGetValue(key, out var current) && current == readyAt)
                {
                    _waiting.Remove(key);
                    AddLocked(key);
                }
            }

            if (_delayed.Count == 0 && _waiting.Count == 0)
            {
                // Nothing waits; drop the stale entries' storage as well.
                _delayed.TrimExcess();
            }

            _timerDue = _delayed.TryPeek(out _, out var next) ? next : null;
            if (_timerDue is { } due)
            {
                _timer.Change(due > now ? due - now : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
            }
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

}
