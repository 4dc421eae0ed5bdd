using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text.Json;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Microsoft.Extensions.DependencyInjection;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>InferenceEndpoint against the embedded API server: Ready, idempotence, scale, metrics (also through a real Prometheus).</summary>
[Collection("OperatorServer")]
public sealed class EndpointServerTests : IAsyncLifetime
{
    private OperatorHarness _h = null!;

    public async Task InitializeAsync() => _h = await OperatorHarness.StartAsync();

    public async Task DisposeAsync() => await _h.DisposeAsync();

    private static InferenceEndpoint Endpoint(string name, int replicas = 1) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default" },
        Spec = new InferenceEndpointSpec
        {
            Model = new ModelReference { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "mistralai/Mistral-7B-v0.1" } } },
            Replicas = replicas,
            MaxContextLength = 4096,
            MaxConcurrency = 4,
        },
    };

    private static bool Ready(InferenceEndpoint e) =>
        Conditions.IsTrue(e.Status?.Conditions, Conditions.Types.Ready) && e.Status?.ObservedGeneration == e.Metadata.Generation;

    [Fact]
    public async Task Does_serve_to_ready_then_scale_through_spec_replicas_with_zero_writes_when_unchanged()
    {
        _h.Create(Endpoint("chat"));
        var ready = await _h.WaitAsync<InferenceEndpoint>("chat", Ready, "endpoint Ready");

        Assert.Equal("http://chat-inference.default.svc.cluster.local/v1", ready.Status!.Url);
        Assert.Equal(1, ready.Status.ReadyReplicas);
        Assert.True(Conditions.IsTrue(ready.Status.Conditions, Conditions.Types.Available));
        Assert.Equal(ready.Status.Plan!.HourlyUsd, ready.Status.Cost!.HourlyUsd, 3);
        var service = _h.Api.Get<V1Service>("default", "chat-inference");
        Assert.Equal(ready.Metadata.Uid, Assert.Single(service.Metadata.OwnerReferences).Uid);

        await _h.WaitIdleAsync("inferenceendpoint");
        _h.Server.Journal.Clear();
        var before = _h.TotalReconciles("inferenceendpoint");
        var touched = _h.Api.Get<InferenceEndpoint>("default", "chat");
        touched.Metadata.Labels = new Dictionary<string, string> { ["touched"] = "yes" };
        _h.Api.Update(touched);
        await _h.WaitForReconcilesAsync("inferenceendpoint", before);
        Assert.Empty(_h.OperatorWrites());

        // What an HPA does through the scale subresource: spec.replicas changes, the Deployment follows.
        var scaled = _h.Api.Get<InferenceEndpoint>("default", "chat");
        scaled.Spec = scaled.Spec with { Replicas = 2 };
        _h.Api.Update(scaled);
        var two = await _h.WaitAsync<InferenceEndpoint>("chat", e => Ready(e) && e.Status!.ReadyReplicas == 2, "2 replicas ready");
        Assert.Equal(2, _h.Api.Get<V1Deployment>("default", "chat-inference").Spec.Replicas);
        Assert.Equal(Math.Round(two.Status!.Plan!.HourlyUsd * 2, 4), two.Status.Cost!.HourlyUsd);
    }

    [Fact]
    public async Task Does_route_a_QuantizedModel_event_to_the_endpoints_that_use_it_without_decoding_the_others()
    {
        // The soak found this: the QuantizedModel → endpoints mapping decoded every cached endpoint per event, on the
        // QuantizedModel informer's loop (10,000 endpoints: each event ~10,000 decodes; that watch fell minutes behind
        // and 500 QuantizedModels never got a status). The index finds the users by key.
        const int others = 30;
        for (var i = 0; i < others; i++)
        {
            _h.Create(Endpoint($"other-{i:00}"));
        }

        var model = Fixtures.Model("base");
        model.Metadata.NamespaceProperty = "default";
        model.Metadata.Uid = null;
        _h.Create(model);
        var user = Endpoint("uses-base");
        user.Spec = user.Spec with { Model = new ModelReference { QuantizedModelRef = new ObjectRef { Name = "base" } } };
        _h.Create(user);
        await _h.WaitAsync<InferenceEndpoint>("uses-base", e => e.Status?.ObservedGeneration == e.Metadata.Generation, "the user reconciled");
        await _h.WaitIdleAsync("inferenceendpoint");

        var decodes = _h.Metrics.CacheDecodes.WithLabels("inferenceendpoint");
        var decodesBefore = decodes.Value;
        var reconcilesBefore = _h.TotalReconciles("inferenceendpoint");
        for (var i = 0; i < 5; i++)
        {
            var touched = _h.Api.Get<QuantizedModel>("default", "base");
            touched.Metadata.Labels = new Dictionary<string, string> { ["touched"] = i.ToString(CultureInfo.InvariantCulture) };
            _h.Api.Update(touched);
        }

        await _h.WaitForReconcilesAsync("inferenceendpoint", reconcilesBefore);
        await _h.WaitIdleAsync("inferenceendpoint");
        var decoded = decodes.Value - decodesBefore;
        Assert.True(decoded < others, $"5 QuantizedModel events decoded {decoded} endpoints; only uses-base should be read (a scan decodes {others + 1} per event)");
    }

    [Fact]
    public async Task Does_keep_serving_pods_through_an_operator_upgrade_and_roll_with_an_event_naming_the_fields_when_the_spec_changes()
    {
        _h.Create(Endpoint("steady"));
        await _h.WaitAsync<InferenceEndpoint>("steady", Ready, "endpoint Ready");
        await _h.WaitIdleAsync("inferenceendpoint");
        var template = k8s.KubernetesJson.Serialize(_h.Api.Get<V1Deployment>("default", "steady-inference").Spec.Template);

        // The upgrade: a new operator with another default engine image and host memory takes over the same server.
        await _h.Operator.StopAsync();
        _h.Server.Journal.Clear();
        await using var upgraded = OperatorHarness.StartOperator(_h.Server, Planner.GpuCatalog.Default, op => op.Services.PostConfigure<Builders.WorkloadOptions>(o =>
        {
            o.EngineImage = "ghcr.io/lowbit-dev/lowbit-engine:9.9.9";
            o.DefaultHostMemory = "32Gi";
        }), null);
        await upgraded.StartAsync();
        var metrics = upgraded.Services.GetRequiredService<Lowbit.Operator.Runtime.RuntimeMetrics>();
        var deadline = DateTime.UtcNow + OperatorHarness.Patience;
        while (metrics.ReconcileTotal.WithLabels("inferenceendpoint", "requeue_after").Value + metrics.ReconcileTotal.WithLabels("inferenceendpoint", "success").Value < 1 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }

        Assert.Equal(template, k8s.KubernetesJson.Serialize(_h.Api.Get<V1Deployment>("default", "steady-inference").Spec.Template));
        Assert.DoesNotContain(_h.Server.Journal.Writes, w => w.Path.Contains("/deployments/steady-inference", StringComparison.Ordinal));

        // A change that matters (the context length is in the engine's arguments) rolls, and says why.
        var changed = _h.Api.Get<InferenceEndpoint>("default", "steady");
        changed.Spec = changed.Spec with { MaxContextLength = 2048 };
        _h.Api.Update(changed);
        // The value after --max-context (the args also hold --max-num-batched-tokens 2048, the GPU prefill budget).
        var rolled = await _h.WaitAsync<V1Deployment>("steady-inference", d => d.Spec.Template.Spec.Containers[0].Args is { } args
            && args.IndexOf("--max-context") is var at && at >= 0 && at + 1 < args.Count && args[at + 1] == "2048", "the rolled Deployment");
        Assert.Equal("ghcr.io/lowbit-dev/lowbit-engine:9.9.9", rolled.Spec.Template.Spec.Containers[0].Image);
        var deadlineEvent = DateTime.UtcNow + OperatorHarness.Patience;
        Corev1Event? rolling = null;
        while (rolling is null && DateTime.UtcNow < deadlineEvent)
        {
            rolling = _h.Api.List<Corev1Event>("default").FirstOrDefault(e => e.Reason == "Rolling" && e.InvolvedObject.Name == "steady");
            await Task.Delay(50);
        }

        Assert.NotNull(rolling);
        Assert.Contains("args", rolling.Message, StringComparison.Ordinal);
        Assert.Contains("image", rolling.Message, StringComparison.Ordinal);
        await upgraded.StopAsync();
    }

    [Fact]
    public async Task Does_export_cost_metrics_by_name_and_value_and_a_real_prometheus_scrapes_them()
    {
        _h.Create(Endpoint("cost", replicas: 2));
        var ready = await _h.WaitAsync<InferenceEndpoint>("cost", e => Ready(e) && e.Status!.ReadyReplicas == 2, "endpoint Ready");
        var gpu = ready.Status!.Plan!.GpuModel!;
        var hourly = ready.Status.Plan.HourlyUsd * 2;

        using var http = new HttpClient();
        var text = await http.GetStringAsync(new Uri(_h.OperatorUrl, "/metrics"));
        Assert.Equal(hourly, Sample(text, $"lowbit_endpoint_hourly_cost_usd{{namespace=\"default\",endpoint=\"cost\",gpu=\"{gpu}\"}}"), 3);
        Assert.Equal(2 * ready.Status.Plan.GpusPerReplica, Sample(text, $"lowbit_endpoint_gpus{{namespace=\"default\",endpoint=\"cost\",gpu=\"{gpu}\"}}"));
        Assert.True(Sample(text, "lowbit_plan_memory_bytes{kind=\"InferenceEndpoint\",namespace=\"default\",name=\"cost\",component=\"weights\"}") > 13e9);
        Assert.True(Sample(text, "lowbit_plan_memory_bytes{kind=\"InferenceEndpoint\",namespace=\"default\",name=\"cost\",component=\"total\"}")
            > Sample(text, "lowbit_plan_memory_bytes{kind=\"InferenceEndpoint\",namespace=\"default\",name=\"cost\",component=\"weights\"}"));

        // Serving has no optimizer state or gradients: those series are absent rather than zero.
        Assert.DoesNotContain("name=\"cost\",component=\"optimizer\"", text, StringComparison.Ordinal);
        Assert.DoesNotContain("name=\"cost\",component=\"gradients\"", text, StringComparison.Ordinal);
        Assert.True(Sample(text, "lowbit_endpoint_estimated_usd_per_million_tokens{namespace=\"default\",endpoint=\"cost\"}") > 0);
        Assert.DoesNotContain("pod=", text, StringComparison.Ordinal);
    }

    [PrometheusFact]
    public async Task Does_let_a_real_prometheus_scrape_the_endpoint_cost()
    {
        _h.Create(Endpoint("scraped", replicas: 2));
        var ready = await _h.WaitAsync<InferenceEndpoint>("scraped", e => Ready(e) && e.Status!.ReadyReplicas == 2, "endpoint Ready");

        var value = await ScrapeWithPrometheusAsync(PrometheusFactAttribute.Binary!, _h.OperatorUrl, "lowbit_endpoint_hourly_cost_usd{endpoint=\"scraped\"}");
        Assert.Equal(ready.Status!.Plan!.HourlyUsd * 2, value, 3);
    }

    [Fact]
    public async Task Does_fall_back_to_the_next_cheapest_placement_when_unschedulable_past_the_timeout()
    {
        await _h.DisposeAsync();
        // No node of the cheapest fitting type (rtx-3090) exists, so its pods stay Pending: Unschedulable.
        _h = await OperatorHarness.StartAsync(nodeFilter: name => !name.StartsWith("rtx-3090", StringComparison.Ordinal));
        var endpoint = Endpoint("fallback");
        endpoint.Spec = endpoint.Spec with { Scheduling = new SchedulingSpec { Timeout = "2s" } };
        _h.Create(endpoint);

        var moved = await _h.WaitAsync<InferenceEndpoint>("fallback", e => Ready(e), "Ready after fallback");
        Assert.True(moved.Status!.Plan!.PlacementIndex > 0);
        Assert.NotEqual("rtx-3090", moved.Status.Plan.NodeType);
        Assert.Contains(_h.Api.List<Corev1Event>("default"), e => e.InvolvedObject.Name == "fallback" && e.Reason == Conditions.Reasons.WaitingForGpu);
    }

    private static double Sample(string exposition, string series)
    {
        foreach (var line in exposition.Split('\n'))
        {
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
            {
                return double.Parse(line[(series.Length + 1)..], CultureInfo.InvariantCulture);
            }
        }

        throw new Xunit.Sdk.XunitException($"series {series} not in /metrics");
    }

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    internal static async Task<double> ScrapeWithPrometheusAsync(string binary, Uri target, string query)
    {
        var dir = Directory.CreateTempSubdirectory("lowbit-prometheus-").FullName;
        var port = FreePort();
        var config = Path.Combine(dir, "prometheus.yml");
        await File.WriteAllTextAsync(config, $"""
            global:
              scrape_interval: 1s
            scrape_configs:
            - job_name: lowbit-operator
              static_configs:
              - targets: ["127.0.0.1:{target.Port}"]
            """);
        using var process = Process.Start(new ProcessStartInfo(binary)
        {
            ArgumentList = { $"--config.file={config}", $"--storage.tsdb.path={Path.Combine(dir, "data")}", $"--web.listen-address=127.0.0.1:{port}" },
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        })!;
        process.ErrorDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        try
        {
            using var http = new HttpClient();
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(45);
            while (DateTime.UtcNow < deadline)
            {
                try
                {
                    var body = await http.GetStringAsync(new Uri($"http://127.0.0.1:{port}/api/v1/query?query={Uri.EscapeDataString(query)}"));
                    using var doc = JsonDocument.Parse(body);
                    var result = doc.RootElement.GetProperty("data").GetProperty("result");
                    if (result.GetArrayLength() > 0)
                    {
                        return double.Parse(result[0].GetProperty("value")[1].GetString()!, CultureInfo.InvariantCulture);
                    }
                }
                catch (HttpRequestException)
                {
                    // Prometheus is still starting.
                }

                await Task.Delay(250);
            }

            throw new TimeoutException($"Prometheus returned no sample for {query}");
        }
        finally
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            Directory.Delete(dir, recursive: true);
        }
    }
}

/// <summary>A fact that needs the prometheus binary on PATH; skipped, with the reason, when it is missing.</summary>
public sealed class PrometheusFactAttribute : FactAttribute
{
    public static readonly string? Binary =
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Where(d => d.Length > 0).Select(d => Path.Combine(d, "prometheus")).FirstOrDefault(File.Exists);

    public PrometheusFactAttribute()
    {
        if (Binary is null)
        {
            Skip = "the prometheus binary is not on PATH (bash .ci/tools.sh installs it)";
        }
    }
}
