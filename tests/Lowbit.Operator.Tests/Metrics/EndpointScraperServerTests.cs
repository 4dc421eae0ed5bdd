using System.Globalization;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Telemetry;
using Lowbit.Operator.Tests.Reconcilers;
using Lowbit.Operator.Runtime.Tests.Support;
using Microsoft.Extensions.DependencyInjection;

namespace Lowbit.Operator.Tests.Metrics;

/// <summary>
/// The operator scrapes real HTTP servers standing in for an endpoint's serving pods (Running, Ready, podIP
/// 127.0.0.1, container port "http"), against the embedded API server. The scraper's clock is a manual one: each
/// round is exactly one second after the last, so rates are exact; the test waits for rounds, never sleeps.
/// </summary>
[Collection("OperatorServer")]
public sealed class EndpointScraperServerTests : IAsyncLifetime
{
    private const string TestNode = "scrape-test-node";
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    private readonly FakeTimeProvider _clock = new();
    private readonly List<EngineStub> _stubs = [];
    private OperatorHarness _h = null!;

    public async Task InitializeAsync() => _h = await OperatorHarness.StartAsync(configure: op =>
    {
        op.Services.AddKeyedSingleton<TimeProvider>(EndpointScraper.ClockKey, _clock);
        op.Services.Configure<EndpointScrapeOptions>(o =>
        {
            o.Interval = Interval;
            o.Timeout = TimeSpan.FromSeconds(10);
        });
    });

    public async Task DisposeAsync()
    {
        await _h.DisposeAsync();
        foreach (var stub in _stubs)
        {
            await stub.DisposeAsync();
        }
    }

    private EndpointScraper Scraper => _h.Operator.Services.GetRequiredService<EndpointScraper>();

    [Fact]
    public async Task Does_export_observed_tokens_per_second_ttft_and_usd_per_million_tokens_from_the_serving_pods()
    {
        var hourly = await ReadyEndpointServedByTestPodsAsync("observed");
        var a = await ServingPodAsync("observed", "observed-a");
        var b = await ServingPodAsync("observed", "observed-b");
        a.Set(generationTokens: 1000, ttftSum: 2.0, ttftCount: 10);
        b.Set(generationTokens: 5000, ttftSum: 4.0, ttftCount: 20);
        await BaselineAsync(a, b);
        var first = await MetricsAsync();
        if (a.Scrapes == 1 && b.Scrapes == 1)
        {
            // Both pods were first seen in the same round: no interval yet, so no rate.
            Assert.Null(Sample(first, Series("lowbit_endpoint_tokens_per_second", "observed")));
        }

        Assert.Equal(0, Sample(first, Series("lowbit_endpoint_scrape_errors_total", "observed")));

        a.Advance(generationTokens: 1500, ttftSeconds: 1.2, requests: 4);
        b.Advance(generationTokens: 500, ttftSeconds: 0.8, requests: 1);
        var text = await RoundAsync();
        Assert.Equal(2000, Sample(text, Series("lowbit_endpoint_tokens_per_second", "observed")));
        Assert.Equal(0.4, Sample(text, Series("lowbit_endpoint_time_to_first_token_seconds", "observed"))!.Value, 9);
        Assert.Equal(hourly / (2000 * 3600) * 1e6, Sample(text, Series("lowbit_endpoint_usd_per_million_tokens", "observed"))!.Value, 9);
        Assert.DoesNotContain("observed-a", text, StringComparison.Ordinal);
        if (PrometheusFactAttribute.Binary is { } prometheus)
        {
            // The scraper's clock stands still until the test moves it: the gauge holds while Prometheus scrapes.
            var scraped = await EndpointServerTests.ScrapeWithPrometheusAsync(prometheus, _h.OperatorUrl, "lowbit_endpoint_tokens_per_second{endpoint=\"observed\"}");
            Assert.Equal(2000, scraped);
        }

        // Pod b restarts (counters from 0) and generates 300 tokens; its TTFT histogram restarts too.
        a.Advance(generationTokens: 1000, ttftSeconds: 1.5, requests: 2);
        b.Set(generationTokens: 300, ttftSum: 0.3, ttftCount: 1);
        text = await RoundAsync();
        Assert.Equal(1300, Sample(text, Series("lowbit_endpoint_tokens_per_second", "observed")));
        Assert.Equal(0.6, Sample(text, Series("lowbit_endpoint_time_to_first_token_seconds", "observed"))!.Value, 9);
        Assert.Equal(hourly / (1300 * 3600) * 1e6, Sample(text, Series("lowbit_endpoint_usd_per_million_tokens", "observed"))!.Value, 9);

        // Idle: 0 tokens/s is a fact; a cost per token and a TTFT without requests are not.
        text = await RoundAsync();
        Assert.Equal(0, Sample(text, Series("lowbit_endpoint_tokens_per_second", "observed")));
        Assert.Null(Sample(text, Series("lowbit_endpoint_time_to_first_token_seconds", "observed")));
        Assert.Null(Sample(text, Series("lowbit_endpoint_usd_per_million_tokens", "observed")));
        Assert.Equal(0, Sample(text, Series("lowbit_endpoint_scrape_errors_total", "observed")));
    }

    [Fact]
    public async Task Does_count_failed_scrapes_drop_stale_gauges_and_forget_a_deleted_endpoint()
    {
        await ReadyEndpointServedByTestPodsAsync("flaky");
        var pod = await ServingPodAsync("flaky", "flaky-a");
        pod.Set(generationTokens: 100, ttftSum: 1, ttftCount: 5);
        await BaselineAsync(pod);
        pod.Advance(generationTokens: 1000, ttftSeconds: 0.5, requests: 1);
        var text = await RoundAsync();
        Assert.Equal(1000, Sample(text, Series("lowbit_endpoint_tokens_per_second", "flaky")));

        pod.AnswerWith(EngineStub.StubAnswer.ServerError);
        text = await RoundAsync();
        Assert.Equal(1, Sample(text, Series("lowbit_endpoint_scrape_errors_total", "flaky")));
        Assert.Null(Sample(text, Series("lowbit_endpoint_tokens_per_second", "flaky")));
        Assert.Null(Sample(text, Series("lowbit_endpoint_time_to_first_token_seconds", "flaky")));
        Assert.Null(Sample(text, Series("lowbit_endpoint_usd_per_million_tokens", "flaky")));

        pod.AnswerWith(EngineStub.StubAnswer.Garbage);
        text = await RoundAsync();
        Assert.Equal(2, Sample(text, Series("lowbit_endpoint_scrape_errors_total", "flaky")));
        Assert.Null(Sample(text, Series("lowbit_endpoint_tokens_per_second", "flaky")));

        // Back: rated against the last good sample, three seconds ago.
        pod.AnswerWith(EngineStub.StubAnswer.Metrics);
        pod.Advance(generationTokens: 3000, ttftSeconds: 0.9, requests: 3);
        text = await RoundAsync();
        Assert.Equal(1000, Sample(text, Series("lowbit_endpoint_tokens_per_second", "flaky")));
        Assert.Equal(0.3, Sample(text, Series("lowbit_endpoint_time_to_first_token_seconds", "flaky"))!.Value, 9);
        Assert.Equal(2, Sample(text, Series("lowbit_endpoint_scrape_errors_total", "flaky")));

        _h.Api.Delete<InferenceEndpoint>("default", "flaky");
        var deadline = DateTime.UtcNow + OperatorHarness.Patience;
        while (true)
        {
            text = await RoundAsync();
            if (!text.Contains("endpoint=\"flaky\"", StringComparison.Ordinal))
            {
                break;
            }

            Assert.True(DateTime.UtcNow < deadline, "series of the deleted endpoint still exported:\n" + string.Join('\n', text.Split('\n').Where(l => l.Contains("flaky", StringComparison.Ordinal))));
        }

        Assert.DoesNotContain("name=\"flaky\"", text, StringComparison.Ordinal);
    }

    private static string Series(string name, string endpoint) => $"{name}{{namespace=\"default\",endpoint=\"{endpoint}\"}}";

    /// <summary>
    /// An endpoint goes Ready on its simulated Deployment; the Deployment is then scaled to 0 (as kubectl scale
    /// would: the operator applies only on a spec-hash change) so that the test's pods are its only serving pods.
    /// Returns the endpoint's hourly cost.
    /// </summary>
    private async Task<double> ReadyEndpointServedByTestPodsAsync(string name)
    {
        _h.Create(new InferenceEndpoint
        {
            Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default" },
            Spec = new InferenceEndpointSpec
            {
                Model = new ModelReference { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "mistralai/Mistral-7B-v0.1" } } },
                MaxContextLength = 4096,
                MaxConcurrency = 4,
            },
        });
        var ready = await _h.WaitAsync<InferenceEndpoint>(name, e => Conditions.IsTrue(e.Status?.Conditions, Conditions.Types.Ready), "endpoint Ready");
        var deployment = _h.Api.Get<V1Deployment>("default", ChildMeta.Name(ready, InferenceDeploymentBuilder.Role));
        deployment.Spec.Replicas = 0;
        _h.Api.Update(deployment);
        var deadline = DateTime.UtcNow + OperatorHarness.Patience;
        while (_h.Api.List<V1Pod>("default").Any(p => ChildMeta.Label(p, Labels.OwnerKey(InferenceEndpoint.KindName)) == name && p.Spec.NodeName != TestNode))
        {
            Assert.True(DateTime.UtcNow < deadline, "the Deployment's pods did not go");
            await Task.Delay(20);
        }

        // The hourly cost the operator exports (its planned placement at spec.replicas) is what the scraper divides.
        var prefix = $"lowbit_endpoint_hourly_cost_usd{{namespace=\"default\",endpoint=\"{name}\",gpu=";
        var line = (await MetricsAsync()).Split('\n').Single(l => l.StartsWith(prefix, StringComparison.Ordinal));
        var hourly = double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
        Assert.Equal(ready.Status!.Plan!.HourlyUsd, hourly, 3);
        return hourly;
    }

    /// <summary>A Running, Ready pod of the endpoint at 127.0.0.1, its port "http" a real server's; bound to a node no kubelet runs.</summary>
    private async Task<EngineStub> ServingPodAsync(string endpoint, string podName)
    {
        var stub = await EngineStub.StartAsync();
        _stubs.Add(stub);
        var pod = _h.Api.Create(new V1Pod
        {
            Metadata = new V1ObjectMeta
            {
                Name = podName,
                NamespaceProperty = "default",
                Labels = new Dictionary<string, string>(Labels.ForChild(InferenceEndpoint.KindName, endpoint, InferenceDeploymentBuilder.Role)),
            },
            Spec = new V1PodSpec
            {
                NodeName = TestNode,
                Containers =
                [
                    new V1Container
                    {
                        Name = "engine",
                        Image = "ghcr.io/lowbit-dev/lowbit-engine:0.1.0",
                        Ports = [new V1ContainerPort { Name = InferenceDeploymentBuilder.PortName, ContainerPort = stub.Port }],
                    },
                ],
            },
        });
        pod.Status = new V1PodStatus
        {
            Phase = "Running",
            PodIP = "127.0.0.1",
            Conditions = [new V1PodCondition { Type = "Ready", Status = "True" }],
        };
        _h.Api.UpdateStatus(pod);
        return stub;
    }

    /// <summary>Runs rounds until every stub was scraped once (the informer has seen the pods): each has its first sample.</summary>
    private async Task BaselineAsync(params EngineStub[] stubs)
    {
        var deadline = DateTime.UtcNow + OperatorHarness.Patience;
        while (stubs.Any(s => s.Scrapes == 0))
        {
            Assert.True(DateTime.UtcNow < deadline, "the scraper never reached the test's pods");
            await RoundAsync();
        }
    }

    /// <summary>Moves the scraper's clock one interval, waits for that round to finish, returns the operator's /metrics.</summary>
    private async Task<string> RoundAsync()
    {
        var deadline = DateTime.UtcNow + OperatorHarness.Patience;
        while (_clock.PendingDueTimes.Count == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "the scraper's timer never started");
            await Task.Delay(10);
        }

        var before = Scraper.CompletedRounds;
        _clock.Advance(Interval);
        while (Scraper.CompletedRounds == before)
        {
            Assert.True(DateTime.UtcNow < deadline, "the scrape round did not finish");
            await Task.Delay(10);
        }

        return await MetricsAsync();
    }

    private async Task<string> MetricsAsync()
    {
        using var http = new HttpClient();
        return await http.GetStringAsync(new Uri(_h.OperatorUrl, "/metrics"));
    }

    private static double? Sample(string exposition, string series)
    {
        foreach (var line in exposition.Split('\n'))
        {
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
            {
                return double.Parse(line[(series.Length + 1)..], CultureInfo.InvariantCulture);
            }
        }

        return null;
    }
}
