using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Lowbit.LocalCluster.Store;
using Lowbit.LocalCluster.Testing;

namespace Lowbit.LocalCluster.Tests;

/// <summary>The embedded API server through KubernetesClient (the operator's client): watch, conflicts, faults, restart.</summary>
public sealed class ClientTests : IClassFixture<ClusterFixture>
{
    private readonly ClusterFixture _cluster;

    public ClientTests(ClusterFixture cluster) => _cluster = cluster;

    private static V1ConfigMap ConfigMap(string name, string value = "v") => new()
    {
        Metadata = new V1ObjectMeta { Name = name, Labels = new Dictionary<string, string> { ["app"] = "test" } },
        Data = new Dictionary<string, string> { ["k"] = value },
    };

    private async Task<string> NamespaceAsync(IKubernetes client)
    {
        var name = "c-" + Guid.NewGuid().ToString("N")[..8];
        await client.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = name } });
        return name;
    }

    [Fact]
    public async Task Does_resume_watch_from_list_resource_version_without_replaying_older_objects()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("a"), ns);
        var list = await client.CoreV1.ListNamespacedConfigMapAsync(ns);
        Assert.Single(list.Items);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("b"), ns);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("c"), ns);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var seen = new List<string>();
        await foreach (var (type, item) in client.CoreV1.WatchListNamespacedConfigMapAsync(ns, resourceVersion: list.Metadata.ResourceVersion, cancellationToken: cts.Token))
        {
            Assert.Equal(WatchEventType.Added, type);
            seen.Add(item.Metadata.Name);
            if (seen.Count == 2)
            {
                break;
            }
        }
        Assert.Equal(["b", "c"], seen);
    }

    [Fact]
    public async Task Does_send_bookmarks_with_current_resource_version_when_allowed()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        var created = await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("a"), ns);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        string? bookmarkRv = null;
        await foreach (var (type, item) in client.CoreV1.WatchListNamespacedConfigMapAsync(ns, resourceVersion: created.Metadata.ResourceVersion,
            allowWatchBookmarks: true, cancellationToken: cts.Token))
        {
            if (type == WatchEventType.Bookmark)
            {
                bookmarkRv = item.Metadata.ResourceVersion;
                break;
            }
        }
        Assert.NotNull(bookmarkRv);
        Assert.True(long.Parse(bookmarkRv!) >= long.Parse(created.Metadata.ResourceVersion));
    }

    [Fact]
    public async Task Does_answer_410_gone_as_watch_error_when_resource_version_is_older_than_history_then_relist_works()
    {
        await using var server = await LocalClusterServer.StartAsync(new LocalClusterOptions { Store = new ClusterApiOptions { WatchHistoryPerResource = 3 } });
        using var client = server.CreateClient();
        var first = await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("cm-0"), "default");
        for (var i = 1; i < 8; i++)
        {
            await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap($"cm-{i}"), "default");
        }
        Exception? error = null;
        var events = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await foreach (var _ in client.CoreV1.WatchListNamespacedConfigMapAsync("default", resourceVersion: first.Metadata.ResourceVersion,
            onError: e => error = e, cancellationToken: cts.Token))
        {
            events++;
        }
        Assert.Equal(0, events);
        var status = Assert.IsType<KubernetesException>(error).Status;
        Assert.Equal(410, status.Code);
        Assert.Equal("Expired", status.Reason);
        var relist = await client.CoreV1.ListNamespacedConfigMapAsync("default");
        Assert.Equal(8, relist.Items.Count);
    }

    [Fact]
    public async Task Does_end_watch_after_timeout_seconds()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("one"), ns);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var events = 0;
        await foreach (var _ in client.CoreV1.WatchListNamespacedConfigMapAsync(ns, timeoutSeconds: 1, cancellationToken: cts.Token))
        {
            events++;
        }
        Assert.False(cts.IsCancellationRequested, "the server should end the watch after timeoutSeconds");
        Assert.Equal(1, events);
    }

    [Fact]
    public async Task Does_delete_a_collection_by_label_selector()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("one"), ns);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("two"), ns);
        await client.CoreV1.CreateNamespacedConfigMapAsync(new V1ConfigMap { Metadata = new V1ObjectMeta { Name = "other" } }, ns);
        await client.CoreV1.DeleteCollectionNamespacedConfigMapAsync(ns, labelSelector: "app=test");
        var left = await client.CoreV1.ListNamespacedConfigMapAsync(ns);
        Assert.Equal("other", Assert.Single(left.Items).Metadata.Name);
    }

    [Fact]
    public async Task Does_reject_stale_update_with_409_conflict()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        var original = await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("a"), ns);
        var fresh = await client.CoreV1.ReadNamespacedConfigMapAsync("a", ns);
        fresh.Data["k"] = "new";
        await client.CoreV1.ReplaceNamespacedConfigMapAsync(fresh, "a", ns);
        original.Data["k"] = "stale";
        var ex = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.ReplaceNamespacedConfigMapAsync(original, "a", ns));
        Assert.Equal(HttpStatusCode.Conflict, ex.Response.StatusCode);
        Assert.Contains("the object has been modified", ex.Response.Content, StringComparison.Ordinal);
        Assert.Equal("new", (await client.CoreV1.ReadNamespacedConfigMapAsync("a", ns)).Data["k"]);
    }

    [Fact]
    public async Task Does_not_bump_generation_when_status_subresource_is_written()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        var deployment = await client.AppsV1.CreateNamespacedDeploymentAsync(new V1Deployment
        {
            Metadata = new V1ObjectMeta { Name = "web" },
            Spec = new V1DeploymentSpec
            {
                Selector = new V1LabelSelector { MatchLabels = new Dictionary<string, string> { ["app"] = "web" } },
                Template = new V1PodTemplateSpec
                {
                    Metadata = new V1ObjectMeta { Labels = new Dictionary<string, string> { ["app"] = "web" } },
                    Spec = new V1PodSpec { Containers = [new V1Container { Name = "web", Image = "nginx:1.25" }] },
                },
            },
        }, ns);
        Assert.Equal(1, deployment.Metadata.Generation);
        deployment.Status = new V1DeploymentStatus { Replicas = 1, ReadyReplicas = 1, ObservedGeneration = 1 };
        var afterStatus = await client.AppsV1.ReplaceNamespacedDeploymentStatusAsync(deployment, "web", ns);
        Assert.Equal(1, afterStatus.Metadata.Generation);
        Assert.Equal(1, afterStatus.Status.ReadyReplicas);
        afterStatus.Spec.Replicas = 4;
        afterStatus.Status.ReadyReplicas = 99;
        var afterSpec = await client.AppsV1.ReplaceNamespacedDeploymentAsync(afterStatus, "web", ns);
        Assert.Equal(2, afterSpec.Metadata.Generation);
        Assert.Equal(1, afterSpec.Status.ReadyReplicas);
    }

    [Fact]
    public async Task Does_return_invalid_status_with_field_causes_when_pod_has_no_containers()
    {
        using var client = _cluster.Server.CreateClient();
        var ex = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.CreateNamespacedPodAsync(
            new V1Pod { Metadata = new V1ObjectMeta { Name = "empty" }, Spec = new V1PodSpec { Containers = [] } }, "default"));
        Assert.Equal((HttpStatusCode)422, ex.Response.StatusCode);
        var status = KubernetesJson.Deserialize<V1Status>(ex.Response.Content);
        Assert.Equal("Invalid", status.Reason);
        Assert.Contains(status.Details.Causes, c => c.Field == "spec.containers" && c.Reason == "FieldValueRequired");
    }

    [Fact]
    public async Task Does_return_not_found_and_already_exists_statuses()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        var missing = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.ReadNamespacedConfigMapAsync("nope", ns));
        Assert.Equal(HttpStatusCode.NotFound, missing.Response.StatusCode);
        Assert.Equal("NotFound", KubernetesJson.Deserialize<V1Status>(missing.Response.Content).Reason);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("dup"), ns);
        var duplicate = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("dup"), ns));
        Assert.Equal(HttpStatusCode.Conflict, duplicate.Response.StatusCode);
        Assert.Equal("AlreadyExists", KubernetesJson.Deserialize<V1Status>(duplicate.Response.Content).Reason);
    }

    [Fact]
    public async Task Does_inject_429_with_retry_after_then_500_then_succeed()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("target"), ns);
        _cluster.Server.Faults.FailNext(1, 429, verb: "get", pathContains: $"/namespaces/{ns}/configmaps/target", retryAfterSeconds: 3);
        _cluster.Server.Faults.FailNext(1, 500, verb: "get", pathContains: $"/namespaces/{ns}/configmaps/target");
        var throttled = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.ReadNamespacedConfigMapAsync("target", ns));
        Assert.Equal((HttpStatusCode)429, throttled.Response.StatusCode);
        Assert.Equal("3", throttled.Response.Headers["Retry-After"].Single());
        var failed = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.ReadNamespacedConfigMapAsync("target", ns));
        Assert.Equal(HttpStatusCode.InternalServerError, failed.Response.StatusCode);
        Assert.Equal("v", (await client.CoreV1.ReadNamespacedConfigMapAsync("target", ns)).Data["k"]);
    }

    [Fact]
    public async Task Does_hold_a_delayed_request_until_the_client_gives_up_and_answer_the_next_one()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("slow"), ns);
        _cluster.Server.Faults.DelayNext(1, TimeSpan.FromSeconds(60), verb: "get", pathContains: $"/namespaces/{ns}/configmaps/slow");
        using var giveUp = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.CoreV1.ReadNamespacedConfigMapAsync("slow", ns, cancellationToken: giveUp.Token));
        Assert.Equal("v", (await client.CoreV1.ReadNamespacedConfigMapAsync("slow", ns)).Data["k"]);
    }

    [Fact]
    public async Task Does_inject_409_on_status_writes_only()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        var cm = await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("x"), ns);
        _cluster.Server.Faults.FailNext(1, 409, verb: "update", pathContains: $"/namespaces/{ns}/configmaps/x");
        cm.Data["k"] = "2";
        var conflict = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.ReplaceNamespacedConfigMapAsync(cm, "x", ns));
        Assert.Equal(HttpStatusCode.Conflict, conflict.Response.StatusCode);
        Assert.Equal("2", (await client.CoreV1.ReplaceNamespacedConfigMapAsync(cm, "x", ns)).Data["k"]);
    }

    [Fact]
    public async Task Does_end_watch_with_410_error_when_expiry_is_injected()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("a"), ns);
        _cluster.Server.Faults.BreakNextWatch(WatchFault.Expire, pathContains: $"/namespaces/{ns}/configmaps", afterEvents: 1);
        Exception? error = null;
        var added = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await foreach (var (type, _) in client.CoreV1.WatchListNamespacedConfigMapAsync(ns, onError: e => error = e, cancellationToken: cts.Token))
        {
            added += type == WatchEventType.Added ? 1 : 0;
        }
        Assert.Equal(1, added);
        Assert.Equal(410, Assert.IsType<KubernetesException>(error).Status.Code);
    }

    [Fact]
    public async Task Does_cut_watch_when_drop_is_injected()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("a"), ns);
        _cluster.Server.Faults.BreakNextWatch(WatchFault.Drop, pathContains: $"/namespaces/{ns}/configmaps", afterEvents: 1);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var received = 0;
        Exception? failure = null;
        try
        {
            await foreach (var _ in client.CoreV1.WatchListNamespacedConfigMapAsync(ns, onError: e => failure = e, cancellationToken: cts.Token))
            {
                received++;
            }
        }
        catch (Exception ex) when (ex is IOException or HttpRequestException)
        {
            failure = ex;
        }
        Assert.False(cts.IsCancellationRequested, "the dropped watch should end, not hang");
        Assert.True(received <= 1, $"received {received} events; the connection was cut after the first");
        // The server journals a request when its handler returns, which can be just after the client saw the cut.
        bool Journaled() => _cluster.Server.Journal.Entries.Any(e => e.Verb == "watch" && e.Path.Contains($"/namespaces/{ns}/configmaps", StringComparison.Ordinal));
        for (var i = 0; i < 100 && !Journaled(); i++)
        {
            await Task.Delay(50);
        }
        Assert.True(Journaled(), "the dropped watch is in the server's journal");
    }

    [Fact]
    public async Task Does_deliver_nothing_after_a_stall_is_injected()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("a"), ns);
        _cluster.Server.Faults.BreakNextWatch(WatchFault.Stall, pathContains: $"/namespaces/{ns}/configmaps", afterEvents: 1);
        using var cts = new CancellationTokenSource();
        var names = new List<string>();
        var firstSeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var watching = Task.Run(async () =>
        {
            await foreach (var (_, item) in client.CoreV1.WatchListNamespacedConfigMapAsync(ns, cancellationToken: cts.Token))
            {
                lock (names)
                {
                    names.Add(item.Metadata.Name);
                }
                firstSeen.TrySetResult();
            }
        });
        await firstSeen.Task.WaitAsync(TimeSpan.FromSeconds(20));
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("b"), ns);
        using var control = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await foreach (var (_, item) in client.CoreV1.WatchListNamespacedConfigMapAsync(ns, cancellationToken: control.Token))
        {
            if (item.Metadata.Name == "b")
            {
                break;
            }
        }
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<Exception>(() => watching);
        lock (names)
        {
            Assert.Equal(["a"], names);
        }
    }

    [Fact]
    public async Task Does_keep_objects_and_resource_versions_across_restart()
    {
        await using var server = await LocalClusterServer.StartAsync();
        string rv;
        using (var client = server.CreateClient())
        {
            rv = (await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("kept", "before"), "default")).Metadata.ResourceVersion;
        }
        await server.RestartAsync();
        using var after = server.CreateClient();
        var kept = await after.CoreV1.ReadNamespacedConfigMapAsync("kept", "default");
        Assert.Equal("before", kept.Data["k"]);
        Assert.Equal(rv, kept.Metadata.ResourceVersion);
        var next = await after.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("new"), "default");
        Assert.True(long.Parse(next.Metadata.ResourceVersion) > long.Parse(rv));
    }

    [Fact]
    public async Task Does_record_writes_with_field_manager_in_the_journal()
    {
        using var client = _cluster.Server.CreateClient();
        var ns = await NamespaceAsync(client);
        await client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("j"), ns, fieldManager: "journal-test");
        await client.CoreV1.ReadNamespacedConfigMapAsync("j", ns);
        var entries = _cluster.Server.Journal.Entries.Where(e => e.Path.Contains($"/namespaces/{ns}/configmaps", StringComparison.Ordinal)).ToList();
        var write = Assert.Single(entries, e => e.IsWrite);
        Assert.Equal("create", write.Verb);
        Assert.Equal("journal-test", write.FieldManager);
        Assert.Equal(201, write.Status);
        Assert.Contains(entries, e => e.Verb == "get" && e.Status == 200);
    }

    [Fact]
    public async Task Does_speak_http2_over_tls_with_the_generated_ca()
    {
        using var handler = new SocketsHttpHandler();
        var ca = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(_cluster.Server.CaPem!);
        handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, _, _) =>
        {
            using var chain = new System.Security.Cryptography.X509Certificates.X509Chain();
            chain.ChainPolicy.TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(ca);
            chain.ChainPolicy.RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
            return cert is not null && chain.Build(new System.Security.Cryptography.X509Certificates.X509Certificate2(cert));
        };
        using var http = new HttpClient(handler) { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using var response = await http.GetAsync(new Uri(_cluster.Server.Url, "/version"));
        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Contains("v1.33.0", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }
}
