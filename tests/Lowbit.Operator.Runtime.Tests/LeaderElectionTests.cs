using Lowbit.Operator.Runtime.Tests.Support;
using Lowbit.Operator.Runtime;
using Microsoft.Extensions.Logging.Abstractions;
using static Lowbit.Operator.Runtime.Tests.Support.TestSupport;

namespace Lowbit.Operator.Runtime.Tests;

/// <summary>T1: two electors on one Lease served by the in-test API server.</summary>
public sealed class LeaderElectionTests : IAsyncLifetime
{
    private static readonly LeaderElectionOptions Fast = new()
    {
        LeaseName = "lowbit-operator",
        LeaseDuration = TimeSpan.FromSeconds(3),
        RenewDeadline = TimeSpan.FromSeconds(1.5),
        RetryPeriod = TimeSpan.FromSeconds(0.2),
    };

    private FakeApiServer _server = null!;
    private readonly Lock _lock = new();
    private readonly List<string> _leaders = [];
    private int _leading;
    private int _maxLeading;

    public async Task InitializeAsync() => _server = await FakeApiServer.StartAsync();

    public async Task DisposeAsync() => await _server.DisposeAsync();

    private (LeaderElection Election, RuntimeMetrics Metrics) Elector(string identity)
    {
        var metrics = new RuntimeMetrics();
        return (new LeaderElection(Client(_server, metrics), Fast, "default", identity, TimeProvider.System, metrics, NullLogger<LeaderElection>.Instance), metrics);
    }

    private Func<CancellationToken, Task> Lead(string identity) => async ct =>
    {
        var now = Interlocked.Increment(ref _leading);
        lock (_lock)
        {
            _leaders.Add(identity);
            _maxLeading = Math.Max(_maxLeading, now);
        }

        try
        {
            await Task.Delay(Timeout.Infinite, ct);
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            Interlocked.Decrement(ref _leading);
        }
    };

    private string? Leader(int index)
    {
        lock (_lock)
        {
            return _leaders.Count > index ? _leaders[index] : null;
        }
    }

    private int LeaseRequests => _server.Journal.Count(e => e.Path.Contains("leases", StringComparison.Ordinal));

    [Fact]
    public async Task Does_let_one_of_two_lead_and_hand_over_when_the_leader_stops()
    {
        var (a, metricsA) = Elector("a");
        var (b, metricsB) = Elector("b");
        using var stopA = new CancellationTokenSource();
        using var stopB = new CancellationTokenSource();
        var runA = a.RunAsync(Lead("a"), stopA.Token);
        var runB = b.RunAsync(Lead("b"), stopB.Token);

        await Eventually(() => Leader(0) is not null, "a leader");
        var first = Leader(0)!;
        var requests = LeaseRequests;
        await Eventually(() => LeaseRequests > requests + 20, "both keep campaigning and renewing");
        Assert.Equal(1, Volatile.Read(ref _leading));
        Assert.Equal(first == "a" ? 1 : 0, metricsA.LeaderStatus.WithLabels("lowbit-operator").Value);
        Assert.Equal(first == "b" ? 1 : 0, metricsB.LeaderStatus.WithLabels("lowbit-operator").Value);

        var (stop, run) = first == "a" ? (stopA, runA) : (stopB, runB);
        await stop.CancelAsync();
        var lost = await run.WaitAsync(Patience);
        await Eventually(() => Leader(1) is not null, "the other takes over");

        Assert.False(lost); // stopped, not lost
        Assert.NotEqual(first, Leader(1));
        Assert.Equal(1, _maxLeading);
        Assert.True(first == "a" ? !a.IsLeader && b.IsLeader : !b.IsLeader && a.IsLeader);

        await (first == "a" ? stopB : stopA).CancelAsync();
        await Task.WhenAll(runA, runB).WaitAsync(Patience);
    }

    [Fact]
    public async Task Does_stop_the_leading_work_and_report_loss_when_renewals_fail()
    {
        var (a, metricsA) = Elector("a");
        using var stopA = new CancellationTokenSource();
        var runA = a.RunAsync(Lead("a"), stopA.Token);
        await Eventually(() => Leader(0) == "a", "a leads");
        var (b, _) = Elector("b");
        using var stopB = new CancellationTokenSource();
        var runB = b.RunAsync(Lead("b"), stopB.Token);

        _server.Fail(e => e.Method == "PUT" && e.Path.Contains("leases", StringComparison.Ordinal), 500, times: 100_000);
        var lost = await runA.WaitAsync(Patience);
        _server.ClearFaults();
        await Eventually(() => Leader(1) == "b", "b takes over once the lease expires");

        Assert.True(lost);
        Assert.False(a.IsLeader);
        Assert.Equal(0, metricsA.LeaderStatus.WithLabels("lowbit-operator").Value);
        Assert.Equal(1, _maxLeading);

        await stopB.CancelAsync();
        await runB.WaitAsync(Patience);
    }

    [Fact]
    public async Task Does_count_lease_errors_and_never_lead_while_the_lease_is_forbidden()
    {
        _server.Fail(e => e.Path.Contains("leases", StringComparison.Ordinal), 403, times: 100_000);
        var (a, metrics) = Elector("a");
        using var stop = new CancellationTokenSource();
        var run = a.RunAsync(Lead("a"), stop.Token);

        await Eventually(() => metrics.LeaderElectionErrors.WithLabels("lowbit-operator").Value >= 3, "lease errors counted");

        Assert.False(a.IsLeader);
        Assert.Null(Leader(0));
        Assert.Equal(0, metrics.LeaderStatus.WithLabels("lowbit-operator").Value);
        await stop.CancelAsync();
        Assert.False(await run.WaitAsync(Patience));
    }
}
