namespace Lowbit.Operator.Runtime;

/// <summary>How long an item waits before it is retried (client-go's <c>TypedRateLimiter</c>).</summary>
public interface IRateLimiter<in TKey>
    where TKey : notnull
{
    /// <summary>Records one more failure of <paramref name="key"/> and returns how long to wait before retrying it.</summary>
    TimeSpan When(TKey key);

    /// <summary>Forgets the failure history of <paramref name="key"/> (call after a successful reconcile).</summary>
    void Forget(TKey key);

    /// <summary>How many times <paramref name="key"/> has been retried since it was last forgotten.</summary>
    int NumRequeues(TKey key);
}

/// <summary>Per-item exponential backoff: <c>baseDelay * 2^failures</c>, capped at <c>maxDelay</c>.</summary>
public sealed class ItemExponentialFailureRateLimiter<TKey> : IRateLimiter<TKey>
    where TKey : notnull
{
    private readonly Dictionary<TKey, int> _failures = [];
    private readonly Lock _lock = new();
    private readonly TimeSpan _baseDelay;
    private readonly TimeSpan _maxDelay;

    public ItemExponentialFailureRateLimiter(TimeSpan baseDelay, TimeSpan maxDelay)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(baseDelay, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxDelay, baseDelay);
        _baseDelay = baseDelay;
        _maxDelay = maxDelay;
    }

    public TimeSpan When(TKey key)
    {
        int exponent;
        lock (_lock)
        {
            _failures.TryGetValue(key, out exponent);
            _failures[key] = exponent + 1;
        }

        // 2^exponent overflows long ticks quickly; anything past the cap is the cap.
        if (exponent >= 62)
        {
            return _maxDelay;
        }

        var ticks = _baseDelay.Ticks * Math.Pow(2, exponent);
        return ticks >= _maxDelay.Ticks ? _maxDelay : TimeSpan.FromTicks((long)ticks);
    }

    public void Forget(TKey key)
    {
        lock (_lock)
        {
            _failures.Remove(key);
        }
    }

    public int NumRequeues(TKey key)
    {
        lock (_lock)
        {
            return _failures.TryGetValue(key, out var count) ? count : 0;
        }
    }
}

/// <summary>
/// An overall token bucket (golang <c>rate.Limiter</c> reservation semantics): <c>qps</c> tokens per second, at most
/// <c>burst</c> saved up; each retry takes one token, and when none is left the retry waits until one would be.
/// </summary>
public sealed class BucketRateLimiter<TKey> : IRateLimiter<TKey>
    where TKey : notnull
{
    private readonly TimeProvider _time;
    private readonly double _qps;
    private readonly double _burst;
    private readonly Lock _lock = new();
    private double _tokens;
    private DateTimeOffset _last;

    public BucketRateLimiter(double qps, int burst, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(qps, 0);
        ArgumentOutOfRangeException.ThrowIfLessThan(burst, 1);
        ArgumentNullException.ThrowIfNull(time);
        _qps = qps;
        _burst = burst;
        _time = time;
        _tokens = burst;
        _last = time.GetUtcNow();
    }

    public TimeSpan When(TKey key)
    {
        lock (_lock)
        {
            var now = _time.GetUtcNow();
            var elapsed = now - _last;
            if (elapsed > TimeSpan.Zero)
            {
                _tokens = Math.Min(_burst, _tokens + (elapsed.TotalSeconds * _qps));
                _last = now;
            }

            _tokens -= 1;
            return _tokens >= 0 ? TimeSpan.Zero : TimeSpan.FromSeconds(-_tokens / _qps);
        }
    }

    public void Forget(TKey key)
    {
    }

    public int NumRequeues(TKey key) => 0;
}

/// <summary>The longest wait any of its limiters asks for (client-go's <c>MaxOfRateLimiter</c>).</summary>
public sealed class MaxOfRateLimiter<TKey>(params IRateLimiter<TKey>[] limiters) : IRateLimiter<TKey>
    where TKey : notnull
{
    private readonly IRateLimiter<TKey>[] _limiters = limiters.Length > 0
        ? limiters
        : throw new ArgumentException("at least one rate limiter is required", nameof(limiters));

    public TimeSpan When(TKey key)
    {
        var longest = TimeSpan.Zero;
        foreach (var limiter in _limiters)
        {
            var wait = limiter.When(key);
            if (wait > longest)
            {
                longest = wait;
            }
        }

        return longest;
    }

    public void Forget(TKey key)
    {
        foreach (var limiter in _limiters)
        {
            limiter.Forget(key);
        }
    }

    public int NumRequeues(TKey key) => _limiters.Max(l => l.NumRequeues(key));
}

/// <summary>client-go's <c>DefaultTypedControllerRateLimiter</c>: MaxOf(5 ms → 1000 s per item, 10 qps / burst 100).</summary>
public static class DefaultControllerRateLimiter
{
    public static readonly TimeSpan BaseDelay = TimeSpan.FromMilliseconds(5);
    public static readonly TimeSpan MaxDelay = TimeSpan.FromSeconds(1000);
    public const double Qps = 10;
    public const int Burst = 100;

    public static IRateLimiter<TKey> Create<TKey>(TimeProvider time)
        where TKey : notnull
        => Create<TKey>(time, BaseDelay, MaxDelay, Qps, Burst);

    public static IRateLimiter<TKey> Create<TKey>(TimeProvider time, TimeSpan baseDelay, TimeSpan maxDelay, double qps, int burst)
        where TKey : notnull
        => new MaxOfRateLimiter<TKey>(
            new ItemExponentialFailureRateLimiter<TKey>(baseDelay, maxDelay),
            new BucketRateLimiter<TKey>(qps, burst, time));
}
