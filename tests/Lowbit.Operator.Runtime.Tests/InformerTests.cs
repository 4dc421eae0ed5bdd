using Lowbit.Operator.Runtime.Tests.Support;
using k8s.Models;
using Lowbit.Operator.Runtime;
using static Lowbit.Operator.Runtime.Tests.Support.TestSupport;

namespace Lowbit.Operator.Runtime.Tests;

/// <summary>T1: the informer against the in-test API server (list, chunked watch, bookmarks, 410, stalls, bad lines).</summary>
public sealed class InformerTests : IAsyncLifetime
{
    private FakeApiServer _server = null!;
    private readonly RuntimeMetrics _metrics = new();
    private readonly CancellationTokenSource _stop = new();
    private Task _run = Task.CompletedTask;

    public async Task InitializeAsync() => _server = await FakeApiServer.StartAsync();

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        await _run.WaitAsync(Patience);
        await _server.DisposeAsync();
        _stop.Dispose();
    }

    private async Task<(Informer<V1ConfigMap> Informer, RecordingHandler<V1ConfigMap> Events)> StartAsync(InformerOptions? options = null, CacheOptions<V1ConfigMap>? cache = null)
    {
        var informer = Informer(_server, _metrics, options, cache: cache);
        var events = new RecordingHandler<V1ConfigMap>();
        informer.AddHandler(events);
        _run = informer.RunAsync(_stop.Token);
        await informer.WaitForSyncAsync(CancellationToken.None).WaitAsync(Patience);
        return (informer, events);
    }

    private List<JournalEntry> Watches() => _server.Journal.Where(e => e.IsWatch && e.Path.EndsWith("configmaps", StringComparison.Ordinal)).ToList();

    private List<JournalEntry> Lists() => _server.Journal.Where(e => e.Method == "GET" && !e.IsWatch && e.Path.EndsWith("configmaps", StringComparison.Ordinal)).ToList();

    [Fact]
    public async Task Does_list_then_watch_from_the_list_version_with_bookmarks_and_a_timeout()
    {
        _server.Upsert(ConfigMap("a"));
        _server.Upsert(ConfigMap("b"));
        var listVersion = _server.CurrentResourceVersion;

        var (informer, events) = await StartAsync();
        await Eventually(() => Watches().Count == 1, "the first watch");
        _server.Upsert(ConfigMap("c"));
        await Eventually(() => events.Saw("add", "c"), "c added through the watch");

        Assert.True(informer.HasSynced);
        Assert.True(events.Saw("add", "a") && events.Saw("add", "b"));
        Assert.True(informer.TryGet(new ObjectKey("default", "c"), out _));
        var watch = Watches()[0];
        Assert.Equal(listVersion, watch.Parameter("resourceVersion"));
        Assert.Equal("true", watch.Parameter("allowWatchBookmarks"));
        Assert.InRange(int.Parse(watch.Parameter("timeoutSeconds")!, System.Globalization.CultureInfo.InvariantCulture), 300, 360);
        Assert.Equal("api/v1/namespaces/default/configmaps", watch.Path);
        Assert.Equal(1, _metrics.InformerSynced.WithLabels("configmap").Value);
    }

    [Fact]
    public async Task Does_treat_a_kind_the_server_does_not_serve_as_empty_and_synced_and_pick_it_up_once_served()
    {
        // A CRD that is not installed: every list answers 404 until it is.
        _server.Fail(e => e.Method == "GET" && !e.IsWatch && e.Path.EndsWith("configmaps", StringComparison.Ordinal), 404, times: 10);
        _server.Upsert(ConfigMap("a"));

        var (informer, events) = await StartAsync(cache: new CacheOptions<V1ConfigMap> { Optional = true });

        Assert.True(informer.HasSynced);
        Assert.False(informer.Served);
        Assert.Equal(0, informer.Count);
        Assert.Equal(1, _metrics.InformerSynced.WithLabels("configmap").Value);
        // Listed again (every MaxBackoff) until the kind is served, then cached and watched as usual.
        await Eventually(() => informer.Served && events.Saw("add", "a"), "served after the faults");
        Assert.Equal(11, Lists().Count);
        await Eventually(() => Watches().Count == 1, "the watch after the first successful list");
    }

    [Fact]
    public async Task Does_not_sync_a_required_kind_the_server_does_not_serve()
    {
        _server.Fail(e => e.Method == "GET" && !e.IsWatch && e.Path.EndsWith("configmaps", StringComparison.Ordinal), 404, times: 1000);
        var informer = Informer<V1ConfigMap>(_server, _metrics);
        _run = informer.RunAsync(_stop.Token);

        await Eventually(() => Lists().Count >= 3, "retried lists");

        Assert.False(informer.HasSynced);
        Assert.True(informer.Served);
    }

    [Fact]
    public async Task Does_resume_from_the_newest_bookmark_after_the_stream_ends()
    {
        _server.Upsert(ConfigMap("a"));
        var (informer, _) = await StartAsync();
        await Eventually(() => _server.OpenWatches == 1, "the watch is open");

        _server.Upsert(ConfigMap("b"));
        _server.Bookmark(1000);
        await Eventually(() => informer.ResourceVersion == "1000", "bookmark applied");
        _server.CloseWatches();
        await Eventually(() => Watches().Count == 2, "the second watch");

        Assert.Equal("1000", Watches()[1].Parameter("resourceVersion"));
        Assert.Single(Lists()); // resumed, not relisted
        Assert.Equal(1, Value(_metrics.WatchReconnects, "configmap", "closed"));
    }

    [Fact]
    public async Task Does_relist_after_410_and_deliver_a_delete_missed_while_disconnected()
    {
        _server.Upsert(ConfigMap("a"));
        _server.Upsert(ConfigMap("b"));
        var (informer, events) = await StartAsync();
        await Eventually(() => _server.OpenWatches == 1, "the watch is open");

        // Disconnected: b goes away and a changes, and the history we would resume from is compacted away.
        _server.PauseWatches();
        _server.CloseWatches();
        await Eventually(() => _server.HeldWatches == 1, "the reconnect is held");
        _server.Delete<V1ConfigMap>("default", "b");
        _server.Upsert(ConfigMap("a", value: "2"));
        _server.Compact();
        _server.ResumeWatches();

        await Eventually(() => events.Saw("delete", "b"), "the synthesized delete of b");
        Assert.False(informer.TryGet(new ObjectKey("default", "b"), out _));
        Assert.True(informer.TryGet(new ObjectKey("default", "a"), out var a));
        Assert.Equal("2", a.Data["value"]);
        Assert.Equal(2, Lists().Count);
        Assert.Equal(1, Value(_metrics.WatchRelists, "configmap", "expired"));
        await Eventually(() => Watches().Count == 3, "a watch from the new list");
        Assert.Equal(_server.CurrentResourceVersion, Watches()[2].Parameter("resourceVersion"));
    }

    /// <summary>Config maps filed by the <c>ref</c> value they carry (as endpoints are by the QuantizedModel they use).</summary>
    private static readonly CacheOptions<V1ConfigMap> ByRef = new()
    {
        Indexes = new Dictionary<string, Func<V1ConfigMap, IEnumerable<string>>>
        {
            ["ref"] = c => c.Data?.TryGetValue("ref", out var r) == true ? [r] : [],
        },
    };

    private static V1ConfigMap Referencing(string name, string reference)
    {
        var map = ConfigMap(name);
        map.Data["ref"] = reference;
        return map;
    }

    private static string[] Names(IReadOnlyList<ObjectKey> keys) => [.. keys.Select(k => k.Name).Order(StringComparer.Ordinal)];

    [Fact]
    public async Task Does_keep_an_index_current_through_adds_updates_deletes_and_a_relist()
    {
        _server.Upsert(Referencing("a", "m1"));
        _server.Upsert(Referencing("b", "m1"));
        _server.Upsert(ConfigMap("plain"));
        var (informer, events) = await StartAsync(cache: ByRef);
        await Eventually(() => _server.OpenWatches == 1, "the watch is open");
        Assert.Equal(["a", "b"], Names(informer.KeysByIndex("ref", "m1")));
        Assert.Empty(informer.KeysByIndex("ref", "m2"));

        // Through the watch: a moves to m2, c arrives on m2, b goes.
        _server.Upsert(Referencing("a", "m2"));
        _server.Upsert(Referencing("c", "m2"));
        _server.Delete<V1ConfigMap>("default", "b");
        await Eventually(() => events.Saw("delete", "b"), "b deleted");
        Assert.Empty(informer.KeysByIndex("ref", "m1"));
        Assert.Equal(["a", "c"], Names(informer.KeysByIndex("ref", "m2")));

        // Missed while disconnected (history compacted): c is deleted and a moves back; the relist refiles both.
        _server.PauseWatches();
        _server.CloseWatches();
        await Eventually(() => _server.HeldWatches == 1, "the reconnect is held");
        _server.Delete<V1ConfigMap>("default", "c");
        _server.Upsert(Referencing("a", "m1"));
        _server.Compact();
        _server.ResumeWatches();
        await Eventually(() => events.Saw("delete", "c"), "the synthesized delete of c");
        Assert.Equal(["a"], Names(informer.KeysByIndex("ref", "m1")));
        Assert.Empty(informer.KeysByIndex("ref", "m2"));

        var unknown = Assert.Throws<InvalidOperationException>(() => informer.KeysByIndex("owner", "x"));
        Assert.Contains("'owner'", unknown.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_relist_when_the_watch_sends_an_ERROR_410_event()
    {
        _server.Upsert(ConfigMap("a"));
        _server.ScriptNextWatch(WatchScript.Gone);

        var (_, events) = await StartAsync();
        await Eventually(() => Lists().Count == 2 && _server.OpenWatches == 1, "relist and a fresh watch");
        _server.Upsert(ConfigMap("c"));
        await Eventually(() => events.Saw("add", "c"), "events after the relist");

        Assert.Equal(1, Value(_metrics.WatchRelists, "configmap", "expired"));
        Assert.Equal(1, Value(_metrics.WatchReconnects, "configmap", "expired"));
    }

    [Fact]
    public async Task Does_reconnect_a_stalled_watch_after_the_idle_timeout()
    {
        _server.Upsert(ConfigMap("a"));
        _server.ScriptNextWatch(WatchScript.Stall);
        var (_, events) = await StartAsync(FastInformerOptions with { IdleTimeout = TimeSpan.FromMilliseconds(300) });
        await Eventually(() => Watches().Count == 1, "the stalled watch");

        // The stalled stream never delivers this; the next watch replays it from the last resourceVersion.
        _server.Upsert(ConfigMap("c"));
        await Eventually(() => events.Saw("add", "c"), "c seen after reconnecting");

        Assert.Equal(1, Value(_metrics.WatchReconnects, "configmap", "idle"));
        Assert.Single(Lists());
        Assert.Equal(Watches()[0].Parameter("resourceVersion"), Watches()[1].Parameter("resourceVersion"));
    }

    [Fact]
    public async Task Does_count_an_undecodable_line_and_relist()
    {
        _server.Upsert(ConfigMap("a"));
        _server.ScriptNextWatch(WatchScript.Malformed);

        var (_, events) = await StartAsync();
        await Eventually(() => Lists().Count == 2 && _server.OpenWatches == 1, "relist after the bad line");
        _server.Upsert(ConfigMap("c"));
        await Eventually(() => events.Saw("add", "c"), "events after the relist");

        Assert.Equal(1, _metrics.WatchDecodeErrors.WithLabels("configmap").Value);
        Assert.Equal(1, Value(_metrics.WatchRelists, "configmap", "decode_error"));
    }

    [Fact]
    public async Task Does_keep_listing_through_server_errors_and_sync_when_they_stop()
    {
        _server.Upsert(ConfigMap("a"));
        _server.Fail(e => !e.IsWatch && e.Path.EndsWith("configmaps", StringComparison.Ordinal), 403, times: 3);

        var (informer, _) = await StartAsync();

        Assert.True(informer.HasSynced);
        Assert.Equal(4, Lists().Count);
        Assert.Equal(4, Value(_metrics.WatchRelists, "configmap", "initial"));
    }
}
