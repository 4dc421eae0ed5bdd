using System.Diagnostics.CodeAnalysis;
using System.Net;
using System.Net.Sockets;
using Lowbit.Engine.Protocol;
using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Telemetry;
using Lowbit.Operator.Runtime.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Tests.Metrics;

/// <summary>One scraper over an in-memory cache of endpoints and pods, scraping real HTTP servers; rounds run by hand on a manual clock.</summary>
public sealed class EndpointScraperTests : IAsyncDisposable
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(15);

    private readonly FakeTimeProvider _clock = new();
    private readonly MemoryCache _cache = new();
    private readonly RuntimeMetrics _metrics;
    private readonly CostMetrics _cost;
    private readonly OperatorState _state = new();
    private readonly List<EngineStub> _stubs = [];
    private readonly EndpointScraper _scraper;

    public EndpointScraperTests()
    {
        _metrics = new RuntimeMetrics();
        _cost = new CostMetrics(_metrics);
        _state.SetLeading(true);
        _scraper = NewScraper(TimeSpan.FromSeconds(10));
    }

    public async ValueTask DisposeAsync()
    {
        _scraper.Dispose();
        foreach (var stub in _stubs)
        {
            await stub.DisposeAsync();
        }
    }

    [Fact]
    public async Task Does_read_vllm_and_llamacpp_pods_by_their_runtime_names()
    {
        var vllm = await PodAsync(Endpoint("v", ServingRuntime.Vllm), "v-1");
        var llama = await PodAsync(Endpoint("l", ServingRuntime.LlamaCpp), "l-1");
        vllm.Serve(MetricsPages.Vllm);
        llama.Serve(MetricsPages.LlamaCpp);
        await RoundAsync();

        vllm.Serve(MetricsPages.Vllm
            .Replace("{model_name=\"chat\"} 60000.0", "{model_name=\"chat\"} 61000.0", StringComparison.Ordinal)
            .Replace("_count{model_name=\"chat\"} 40.0", "_count{model_name=\"chat\"} 45.0", StringComparison.Ordinal)
            .Replace("_sum{model_name=\"chat\"} 6.5", "_sum{model_name=\"chat\"} 8.5", StringComparison.Ordinal));
        llama.Serve(MetricsPages.LlamaCpp.Replace("tokens_predicted_total 4096", "tokens_predicted_total 4546", StringComparison.Ordinal));
        var exported = await RoundAsync();

        Assert.Equal(1000 / 15.0, Value(exported, "lowbit_endpoint_tokens_per_second", "v")!.Value, 9);
        Assert.Equal(0.4, Value(exported, "lowbit_endpoint_time_to_first_token_seconds", "v")!.Value, 9);
        Assert.Equal(30, Value(exported, "lowbit_endpoint_tokens_per_second", "l")!.Value, 9);
        Assert.Null(Value(exported, "lowbit_endpoint_time_to_first_token_seconds", "l"));
        Assert.Equal(0, Value(exported, "lowbit_endpoint_scrape_errors_total", "v"));
        Assert.Equal(0, Value(exported, "lowbit_endpoint_scrape_errors_total", "l"));
    }

    [Fact]
    public async Task Does_scrape_only_running_ready_serving_pods_of_the_endpoint()
    {
        var endpoint = Endpoint("e");
        var serving = await PodAsync(endpoint, "e-serving");
        var unready = await PodAsync(endpoint, "e-unready", pod => pod.Status.Conditions = [new V1PodCondition { Type = "Ready", Status = "False" }]);
        var pending = await PodAsync(endpoint, "e-pending", pod => pod.Status.Phase = "Pending");
        var terminating = await PodAsync(endpoint, "e-terminating", pod => pod.Metadata.DeletionTimestamp = DateTime.UtcNow);
        var noIp = await PodAsync(endpoint, "e-no-ip", pod => pod.Status.PodIP = null);
        var otherComponent = await PodAsync(endpoint, "e-quantize", pod => pod.Metadata.Labels[Labels.Component] = Labels.Components.Quantize);
        var orphan = await PodAsync(Endpoint("deleted"), "deleted-1", register: false);

        await RoundAsync();

        Assert.Equal(1, serving.Scrapes);
        Assert.All([unready, pending, terminating, noIp, otherComponent, orphan], stub => Assert.Equal(0, stub.Scrapes));
    }

    [Fact]
    public async Task Does_not_scrape_while_another_instance_leads()
    {
        var stub = await PodAsync(Endpoint("e"), "e-1");
        _state.SetLeading(false);

        var exported = await RoundAsync();
        Assert.Equal(0, stub.Scrapes);
        Assert.DoesNotContain("endpoint=\"e\"", exported, StringComparison.Ordinal);

        _state.SetLeading(true);
        await RoundAsync();
        Assert.Equal(1, stub.Scrapes);
    }

    [Fact]
    public async Task Does_count_a_pod_that_does_not_answer_in_time_as_a_scrape_error()
    {
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var port = ((IPEndPoint)silent.LocalEndpoint).Port;
        var endpoint = Endpoint("slow");
        _cache.Add(endpoint);
        _cache.Add(Pod(endpoint, "slow-1", port));

        // The listener accepts (the kernel's backlog) but never answers: the 300 ms timeout ends the scrape.
        using var impatient = NewScraper(TimeSpan.FromMilliseconds(300));
        var exported = await RoundAsync(impatient);

        Assert.Equal(1, Value(exported, "lowbit_endpoint_scrape_errors_total", "slow"));
        Assert.Null(Value(exported, "lowbit_endpoint_tokens_per_second", "slow"));
    }

    [Fact]
    public void Does_address_the_port_named_http_or_else_the_serve_port()
    {
        var named = Pod(Endpoint("e"), "p", 9400);
        var unnamed = Pod(Endpoint("e"), "q", 9400);
        unnamed.Spec.Containers[0].Ports = null;
        unnamed.Status.PodIP = "fd00:10:244::7";

        Assert.Equal(new Uri("http://127.0.0.1:9400/metrics"), EndpointScraper.MetricsUrl(named));
        Assert.Equal(new Uri($"http://[fd00:10:244::7]:{InferenceDeploymentBuilder.Port}/metrics"), EndpointScraper.MetricsUrl(unnamed));
    }

    [Theory]
    [InlineData("00:00:00.010", "00:00:03", 16, "Operator:Scrape:Interval must be between")]
    [InlineData("00:00:15", "00:00:00", 16, "Operator:Scrape:Timeout must be above 0")]
    [InlineData("00:00:15", "00:00:03", 0, "Operator:Scrape:MaxConcurrency must be between 1 and 256, got 0")]
    public void Does_reject_scrape_options_naming_the_setting(string interval, string timeout, int concurrency, string message)
    {
        var result = new EndpointScrapeOptionsValidator().Validate(null, new EndpointScrapeOptions
        {
            Interval = TimeSpan.Parse(interval, System.Globalization.CultureInfo.InvariantCulture),
            Timeout = TimeSpan.Parse(timeout, System.Globalization.CultureInfo.InvariantCulture),
            MaxConcurrency = concurrency,
        });

        Assert.True(result.Failed);
        Assert.Contains(message, result.FailureMessage, StringComparison.Ordinal);
    }

    private static InferenceEndpoint Endpoint(string name, ServingRuntime runtime = ServingRuntime.Lowbit) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "ml", Uid = Guid.NewGuid().ToString() },
        Spec = new InferenceEndpointSpec
        {
            Model = new ModelReference { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "org/model" } } },
            Runtime = runtime,
        },
    };

    private static V1Pod Pod(InferenceEndpoint endpoint, string name, int port) => new()
    {
        Metadata = new V1ObjectMeta
        {
            Name = name,
            NamespaceProperty = endpoint.Metadata.NamespaceProperty,
            Uid = Guid.NewGuid().ToString(),
            Labels = new Dictionary<string, string>(Labels.ForChild(InferenceEndpoint.KindName, endpoint.Metadata.Name, InferenceDeploymentBuilder.Role)),
        },
        Spec = new V1PodSpec
        {
            Containers = [new V1Container { Name = "engine", Ports = [new V1ContainerPort { Name = InferenceDeploymentBuilder.PortName, ContainerPort = port }] }],
        },
        Status = new V1PodStatus { Phase = "Running", PodIP = "127.0.0.1", Conditions = [new V1PodCondition { Type = "Ready", Status = "True" }] },
    };

    /// <summary>A pod of <paramref name="endpoint"/> served by a new stub; the endpoint is cached unless <paramref name="register"/> is false.</summary>
    private async Task<EngineStub> PodAsync(InferenceEndpoint endpoint, string name, Action<V1Pod>? change = null, bool register = true)
    {
        var stub = await EngineStub.StartAsync();
        _stubs.Add(stub);
        if (register && !_cache.List<InferenceEndpoint>().Any(e => e.Metadata.Name == endpoint.Metadata.Name))
        {
            _cache.Add(endpoint);
        }

        var pod = Pod(endpoint, name, stub.Port);
        change?.Invoke(pod);
        _cache.Add(pod);
        return stub;
    }

    private EndpointScraper NewScraper(TimeSpan timeout) =>
        new(_cache, _cost, _state, Options.Create(new EndpointScrapeOptions { Interval = Interval, Timeout = timeout }), _clock, NullLogger<EndpointScraper>.Instance);

    /// <summary>One round, an interval after the last, then the registry's exposition.</summary>
    private async Task<string> RoundAsync(EndpointScraper? scraper = null)
    {
        _clock.Advance(Interval);
        await (scraper ?? _scraper).ScrapeOnceAsync(CancellationToken.None);
        using var stream = new MemoryStream();
        await _metrics.Registry.CollectAndExportAsTextAsync(stream);
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>A series' value in the exposition, read back with the scraper's own parser; null when absent.</summary>
    private static double? Value(string exposition, string name, string endpoint) =>
        PrometheusText.Parse(exposition, n => n == name).Samples
            .SingleOrDefault(s => s.Labels["namespace"] == "ml" && s.Labels["endpoint"] == endpoint)?.Value;

    /// <summary>The operator's cache, as a list in memory.</summary>
    private sealed class MemoryCache : IObjectCache
    {
        private readonly List<object> _objects = [];

        public void Add(object obj)
        {
            lock (_objects)
            {
                _objects.Add(obj);
            }
        }

        public IReadOnlyList<ObjectKey> KeysByIndex<T>(string index, string value)
            where T : class, IKubernetesObject<V1ObjectMeta>
            => throw new NotSupportedException("the scraper reads no index");

        public bool TryGet<T>(ObjectKey key, [MaybeNullWhen(false)] out T obj)
            where T : class, IKubernetesObject<V1ObjectMeta>
        {
            obj = List<T>(key.Namespace).FirstOrDefault(o => o.Metadata.Name == key.Name);
            return obj is not null;
        }

        public IReadOnlyList<T> List<T>(string? ns = null)
            where T : class, IKubernetesObject<V1ObjectMeta>
        {
            lock (_objects)
            {
                return _objects.OfType<T>().Where(o => ns is null || o.Metadata.NamespaceProperty == ns).ToList();
            }
        }

        public IReadOnlyList<TChild> ListOwnedBy<TChild>(IKubernetesObject<V1ObjectMeta> owner)
            where TChild : class, IKubernetesObject<V1ObjectMeta> => [];
    }
}
