using System.Diagnostics;
using System.Net;
using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.LocalCluster;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Store;
using Lowbit.LocalCluster.Testing;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Tests.Reconcilers;
using Lowbit.Planner;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace Lowbit.Operator.Tests.OutOfProcess;

/// <summary>
/// Failure scenarios with the operator as a real OS process (<see cref="OperatorProcess"/>) against the embedded
/// API server over HTTPS, with our CRDs installed and simulated catalog nodes running the Deployments: a stalled
/// watch, a delete missed behind a 410, SIGTERM mid-reconcile, two instances under leader election with the leader
/// SIGKILLed, a leader that cannot renew its Lease, 429 and 409 storms.
/// </summary>
[Collection("OperatorServer")]
public sealed class OperatorProcessTests : IAsyncLifetime
{
    private const string Lease = "lowbit-operator";

    /// <summary>Short leader-election timings so a fail-over fits in a test (validated at start like any setting).</summary>
    private static readonly string[] FastLease =
    [
        "--Operator:LeaderElection:LeaseDuration=00:00:03",
        "--Operator:LeaderElection:RenewDeadline=00:00:02",
        "--Operator:LeaderElection:RetryPeriod=00:00:00.500",
    ];

    private static readonly string[] NoLeaderElection = ["--Operator:LeaderElection:Enabled=false"];

    private readonly ITestOutputHelper _output;
    private readonly List<OperatorProcess> _operators = [];
    private readonly CancellationTokenSource _stop = new();
    private LocalClusterServer _server = null!;
    private SimulatedCluster _cluster = null!;

    public OperatorProcessTests(ITestOutputHelper output) => _output = output;

    public async Task InitializeAsync()
    {
        _server = await LocalClusterServer.StartAsync(new LocalClusterOptions
        {
            Store = new ClusterApiOptions { GracefulPodDeletion = true, BookmarkInterval = TimeSpan.FromMilliseconds(500) },
        });
        foreach (var file in Directory.GetFiles(Path.Combine(OperatorHarness.RepoRoot, "crds"), "*.yaml"))
        {
            _server.Api.Create(KubernetesYaml.Deserialize<V1CustomResourceDefinition>(await File.ReadAllTextAsync(file)));
        }

        _cluster = await SimulatedCluster.StartAsync(_server.Api, _server.Logs, new ClusterSimulationOptions
        {
            Nodes = OperatorHarness.CatalogNodes(GpuCatalog.Default),
            Kubelet = new KubeletOptions { SimulatedRunDuration = TimeSpan.FromMilliseconds(200) },
        }, TimeProvider.System, NullLoggerFactory.Instance);
    }

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        _stop.Dispose();
        foreach (var op in _operators)
        {
            await op.DisposeAsync();
        }

        await _cluster.DisposeAsync();
        await _server.DisposeAsync();
    }

    [Fact]
    public async Task Does_reconcile_a_change_made_while_its_watch_stalls_once_the_idle_watchdog_reconnects()
    {
        // The operator's first InferenceEndpoint watch is accepted and then never sends a byte (no events, no bookmarks).
        _server.Faults.BreakNextWatch(WatchFault.Stall, "/inferenceendpoints");
        var op = await StartAsync("stall", [.. NoLeaderElection, "--Operator:WatchIdleTimeout=00:00:02"]);
        await op.WaitReadyAsync();

        Create(Endpoint("during-stall"));
        await WaitReadyAsync("during-stall");

        // The journal records a request when it ends: the stalled watch is there, its successor is still open.
        var stalled = Requests(op, "watch", "/inferenceendpoints").First();
        var firstWrite = Requests(op, write: true).First(e => e.Path.Contains("during-stall", StringComparison.Ordinal));
        Assert.True(firstWrite.Time >= stalled.Time, $"first write at {firstWrite.Time:O}, before the stalled watch ended at {stalled.Time:O}");
        Assert.True(await op.MetricAsync("lowbit_watch_reconnects_total{kind=\"inferenceendpoint\",reason=\"idle\"}") >= 1);
    }

    [Fact]
    public async Task Does_learn_of_a_delete_missed_while_disconnected_through_the_relist_after_410()
    {
        // The first endpoint watch stalls; the one after it is told 410 Expired.
        _server.Faults.BreakNextWatch(WatchFault.Stall, "/inferenceendpoints");
        _server.Faults.BreakNextWatch(WatchFault.Expire, "/inferenceendpoints");
        Create(Endpoint("missed"));
        var op = await StartAsync("relist", [.. NoLeaderElection, "--Operator:WatchIdleTimeout=00:00:04"]);
        await op.WaitReadyAsync();
        Assert.Equal(1, await op.MetricAsync("lowbit_informer_objects{kind=\"inferenceendpoint\"}"));

        var deleted = DateTimeOffset.UtcNow;
        _server.Api.Delete<InferenceEndpoint>("default", "missed");
        await op.WaitAsync(async () => await op.MetricAsync("lowbit_informer_objects{kind=\"inferenceendpoint\"}") == 0, "the delete reaches the cache");

        Assert.Equal(1, await op.MetricAsync("lowbit_watch_relists_total{kind=\"inferenceendpoint\",reason=\"expired\"}"));
        Assert.Equal(0, await op.MetricAsync("lowbit_watch_events_total{kind=\"inferenceendpoint\",type=\"deleted\"}") ?? 0); // not from a watch event

        // Meanwhile the garbage collector deleted the children and each deletion requeued the stale key: after one
        // 404 on its own status the controller waits for its cache instead of re-creating children in a loop.
        var afterDelete = Requests(op, write: true).Where(e => e.Time > deleted && e.Path.Contains("/missed", StringComparison.Ordinal)).ToList();
        Assert.True(afterDelete.Count(e => e.Status == 404) <= 1, $"{afterDelete.Count(e => e.Status == 404)} writes answered 404");
        Assert.True(afterDelete.Count(e => e.Path.EndsWith("/deployments/missed-inference", StringComparison.Ordinal)) <= 1, $"{afterDelete.Count} writes for the deleted endpoint");
        Create(Endpoint("after"));
        await WaitReadyAsync("after"); // watching again
    }

    [Fact]
    public async Task Does_exit_zero_release_the_lease_and_leave_a_successor_converging_when_sigterm_lands_mid_reconcile()
    {
        // Default lease timings (15/10/2 s): without the release a successor would wait up to 15 s.
        var first = await StartAsync("first", []);
        await first.WaitReadyAsync();
        _server.Faults.DelayNext(1, TimeSpan.FromMinutes(2), verb: "update", pathContains: "/inferenceendpoints/handover/status");
        var statuses = ObserveStatuses("handover");
        Create(Endpoint("handover"));
        await first.WaitAsync(() => Task.FromResult(_server.Faults.HeldRequests == 1), "its status write held by the server");
        var children = (Deployment: _server.Api.Get<V1Deployment>("default", "handover-inference").Metadata.Uid, Service: _server.Api.Get<V1Service>("default", "handover-inference").Metadata.Uid);

        var stopwatch = Stopwatch.StartNew();
        await first.TerminateAsync();
        var exitCode = await first.WaitForExitAsync(TimeSpan.FromSeconds(10));
        var exitedAfter = stopwatch.Elapsed;

        Assert.True(exitCode == 0, $"exit code {exitCode?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none within 10 s"}:\n{first.Transcript()}");
        Assert.Contains(first.Output, l => l.Contains("Shutdown complete", StringComparison.Ordinal));
        Assert.Contains(first.Output, l => l.Contains("first released lease", StringComparison.Ordinal));
        Assert.Contains(Requests(first, "update", "/inferenceendpoints/handover/status"), e => e.Status == 499); // cancelled in flight
        Assert.True(string.IsNullOrEmpty(_server.Api.Get<V1Lease>("default", Lease).Spec.HolderIdentity));

        _server.Faults.Clear();
        var secondStarted = Stopwatch.StartNew();
        var second = await StartAsync("second", []);
        await second.WaitReadyAsync();
        var leadingAfter = secondStarted.Elapsed;
        var ready = await WaitReadyAsync("handover");

        // Acquired at its first attempt (one read, then the write that took it), not after waiting out 15 s.
        var leaseRequests = Requests(second, pathContains: "/leases/").ToList();
        var taken = leaseRequests.FindIndex(e => e.IsWrite);
        Assert.True(taken == 1 && leaseRequests[1].Status is 200 or 201, $"lease requests of the successor: {string.Join(", ", leaseRequests.Select(e => $"{e.Verb} {e.Status}"))}");
        Assert.Equal("second", _server.Api.Get<V1Lease>("default", Lease).Spec.HolderIdentity);
        var deployment = Assert.Single(Owned<V1Deployment>(ready));
        var service = Assert.Single(Owned<V1Service>(ready));
        Assert.Equal(children, (deployment.Metadata.Uid, service.Metadata.Uid)); // adopted, not recreated
        Assert.Single(_server.Api.List<V1Deployment>("default"));
        Assert.Single(_server.Api.List<V1Service>("default"), s => s.Metadata.Name != "kubernetes");
        Assert.DoesNotContain(Requests(first, write: true), e => e.Path.EndsWith("/status", StringComparison.Ordinal) && e.Status < 300);
        await AssertNoRegressionAsync(statuses, ready);
        _output.WriteLine($"exited {exitedAfter.TotalSeconds:0.00} s after SIGTERM; successor led {leadingAfter.TotalSeconds:0.00} s after its start");
        _output.WriteLine(string.Join('\n', first.Output.TakeLast(8)));
    }

    [Fact]
    public async Task Does_write_only_from_the_leader_and_fail_over_after_the_lease_expires_when_the_leader_is_killed()
    {
        var alpha = await StartAsync("alpha", FastLease);
        await alpha.WaitReadyAsync();
        var beta = await StartAsync("beta", FastLease);
        await beta.WaitAsync(async () => await beta.MetricAsync("lowbit_informer_synced{kind=\"inferenceendpoint\"}") == 1, "beta's caches synced");

        Create(Endpoint("one"));
        await WaitReadyAsync("one");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, await beta.ReadyzAsync());
        Assert.Equal(0, await beta.MetricAsync($"leader_election_master_status{{name=\"{Lease}\"}}"));
        Assert.Equal(1, await alpha.MetricAsync($"leader_election_master_status{{name=\"{Lease}\"}}"));
        Assert.NotEmpty(Requests(alpha, write: true));
        Assert.Empty(Requests(beta, write: true));
        Assert.NotEmpty(Requests(beta, "get", "/leases/")); // it campaigns, reading the lease

        alpha.Kill();
        var killed = Stopwatch.StartNew();
        Assert.Equal("alpha", _server.Api.Get<V1Lease>("default", Lease).Spec.HolderIdentity); // SIGKILL releases nothing
        Create(Endpoint("two"));
        await beta.WaitAsync(() => Task.FromResult(_server.Api.Get<V1Lease>("default", Lease).Spec.HolderIdentity == "beta"), "beta holds the lease");
        var takeover = killed.Elapsed;
        await WaitReadyAsync("two");
        _output.WriteLine($"beta took over {takeover.TotalSeconds:0.00} s after alpha was killed (lease 3 s, retry 0.5 s)");

        // The lease lasts 3 s from beta's last sighting of a renewal (renewals come every 0.5 s).
        Assert.True(takeover >= TimeSpan.FromSeconds(2), $"beta took over {takeover.TotalSeconds:0.00} s after the kill, before the lease expired");
        Assert.Equal(HttpStatusCode.OK, await beta.ReadyzAsync());
        Assert.Equal(1, await beta.MetricAsync($"leader_election_master_status{{name=\"{Lease}\"}}"));
        Assert.Contains(Requests(beta, write: true), e => e.Path.EndsWith("/inferenceendpoints/two/status", StringComparison.Ordinal) && e.Status == 200);
        Assert.DoesNotContain(Requests(alpha, write: true), e => e.Path.Contains("/two", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Does_stop_reconciling_and_exit_one_when_it_cannot_renew_its_lease()
    {
        var op = await StartAsync("cut-off", FastLease);
        await op.WaitReadyAsync();
        Create(Endpoint("before"));
        await WaitReadyAsync("before");

        // Every renewal now fails (the API server answers 500): past the 2 s renew deadline leadership is lost.
        _server.Faults.FailNext(10_000, 500, verb: "update", pathContains: "/leases/" + Lease);
        var failing = Stopwatch.StartNew();
        var exitCode = await op.WaitForExitAsync(TimeSpan.FromSeconds(20));
        _output.WriteLine($"exited {exitCode} {failing.Elapsed.TotalSeconds:0.00} s after lease renewals began failing (renew deadline 2 s)");
        _output.WriteLine(string.Join('\n', op.Output.TakeLast(6)));

        Assert.True(exitCode == 1, $"exit code {exitCode?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none within 20 s"}:\n{op.Transcript()}");
        Assert.Contains(op.Output, l => l.Contains("cut-off lost leadership of lease lowbit-operator", StringComparison.Ordinal));
        Assert.DoesNotContain(op.Output, l => l.Contains("released lease", StringComparison.Ordinal)); // a lost lease is not ours to release
    }

    [Fact]
    public async Task Does_converge_through_429_with_retry_after_and_a_409_storm_on_status_writes()
    {
        var op = await StartAsync("busy", NoLeaderElection);
        await op.WaitReadyAsync();
        const string StatusPath = "/inferenceendpoints/throttled/status";
        _server.Faults.FailNext(1, 429, verb: "update", pathContains: StatusPath, retryAfterSeconds: 2);
        _server.Faults.FailNext(5, 409, verb: "update", pathContains: StatusPath, message: "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again");

        Create(Endpoint("throttled"));
        await WaitReadyAsync("throttled");

        var writes = Requests(op, "update", StatusPath).ToList();
        Assert.Equal(429, writes[0].Status);
        var waited = writes[1].Time - writes[0].Time;
        _output.WriteLine($"status write retried {waited.TotalSeconds:0.000} s after a 429 with Retry-After: 2; {writes.Count} status writes in all");
        Assert.True(waited >= TimeSpan.FromSeconds(2), $"retried {waited.TotalSeconds:0.000} s after a 429 with Retry-After: 2");
        Assert.Equal(5, writes.Count(e => e.Status == 409));
        Assert.Equal(200, writes[^1].Status);
        Assert.Equal(1, await op.MetricAsync("lowbit_rest_client_retries_total{code=\"429\",method=\"PUT\"}"));
        Assert.Equal(0, await op.MetricAsync("controller_runtime_reconcile_panics_total{controller=\"inferenceendpoint\"}"));
    }

    [Fact]
    public async Task Does_exit_two_naming_the_setting_when_a_timing_is_invalid()
    {
        var (exitCode, output) = await OperatorProcess.RunToExitAsync(_server.KubeconfigPath, "--Operator:LeaderElection:RenewDeadline=00:00:20", "--Operator:WatchIdleTimeout=00:00:00");

        Assert.Equal(Program.InvalidConfiguration, exitCode);
        var message = string.Join('\n', output);
        Assert.Contains("Operator:LeaderElection:RenewDeadline (00:00:20) must be shorter than LeaseDuration (00:00:15)", message, StringComparison.Ordinal);
        Assert.Contains("Operator:WatchIdleTimeout must be a positive duration", message, StringComparison.Ordinal);
        Assert.Empty(Requests("run-to-exit")); // rejected before it talks to the API server
    }

    private async Task<OperatorProcess> StartAsync(string identity, string[] settings)
    {
        var op = await OperatorProcess.StartAsync(_server.KubeconfigPath, identity, settings);
        _operators.Add(op);
        return op;
    }

    private static InferenceEndpoint Endpoint(string name) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default" },
        Spec = new InferenceEndpointSpec
        {
            Model = new ModelReference { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "mistralai/Mistral-7B-v0.1" } } },
            Replicas = 1,
            MaxContextLength = 4096,
            MaxConcurrency = 4,
        },
    };

    private void Create(InferenceEndpoint endpoint) => _server.Api.Create(endpoint);

    private static bool IsReady(InferenceEndpoint e) =>
        Conditions.IsTrue(e.Status?.Conditions, Conditions.Types.Ready) && e.Status?.ObservedGeneration == e.Metadata.Generation;

    /// <summary>Polls the store (in process, not journaled) until the endpoint is Ready for its generation.</summary>
    private async Task<InferenceEndpoint> WaitReadyAsync(string name)
    {
        var deadline = DateTime.UtcNow + OperatorProcess.Patience;
        InferenceEndpoint? last = null;
        while (DateTime.UtcNow < deadline)
        {
            last = _server.Api.TryGet<InferenceEndpoint>("default", name);
            if (last is not null && IsReady(last))
            {
                return last;
            }

            await Task.Delay(50);
        }

        var transcripts = string.Join("\n---\n", _operators.Select(o => $"{o.Identity}:\n{o.Transcript()}"));
        throw new TimeoutException($"{name} not Ready within {OperatorProcess.Patience.TotalSeconds} s; last: {(last is null ? "absent" : KubernetesJson.Serialize(last.Status))}\n{transcripts}");
    }

    /// <summary>Requests one operator process made (told apart by its User-Agent), optionally of a verb and path.</summary>
    private IEnumerable<JournalEntry> Requests(OperatorProcess op, string? verb = null, string? pathContains = null, bool write = false) =>
        Requests(op.Identity, verb, pathContains, write);

    private IEnumerable<JournalEntry> Requests(string identity, string? verb = null, string? pathContains = null, bool write = false) =>
        _server.Journal.Entries.Where(e => e.UserAgent == UserAgentHandler.For(identity)
            && (verb is null || e.Verb == verb)
            && (pathContains is null || e.Path.Contains(pathContains, StringComparison.Ordinal))
            && (!write || (e.IsWrite && !e.Path.Contains("/leases/", StringComparison.Ordinal))));

    /// <summary>Children of <paramref name="owner"/>: objects whose controller owner reference names its UID.</summary>
    private IReadOnlyList<T> Owned<T>(InferenceEndpoint owner)
        where T : IKubernetesObject<V1ObjectMeta> =>
        _server.Api.List<T>("default")
            .Where(o => o.Metadata.OwnerReferences?.Any(r => r.Controller == true && r.Uid == owner.Metadata.Uid) == true)
            .ToList();

    /// <summary>Every version of <paramref name="name"/>'s status the store holds, in order, from the store's own watch.</summary>
    private List<(long ResourceVersion, InferenceEndpointStatus? Status)> ObserveStatuses(string name)
    {
        var seen = new List<(long, InferenceEndpointStatus?)>();
        _ = Task.Run(async () =>
        {
            // Ends with the test (cancelled in DisposeAsync).
            await foreach (var (_, obj, resourceVersion) in _server.Api.WatchAsync<InferenceEndpoint>("default", new WatchOptions { ResourceVersion = "0" }, _stop.Token))
            {
                if (obj?.Metadata.Name == name)
                {
                    lock (seen)
                    {
                        seen.Add((resourceVersion, obj.Status));
                    }
                }
            }
        });
        return seen;
    }

    /// <summary>Status never went backwards up to <paramref name="ready"/>: observedGeneration never decreases and Ready, once true, stays true.</summary>
    private static async Task AssertNoRegressionAsync(List<(long ResourceVersion, InferenceEndpointStatus? Status)> seen, InferenceEndpoint ready)
    {
        var until = long.Parse(ready.Metadata.ResourceVersion, System.Globalization.CultureInfo.InvariantCulture);
        List<(long ResourceVersion, InferenceEndpointStatus? Status)> versions = [];
        var deadline = DateTime.UtcNow + OperatorProcess.Patience;
        while (!versions.Any(v => v.ResourceVersion >= until))
        {
            Assert.True(DateTime.UtcNow < deadline, $"the store's watch never delivered resourceVersion {until}");
            await Task.Delay(20);
            lock (seen)
            {
                versions = [.. seen];
            }
        }

        long? generation = null;
        var wasReady = false;
        foreach (var status in versions.Where(v => v.ResourceVersion <= until).Select(v => v.Status).OfType<InferenceEndpointStatus>())
        {
            Assert.True(generation is null || status.ObservedGeneration >= generation, "observedGeneration went backwards");
            generation = status.ObservedGeneration;
            var readyNow = Conditions.IsTrue(status.Conditions, Conditions.Types.Ready);
            Assert.False(wasReady && !readyNow, "Ready went from True back to False");
            wasReady |= readyNow;
        }

        Assert.True(wasReady, "Ready never observed");
        Assert.Equal(ready.Metadata.Generation, generation);
    }
}
