using System.Collections.Concurrent;
using Lowbit.Operator.Runtime.Tests.Support;
using Lowbit.Operator.Runtime;

namespace Lowbit.Operator.Runtime.Tests;

public sealed class WorkQueueTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    private static RateLimitingQueue<string> NewQueue(FakeTimeProvider time, RuntimeMetrics? metrics = null) =>
        new("test", DefaultControllerRateLimiter.Create<string>(time), time, metrics);

    [Fact]
    public async Task Does_coalesce_repeated_adds_of_a_waiting_key()
    {
        var time = new FakeTimeProvider();
        var metrics = new RuntimeMetrics();
        using var queue = NewQueue(time, metrics);

        for (var i = 0; i < 100; i++)
        {
            queue.Add("a");
        }

        queue.Add("b");

        Assert.Equal(2, queue.Count);
        Assert.Equal(2, metrics.QueueAdds.WithLabels("test").Value);
        var first = await queue.GetAsync(CancellationToken.None).WaitAsync(Patience);
        Assert.Equal("a", first.Key);
        Assert.Equal(1, metrics.QueueDepth.WithLabels("test").Value);
    }

    [Fact]
    public async Task Does_requeue_a_key_added_while_processing_once_it_is_done()
    {
        var time = new FakeTimeProvider();
        using var queue = NewQueue(time);
        queue.Add("a");
        var item = await queue.GetAsync(CancellationToken.None).WaitAsync(Patience);

        queue.Add("a");
        queue.Add("a");

        Assert.Equal(0, queue.Count); // not handed to a second worker while the first holds it
        queue.Done(item.Key);
        Assert.Equal(1, queue.Count);
        var again = await queue.GetAsync(CancellationToken.None).WaitAsync(Patience);
        Assert.Equal("a", again.Key);
    }

    [Fact]
    public async Task Does_not_hand_one_key_to_two_workers_at_once()
    {
        var time = new FakeTimeProvider();
        using var queue = NewQueue(time);
        var inFlight = new ConcurrentDictionary<string, int>();
        var processed = 0;
        var overlaps = 0;
        using var stop = new CancellationTokenSource();

        async Task Worker()
        {
            while (!stop.IsCancellationRequested)
            {
                RateLimitingQueue<string>.Optional item;
                try
                {
                    item = await queue.GetAsync(stop.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                if (inFlight.AddOrUpdate(item.Key, 1, (_, n) => n + 1) > 1)
                {
                    Interlocked.Increment(ref overlaps);
                }

                await Task.Yield();
                inFlight.AddOrUpdate(item.Key, 0, (_, n) => n - 1);
                Interlocked.Increment(ref processed);
                queue.Done(item.Key);
            }
        }

        var workers = Enumerable.Range(0, 8).Select(_ => Task.Run(Worker)).ToList();
        var producers = Enumerable.Range(0, 4).Select(p => Task.Run(() =>
        {
            for (var i = 0; i < 5000; i++)
            {
                queue.Add($"key-{i % 5}");
            }
        })).ToList();
        await Task.WhenAll(producers).WaitAsync(Patience);
        while (queue.Count > 0 || queue.Processing > 0)
        {
            await Task.Delay(5);
        }

        await stop.CancelAsync();
        await Task.WhenAll(workers).WaitAsync(Patience);

        Assert.Equal(0, overlaps);
        Assert.InRange(processed, 5, 20000); // coalescing: far fewer than 20 000 adds
    }

    [Fact]
    public async Task Does_add_after_the_delay_and_keep_the_earliest_time()
    {
        var time = new FakeTimeProvider();
        using var queue = NewQueue(time);

        queue.AddAfter("a", TimeSpan.FromSeconds(10));
        queue.AddAfter("a", TimeSpan.FromSeconds(3));
        queue.AddAfter("a", TimeSpan.FromSeconds(30));

        Assert.Equal(0, queue.Count);
        Assert.Equal(1, queue.Delayed);
        time.Advance(TimeSpan.FromSeconds(2.9));
        Assert.Equal(0, queue.Count);
        time.Advance(TimeSpan.FromSeconds(0.1));
        Assert.Equal(1, queue.Count);
        Assert.Equal(0, queue.Delayed);
        var item = await queue.GetAsync(CancellationToken.None).WaitAsync(Patience);
        Assert.Equal("a", item.Key);
    }

    [Fact]
    public async Task Does_release_delayed_keys_in_due_order_behind_a_single_timer()
    {
        var time = new FakeTimeProvider();
        using var queue = NewQueue(time);

        for (var i = 0; i < 1000; i++)
        {
            queue.AddAfter($"k{i}", TimeSpan.FromSeconds(1000 - i));
        }

        queue.AddAfter("k0", TimeSpan.FromSeconds(0.5)); // moved earlier: fires once, at the new time

        Assert.Equal(1000, queue.Delayed);
        Assert.Single(time.PendingDueTimes);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromSeconds(0.5), time.PendingDueTimes[0]);

        time.Advance(TimeSpan.FromSeconds(0.5));
        Assert.Equal(1, queue.Count);
        Assert.Equal("k0", (await queue.GetAsync(CancellationToken.None).WaitAsync(Patience)).Key);
        queue.Done("k0");

        time.Advance(TimeSpan.FromSeconds(2.5)); // k999 (1 s), k998 (2 s), k997 (3 s)
        var released = new List<string>();
        while (queue.Count > 0)
        {
            var item = await queue.GetAsync(CancellationToken.None).WaitAsync(Patience);
            released.Add(item.Key);
            queue.Done(item.Key);
        }

        Assert.Equal(["k999", "k998", "k997"], released);
        Assert.Equal(996, queue.Delayed);
        Assert.Single(time.PendingDueTimes);

        // k0's superseded 1000 s entry is skipped: after everything is due, each key came out exactly once.
        time.Advance(TimeSpan.FromSeconds(1000));
        Assert.Equal(996, queue.Count);
        Assert.Equal(0, queue.Delayed);
        Assert.Empty(time.PendingDueTimes);
    }

    [Fact]
    public void Does_wait_the_backoff_for_rate_limited_adds_and_restart_after_forget()
    {
        var time = new FakeTimeProvider();
        var metrics = new RuntimeMetrics();
        using var queue = NewQueue(time, metrics);

        queue.AddRateLimited("a"); // 5 ms
        time.Advance(TimeSpan.FromMilliseconds(4));
        Assert.Equal(0, queue.Count);
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, queue.Count);

        queue.AddRateLimited("b");
        queue.AddRateLimited("b"); // b already waits 5 ms; its second failure (10 ms) keeps the earlier time
        Assert.Equal(2, queue.NumRequeues("b"));
        queue.Forget("b");
        Assert.Equal(0, queue.NumRequeues("b"));
        Assert.Equal(3, metrics.QueueRetries.WithLabels("test").Value);
    }

    [Fact]
    public async Task Does_drain_then_end_waiters_after_shutdown()
    {
        var time = new FakeTimeProvider();
        using var queue = NewQueue(time);
        queue.Add("a");
        queue.ShutDown();
        queue.Add("b"); // ignored after shutdown

        var first = await queue.GetAsync(CancellationToken.None).WaitAsync(Patience);
        var second = await queue.GetAsync(CancellationToken.None).WaitAsync(Patience);
        var third = await queue.GetAsync(CancellationToken.None).WaitAsync(Patience);

        Assert.True(first.HasValue);
        Assert.Equal("a", first.Key);
        Assert.False(second.HasValue);
        Assert.False(third.HasValue);
    }

    [Fact]
    public async Task Does_report_unfinished_and_longest_running_work_at_scrape()
    {
        var time = new FakeTimeProvider();
        var metrics = new RuntimeMetrics();
        using var queue = NewQueue(time, metrics);
        queue.Add("a");
        queue.Add("b");
        await queue.GetAsync(CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(3));
        await queue.GetAsync(CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(2));

        using var stream = new MemoryStream();
        await metrics.Registry.CollectAndExportAsTextAsync(stream);

        Assert.Equal(7, metrics.QueueUnfinishedWork.WithLabels("test").Value, precision: 6);
        Assert.Equal(5, metrics.QueueLongestRunning.WithLabels("test").Value, precision: 6);
        Assert.Equal(0, metrics.QueueDepth.WithLabels("test").Value);
    }
}
