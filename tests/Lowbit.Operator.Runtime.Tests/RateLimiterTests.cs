using Lowbit.Operator.Runtime.Tests.Support;
using Lowbit.Operator.Runtime;

namespace Lowbit.Operator.Runtime.Tests;

public sealed class RateLimiterTests
{
    [Fact]
    public void Does_double_from_5ms_up_to_the_1000s_cap_and_reset_after_forget()
    {
        var limiter = new ItemExponentialFailureRateLimiter<string>(TimeSpan.FromMilliseconds(5), TimeSpan.FromSeconds(1000));

        var delays = Enumerable.Range(0, 30).Select(_ => limiter.When("a")).ToList();

        Assert.Equal(
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560],
            delays.Take(10).Select(d => d.TotalMilliseconds));
        Assert.Equal(TimeSpan.FromMilliseconds(5 * Math.Pow(2, 17)), delays[17]); // 655.36 s, still under the cap
        Assert.Equal(TimeSpan.FromSeconds(1000), delays[18]);
        Assert.All(delays.Skip(18), d => Assert.Equal(TimeSpan.FromSeconds(1000), d));
        Assert.Equal(30, limiter.NumRequeues("a"));

        limiter.Forget("a");

        Assert.Equal(0, limiter.NumRequeues("a"));
        Assert.Equal(TimeSpan.FromMilliseconds(5), limiter.When("a"));
    }

    [Fact]
    public void Does_track_keys_independently()
    {
        var limiter = new ItemExponentialFailureRateLimiter<string>(TimeSpan.FromMilliseconds(5), TimeSpan.FromSeconds(1000));
        limiter.When("a");
        limiter.When("a");

        Assert.Equal(TimeSpan.FromMilliseconds(5), limiter.When("b"));
        Assert.Equal(TimeSpan.FromMilliseconds(20), limiter.When("a"));
    }

    [Fact]
    public void Does_not_overflow_after_thousands_of_failures()
    {
        var limiter = new ItemExponentialFailureRateLimiter<int>(TimeSpan.FromMilliseconds(5), TimeSpan.FromSeconds(1000));

        var last = TimeSpan.Zero;
        for (var i = 0; i < 5000; i++)
        {
            last = limiter.When(1);
        }

        Assert.Equal(TimeSpan.FromSeconds(1000), last);
    }

    [Fact]
    public void Does_allow_a_burst_of_100_then_10_per_second()
    {
        var time = new FakeTimeProvider();
        var bucket = new BucketRateLimiter<int>(qps: 10, burst: 100, time);

        var burst = Enumerable.Range(0, 100).Select(i => bucket.When(i)).ToList();
        var over = Enumerable.Range(100, 3).Select(i => bucket.When(i)).ToList();

        Assert.All(burst, d => Assert.Equal(TimeSpan.Zero, d));
        Assert.Equal([100, 200, 300], over.Select(d => Math.Round(d.TotalMilliseconds)));

        // One second later 10 tokens came back, of which the 3 reservations above already owe 3.
        time.Advance(TimeSpan.FromSeconds(1));
        var refilled = Enumerable.Range(0, 8).Select(i => bucket.When(i)).ToList();
        Assert.Equal(7, refilled.Count(d => d == TimeSpan.Zero));
        Assert.Equal(100, Math.Round(refilled[^1].TotalMilliseconds));
    }

    [Fact]
    public void Does_take_the_longest_wait_of_item_backoff_and_bucket()
    {
        var time = new FakeTimeProvider();
        var limiter = DefaultControllerRateLimiter.Create<string>(time);

        // Per-item backoff dominates while the bucket has tokens.
        Assert.Equal(TimeSpan.FromMilliseconds(5), limiter.When("a"));
        Assert.Equal(TimeSpan.FromMilliseconds(10), limiter.When("a"));

        // Drain the bucket with other keys: a fresh key now waits for the bucket, not 5 ms.
        for (var i = 0; i < 98; i++)
        {
            limiter.When($"k{i}");
        }

        Assert.Equal(100, Math.Round(limiter.When("fresh").TotalMilliseconds));
        Assert.Equal(1, limiter.NumRequeues("fresh"));

        limiter.Forget("a");
        Assert.Equal(0, limiter.NumRequeues("a"));
    }
}
