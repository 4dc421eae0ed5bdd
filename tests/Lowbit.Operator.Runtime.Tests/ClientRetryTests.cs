using System.Net;
using Lowbit.Operator.Runtime.Tests.Support;
using k8s;
using k8s.Autorest;
using Lowbit.Operator.Runtime;
using static Lowbit.Operator.Runtime.Tests.Support.TestSupport;

namespace Lowbit.Operator.Runtime.Tests;

/// <summary>T1: API-server back-pressure through the Kubernetes client's handler chain.</summary>
public sealed class ClientRetryTests : IAsyncLifetime
{
    private FakeApiServer _server = null!;
    private readonly RuntimeMetrics _metrics = new();

    public async Task InitializeAsync() => _server = await FakeApiServer.StartAsync();

    public async Task DisposeAsync() => await _server.DisposeAsync();

    private int Requests(string method, string pathEnd) =>
        _server.Journal.Count(e => e.Method == method && e.Path.EndsWith(pathEnd, StringComparison.Ordinal));

    [Fact]
    public async Task Does_not_retry_a_429_before_its_Retry_After()
    {
        var time = new FakeTimeProvider();
        _server.Upsert(ConfigMap("a"));
        _server.Fail(e => e.Method == "GET", 429, retryAfterSeconds: 2);
        using var client = Client(_server, _metrics, time);
        var started = time.GetUtcNow();

        var list = client.CoreV1.ListNamespacedConfigMapAsync("default");
        await Eventually(() => time.PendingDueTimes.Count > 0, "the retry waits on the clock");

        Assert.True(time.PendingDueTimes[0] - started >= TimeSpan.FromSeconds(2), $"retry scheduled {time.PendingDueTimes[0] - started} after the 429");
        time.Advance(TimeSpan.FromSeconds(1.99));
        Assert.False(list.IsCompleted);
        Assert.Equal(1, Requests("GET", "configmaps"));

        time.Advance(TimeSpan.FromSeconds(0.2));
        var result = await list.WaitAsync(Patience);

        Assert.Single(result.Items);
        Assert.Equal(2, Requests("GET", "configmaps"));
        Assert.Equal(1, Value(_metrics.RestRequests, "429", "GET", _server.Url.Authority));
        Assert.Equal(1, Value(_metrics.RestRequests, "200", "GET", _server.Url.Authority));
        Assert.Equal(1, Value(_metrics.RestRetries, "429", "GET"));
    }

    [Fact]
    public async Task Does_retry_5xx_with_backoff_and_give_up_after_the_attempt_bound()
    {
        _server.Fail(e => e.Method == "GET", 503, times: 100);
        using var client = Client(_server, _metrics, retry: new ClientRetryOptions { MaxAttempts = 3, BaseDelay = TimeSpan.FromMilliseconds(5) });

        var error = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.ListNamespacedConfigMapAsync("default"));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, error.Response.StatusCode);
        Assert.Equal(3, Requests("GET", "configmaps"));
        Assert.Equal(2, Value(_metrics.RestRetries, "503", "GET"));
    }

    [Fact]
    public async Task Does_not_retry_a_create_on_500_without_Retry_After()
    {
        _server.Fail(e => e.Method == "POST", 500, times: 100);
        using var client = Client(_server, _metrics);

        await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("a"), "default"));

        Assert.Equal(1, Requests("POST", "configmaps"));
    }

    [Fact]
    public async Task Does_hand_back_a_Retry_After_longer_than_the_bound()
    {
        _server.Fail(e => e.Method == "GET", 429, times: 100, retryAfterSeconds: 3600);
        using var client = Client(_server, _metrics);

        var error = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.ListNamespacedConfigMapAsync("default"));

        Assert.Equal(HttpStatusCode.TooManyRequests, error.Response.StatusCode);
        Assert.Equal(1, Requests("GET", "configmaps"));
    }
}
