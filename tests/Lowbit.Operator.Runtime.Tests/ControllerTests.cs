using System.Collections.Concurrent;
using System.Net;
using Lowbit.Operator.Runtime.Tests.Support;
using k8s.Autorest;
using k8s.Models;
using Lowbit.Operator.Runtime;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using static Lowbit.Operator.Runtime.Tests.Support.TestSupport;

namespace Lowbit.Operator.Runtime.Tests;

/// <summary>The controller loop over a real informer and the in-test API server.</summary>
public sealed class ControllerTests : IAsyncLifetime
{
    private FakeApiServer _server = null!;
    private readonly RuntimeMetrics _metrics = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _running = [];

    public async Task InitializeAsync() => _server = await FakeApiServer.StartAsync();

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_running).WaitAsync(Patience);
        await _server.DisposeAsync();
        _stop.Dispose();
    }

    private Informer<V1Pod>? _pods;

    private (Controller<V1ConfigMap> Controller, Informer<V1ConfigMap> Informer) Start(
        RecordingReconciler reconciler,
        ControllerOptions? options = null,
        TimeProvider? controllerTime = null,
        bool ownsPods = false)
    {
        var informer = Informer<V1ConfigMap>(_server, _metrics);
        var scopes = new ServiceCollection().BuildServiceProvider().GetRequiredService<IServiceScopeFactory>();
        var controller = new Controller<V1ConfigMap>(informer, _ => reconciler, scopes, options ?? new ControllerOptions(), controllerTime ?? TimeProvider.System, _metrics, NullLogger<Controller<V1ConfigMap>>.Instance);
        if (ownsPods)
        {
            var pods = Informer<V1Pod>(_server, _metrics);
            _pods = pods;
            controller.Owns(pods);
            _running.Add(pods.RunAsync(_stop.Token));
        }

        _running.Add(informer.RunAsync(_stop.Token));
        _running.Add(controller.RunAsync(_stop.Token));
        return (controller, informer);
    }

    private Task Quiet(Controller<V1ConfigMap> controller, Informer<V1ConfigMap> informer) =>
        Eventually(
            () => informer.ResourceVersion == _server.CurrentResourceVersion && controller.Queue.Count == 0 && controller.Queue.Processing == 0,
            "informer caught up and queue idle");

    [Fact]
    public async Task Does_survive_exceptions_and_keep_other_keys_moving()
    {
        var reconciler = new RecordingReconciler((cm, _) => cm.Metadata.Name == "bad"
            ? throw new InvalidOperationException("boom")
            : Task.FromResult(ReconcileResult.Done));
        _server.Upsert(ConfigMap("bad"));
        _server.Upsert(ConfigMap("good"));

        Start(reconciler);
        await Eventually(() => reconciler.Calls("bad") >= 4 && reconciler.Calls("good") == 1, "bad retried, good done");

        Assert.True(_metrics.ReconcilePanics.WithLabels("configmap").Value >= 3);
        Assert.Equal(1, Value(_metrics.ReconcileTotal, "configmap", "success"));
        Assert.True(Value(_metrics.ReconcileTotal, "configmap", "error") >= 3);
        Assert.True(_metrics.QueueRetries.WithLabels("configmap").Value >= 3);
    }

    [Fact]
    public async Task Does_run_one_reconcile_per_key_and_coalesce_a_burst_of_events()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var reconciler = new RecordingReconciler(async (cm, ct) =>
        {
            if (cm.Metadata.Name == "hot")
            {
                await gate.Task.WaitAsync(ct);
            }

            return ReconcileResult.Done;
        });
        _server.Upsert(ConfigMap("hot"));
        var (controller, informer) = Start(reconciler, new ControllerOptions { MaxConcurrentReconciles = 4 });
        await Eventually(() => reconciler.Calls("hot") == 1, "hot is being reconciled");

        for (var i = 0; i < 100; i++)
        {
            _server.Upsert(ConfigMap("hot", value: i.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }

        _server.Upsert(ConfigMap("cold"));
        await Eventually(() => reconciler.Calls("cold") == 1, "another key proceeds while hot is busy");
        await Eventually(() => informer.ResourceVersion == _server.CurrentResourceVersion, "all 100 events delivered");
        gate.SetResult();
        await Quiet(controller, informer);

        Assert.Equal(2, reconciler.Calls("hot")); // the running one, then one for the whole burst
        Assert.Equal(1, reconciler.MaxConcurrent("hot"));
        Assert.True(_metrics.QueueAdds.WithLabels("configmap").Value < 10);
    }

    [Fact]
    public async Task Does_requeue_after_the_requested_delay()
    {
        var time = new FakeTimeProvider();
        var reconciler = new RecordingReconciler((_, _) => Task.FromResult(ReconcileResult.RequeueAfter(TimeSpan.FromMinutes(5))));
        _server.Upsert(ConfigMap("a"));
        var (controller, informer) = Start(reconciler, controllerTime: time);
        await Eventually(() => reconciler.Calls("a") == 1, "first reconcile");
        await Quiet(controller, informer);

        time.Advance(TimeSpan.FromMinutes(5) - TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, controller.Queue.Delayed);
        Assert.Equal(0, controller.Queue.Count);
        Assert.Equal(1, reconciler.Calls("a"));

        time.Advance(TimeSpan.FromMilliseconds(1));
        await Eventually(() => reconciler.Calls("a") == 2, "reconciled again after 5 minutes");
        Assert.True(Value(_metrics.ReconcileTotal, "configmap", "requeue_after") >= 1);
    }

    [Fact]
    public async Task Does_not_retry_a_terminal_error_until_the_generation_changes()
    {
        var reconciler = new RecordingReconciler((_, _) => Task.FromResult(ReconcileResult.Terminal("InvalidSpec", "spec.value must be a number")));
        _server.Upsert(ConfigMap("a", value: "x"));
        var (controller, informer) = Start(reconciler);
        await Eventually(() => reconciler.Calls("a") == 1, "first reconcile");
        await Quiet(controller, informer);

        var relabelled = ConfigMap("a", value: "x");
        relabelled.Metadata.Labels = new Dictionary<string, string> { ["touched"] = "yes" };
        _server.Upsert(relabelled); // metadata only: same generation
        await Quiet(controller, informer);
        Assert.Equal(1, reconciler.Calls("a"));

        _server.Upsert(ConfigMap("a", value: "2")); // new generation
        await Eventually(() => reconciler.Calls("a") == 2, "reconciled after the spec changed");
        Assert.Equal(2, _metrics.TerminalReconcileErrors.WithLabels("configmap").Value);
        Assert.Equal(0, _metrics.QueueRetries.WithLabels("configmap").Value);
    }

    [Fact]
    public async Task Does_requeue_a_conflict_without_counting_an_error()
    {
        var reconciler = new RecordingReconciler((_, _) => throw new HttpOperationException("conflict")
        {
            Response = new HttpResponseMessageWrapper(new HttpResponseMessage(HttpStatusCode.Conflict), string.Empty),
        });
        var attempts = 0;
        var conflictOnce = new RecordingReconciler((cm, ct) => Interlocked.Increment(ref attempts) == 1
            ? reconciler.ReconcileAsync(cm, ct)
            : Task.FromResult(ReconcileResult.Done));
        _server.Upsert(ConfigMap("a"));
        var (controller, informer) = Start(conflictOnce);

        await Eventually(() => conflictOnce.Calls("a") == 2, "retried after the conflict");
        await Quiet(controller, informer);

        Assert.Equal(1, Value(_metrics.ReconcileTotal, "configmap", "requeue"));
        Assert.Equal(1, Value(_metrics.ReconcileTotal, "configmap", "success"));
        Assert.Equal(0, _metrics.ReconcileErrors.WithLabels("configmap").Value);
    }

    [Fact]
    public async Task Does_not_reconcile_again_an_object_the_server_no_longer_has_until_the_cache_catches_up()
    {
        // "a" is gone at the server (its status write answers 404 for configmaps/a); "b" only misses a Secret it reads.
        var reconciler = new RecordingReconciler((cm, _) => throw NotFound(cm.Metadata.Name == "a" ? "configmaps" : "secrets", cm.Metadata.Name));
        _server.Upsert(ConfigMap("a"));
        _server.Upsert(ConfigMap("b"));
        var (controller, informer) = Start(reconciler);
        await Eventually(() => reconciler.Calls("a") == 1 && reconciler.Calls("b") >= 3, "a reconciled once, b retried");

        _server.Upsert(ConfigMap("a", value: "2")); // another event for the same object (same UID)
        await Eventually(() => informer.TryGet(new ObjectKey("default", "a"), out var cm) && cm.Data["value"] == "2", "the event seen");
        var bCalls = reconciler.Calls("b");
        await Eventually(() => reconciler.Calls("b") >= bCalls + 2, "the queue worked on past a's event"); // b's retries wait; a's event did not
        Assert.Equal(1, reconciler.Calls("a"));

        _server.Delete<V1ConfigMap>("default", "a");
        _server.Upsert(ConfigMap("a", value: "3")); // created again: a new UID
        await Eventually(() => reconciler.Calls("a") == 2, "the new object reconciled");
    }

    /// <summary>What the API server answers for a missing object (KubernetesClient cannot serialize V1Status, so as text).</summary>
    private static HttpOperationException NotFound(string plural, string name) => new($"{plural} {name} not found")
    {
        Response = new HttpResponseMessageWrapper(
            new HttpResponseMessage(HttpStatusCode.NotFound),
            $$"""{"kind":"Status","apiVersion":"v1","status":"Failure","message":"{{plural}} \"{{name}}\" not found","reason":"NotFound","details":{"name":"{{name}}","kind":"{{plural}}"},"code":404}"""),
    };

    [Fact]
    public async Task Does_cancel_a_reconcile_that_exceeds_its_timeout_and_retry_it()
    {
        var reconciler = new RecordingReconciler(async (_, ct) =>
        {
            await Task.Delay(Timeout.Infinite, ct);
            return ReconcileResult.Done;
        });
        _server.Upsert(ConfigMap("slow"));

        Start(reconciler, new ControllerOptions { ReconcileTimeout = TimeSpan.FromMilliseconds(50) });

        await Eventually(() => reconciler.Calls("slow") >= 2, "retried after the timeout");
        Assert.True(_metrics.ReconcileErrors.WithLabels("configmap").Value >= 1);
        Assert.Equal(0, _metrics.ReconcilePanics.WithLabels("configmap").Value);
    }

    [Fact]
    public async Task Does_map_children_to_their_controller_owner_of_the_right_kind()
    {
        var reconciler = new RecordingReconciler((_, _) => Task.FromResult(ReconcileResult.Done));
        _server.Upsert(ConfigMap("owner"));
        _server.Upsert(ConfigMap("bystander"));
        var (controller, informer) = Start(reconciler, ownsPods: true);
        await Eventually(() => reconciler.Calls("owner") == 1 && reconciler.Calls("bystander") == 1, "initial reconciles");
        await Quiet(controller, informer);

        _server.Upsert(Pod("not-controller", Owner("v1", "ConfigMap", "bystander", "uid-1", false)));
        _server.Upsert(Pod("other-kind", Owner("apps/v1", "Deployment", "bystander", "uid-2", true)));
        _server.Upsert(Pod("other-group", Owner("example.com/v1", "ConfigMap", "bystander", "uid-3", true)));
        _server.Upsert(Pod("owned", Owner("v1", "ConfigMap", "owner", "uid-4", true)));
        await Eventually(() => reconciler.Calls("owner") == 2, "the owner reconciled for its pod");
        await Eventually(
            () => _pods!.ResourceVersion == _server.CurrentResourceVersion && controller.Queue.Count == 0 && controller.Queue.Processing == 0,
            "all pod events delivered and the queue idle");

        Assert.Equal(1, reconciler.Calls("bystander"));
    }

    private static V1OwnerReference Owner(string apiVersion, string kind, string name, string uid, bool controller) =>
        new() { ApiVersion = apiVersion, Kind = kind, Name = name, Uid = uid, Controller = controller };

    private static V1Pod Pod(string name, V1OwnerReference owner) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default", OwnerReferences = [owner] },
        Spec = new V1PodSpec { Containers = [new V1Container { Name = "c", Image = "busybox" }] },
    };
}

/// <summary>A reconciler that delegates and records calls and per-key concurrency.</summary>
internal sealed class RecordingReconciler(Func<V1ConfigMap, CancellationToken, Task<ReconcileResult>> reconcile) : IReconciler<V1ConfigMap>
{
    private readonly ConcurrentDictionary<string, int> _calls = new();
    private readonly ConcurrentDictionary<string, int> _inFlight = new();
    private readonly ConcurrentDictionary<string, int> _maxInFlight = new();

    public int Calls(string name) => _calls.GetValueOrDefault(name);

    public int MaxConcurrent(string name) => _maxInFlight.GetValueOrDefault(name);

    public async Task<ReconcileResult> ReconcileAsync(V1ConfigMap obj, CancellationToken cancellationToken)
    {
        var name = obj.Metadata.Name;
        _calls.AddOrUpdate(name, 1, (_, n) => n + 1);
        var now = _inFlight.AddOrUpdate(name, 1, (_, n) => n + 1);
        _maxInFlight.AddOrUpdate(name, now, (_, n) => Math.Max(n, now));
        try
        {
            return await reconcile(obj, cancellationToken);
        }
        finally
        {
            _inFlight.AddOrUpdate(name, 0, (_, n) => n - 1);
        }
    }
}
