using System.Net;
using Lowbit.Operator.Runtime.Tests.Support;
using k8s;
using k8s.Models;
using Lowbit.Operator.Runtime;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using static Lowbit.Operator.Runtime.Tests.Support.TestSupport;

namespace Lowbit.Operator.Runtime.Tests;

/// <summary>The whole operator process in-process: hosting, probes, metrics, leader election, shutdown.</summary>
public sealed class OperatorHostTests : IAsyncLifetime
{
    private FakeApiServer _server = null!;
    private readonly List<WebApplication> _apps = [];

    public async Task InitializeAsync() => _server = await FakeApiServer.StartAsync();

    public async Task DisposeAsync()
    {
        foreach (var app in _apps)
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }

        await _server.DisposeAsync();
    }

    private (WebApplication App, Probe Probe) Build(Action<OperatorOptions>? configure = null, string identity = "a")
    {
        var probe = new Probe();
        var app = OperatorHost.Build(["--urls=http://127.0.0.1:0"], op =>
        {
            op.Services.AddSingleton(probe);
            op.Services.AddLogging(l => l.ClearProviders());
            op.UseKubernetes(_server.ClientConfiguration)
                .Configure(o =>
                {
                    o.WatchNamespace = "default";
                    o.LeaderElection.Enabled = false;
                    o.LeaderElection.Identity = identity;
                    o.LeaderElection.LeaseNamespace = "default";
                    o.LeaderElection.LeaseDuration = TimeSpan.FromSeconds(3);
                    o.LeaderElection.RenewDeadline = TimeSpan.FromSeconds(1.5);
                    o.LeaderElection.RetryPeriod = TimeSpan.FromSeconds(0.2);
                    o.ShutdownTimeout = TimeSpan.FromSeconds(10);
                    configure?.Invoke(o);
                })
                .AddController<V1ConfigMap, ProbeReconciler>(c => c.Owns<V1Pod>().WithMaxConcurrentReconciles(2));
        });
        _apps.Add(app);
        return (app, probe);
    }

    private static async Task<(HttpStatusCode Code, string Body)> GetAsync(WebApplication app, string path)
    {
        using var http = new HttpClient { BaseAddress = new Uri(app.Urls.First()) };
        using var response = await http.GetAsync(path);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Does_report_ready_only_after_the_caches_sync()
    {
        _server.Upsert(ConfigMap("a"));
        _server.PauseLists();
        var (app, probe) = Build();
        await app.StartAsync();

        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await GetAsync(app, "/readyz")).Code);
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(app, "/healthz")).Code);
        Assert.Equal(0, probe.Calls);

        _server.ResumeLists();
        await Eventually(() => probe.Calls == 1, "a reconciled after the sync");
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(app, "/readyz")).Code);
    }

    [Fact]
    public async Task Does_export_runtime_metrics_under_controller_runtime_names()
    {
        _server.Upsert(ConfigMap("a"));
        var (app, probe) = Build();
        await app.StartAsync();
        await Eventually(() => probe.Calls == 1, "a reconciled");

        var (code, body) = await GetAsync(app, "/metrics");

        Assert.Equal(HttpStatusCode.OK, code);
        Assert.Contains("controller_runtime_reconcile_total{controller=\"configmap\",result=\"success\"} 1", body, StringComparison.Ordinal);
        Assert.Contains("controller_runtime_reconcile_errors_total{controller=\"configmap\"} 0", body, StringComparison.Ordinal);
        Assert.Contains("controller_runtime_max_concurrent_reconciles{controller=\"configmap\"} 2", body, StringComparison.Ordinal);
        Assert.Contains("workqueue_adds_total{name=\"configmap\"} 1", body, StringComparison.Ordinal);
        Assert.Contains("lowbit_informer_synced{kind=\"pod\"} 1", body, StringComparison.Ordinal);
        Assert.Contains("lowbit_informer_synced{kind=\"configmap\"} 1", body, StringComparison.Ordinal);
        foreach (var name in new[]
        {
            "controller_runtime_terminal_reconcile_errors_total", "controller_runtime_reconcile_panics_total",
            "controller_runtime_reconcile_time_seconds_bucket", "controller_runtime_active_workers", "workqueue_depth",
            "workqueue_retries_total", "workqueue_queue_duration_seconds_bucket", "workqueue_work_duration_seconds_bucket",
            "workqueue_unfinished_work_seconds", "workqueue_longest_running_processor_seconds", "rest_client_requests_total",
            "lowbit_watch_age_seconds", "lowbit_watch_relists_total",
        })
        {
            Assert.Contains(name + "{", body, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Does_wake_the_owner_for_its_pods_and_let_the_reconciler_read_them_from_the_cache()
    {
        _server.Upsert(ConfigMap("owner"));
        var (app, probe) = Build();
        await app.StartAsync();
        await Eventually(() => probe.Calls == 1, "owner reconciled");
        using var client = Client(_server, new RuntimeMetrics());
        var uid = (await client.CoreV1.ReadNamespacedConfigMapAsync("owner", "default")).Metadata.Uid;

        _server.Upsert(new V1Pod
        {
            Metadata = new V1ObjectMeta
            {
                Name = "owner-engine",
                NamespaceProperty = "default",
                OwnerReferences = [new V1OwnerReference { ApiVersion = "v1", Kind = "ConfigMap", Name = "owner", Uid = uid, Controller = true }],
            },
        });
        await Eventually(() => probe.Calls == 2, "owner reconciled for its pod");

        Assert.Equal(["owner-engine"], probe.OwnedPods);
    }

    [Fact]
    public async Task Does_cancel_an_in_flight_reconcile_on_shutdown_and_stop_within_the_timeout()
    {
        _server.Upsert(ConfigMap("slow"));
        var (app, probe) = Build();
        probe.Block = true;
        await app.StartAsync();
        await Eventually(() => probe.Calls == 1, "the reconcile is in flight");

        await app.StopAsync().WaitAsync(Patience);

        Assert.True(probe.SawCancellation);
        Assert.Equal(0, app.Services.GetRequiredService<OperatorState>().ExitCode);
        Assert.Equal(TimeSpan.FromSeconds(10), app.Services.GetRequiredService<IOptions<HostOptions>>().Value.ShutdownTimeout);
    }

    [Fact]
    public void Does_refuse_to_start_with_invalid_leader_election_timings()
    {
        var error = Assert.Throws<OptionsValidationException>(() => Build(o =>
        {
            o.LeaderElection.Enabled = true;
            o.LeaderElection.RenewDeadline = TimeSpan.FromSeconds(20);
        }));

        Assert.Contains("Operator:LeaderElection:RenewDeadline", error.Message, StringComparison.Ordinal);
        Assert.Contains("must be shorter than LeaseDuration", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("WatchTimeout", "01:00:00", "Operator:WatchTimeout must be at most 30 minutes")]
    [InlineData("MaxConcurrentReconciles", "0", "Operator:MaxConcurrentReconciles must be between 1 and 1000 (got 0)")]
    [InlineData("LeaderElection:RetryPeriod", "00:00:12", "Operator:LeaderElection:RetryPeriod (00:00:12) must be shorter than RenewDeadline (00:00:10)")]
    [InlineData("ReconcileTimeout", "-00:00:01", "Operator:ReconcileTimeout must be a positive duration")]
    public void Does_name_the_setting_when_options_are_invalid(string key, string value, string message)
    {
        var error = Assert.Throws<OptionsValidationException>(() =>
            OperatorHost.Build(["--urls=http://127.0.0.1:0", $"--Operator:{key}={value}"], op => op.UseKubernetes(_server.ClientConfiguration)));

        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_reconcile_only_on_the_leader_and_fail_over_when_it_stops()
    {
        _server.Upsert(ConfigMap("x"));
        var (first, firstProbe) = Build(o => o.LeaderElection.Enabled = true, identity: "first");
        await first.StartAsync();
        await Eventually(() => firstProbe.Calls == 1, "the first instance leads and reconciles");
        var (second, secondProbe) = Build(o => o.LeaderElection.Enabled = true, identity: "second");
        await second.StartAsync();
        await Eventually(() => second.Services.GetRequiredService<OperatorState>().CachesSynced, "the follower's caches sync");
        _server.Upsert(ConfigMap("x", value: "2"));
        await Eventually(() => firstProbe.Calls == 2, "the leader reconciles the change");

        Assert.Equal(0, secondProbe.Calls);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await GetAsync(second, "/readyz")).Code);
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(first, "/readyz")).Code);

        await first.StopAsync().WaitAsync(Patience);
        await Eventually(() => secondProbe.Calls >= 1, "the follower takes over and reconciles");
        var (_, metrics) = await GetAsync(second, "/metrics");
        Assert.Contains("leader_election_master_status{name=\"lowbit-operator\"} 1", metrics, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(second, "/readyz")).Code);
    }

    [Fact]
    public async Task Does_stop_the_host_with_a_non_zero_exit_code_when_leadership_is_lost()
    {
        _server.Upsert(ConfigMap("x"));
        var (app, probe) = Build(o => o.LeaderElection.Enabled = true);
        var run = OperatorHost.RunAsync(app);
        await Eventually(() => probe.Calls == 1, "leading and reconciling");

        _server.Fail(e => e.Method == "PUT" && e.Path.Contains("leases", StringComparison.Ordinal), 500, times: 100_000);
        var exitCode = await run.WaitAsync(Patience);

        Assert.Equal(1, exitCode);
    }
}
