using k8s.Models;
using Lowbit.Operator.Controllers;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Runtime.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lowbit.Operator.Tests.Reconcilers;

public sealed class EventRecorderTests
{
    private static V1ConfigMap Object(int i) => new()
    {
        ApiVersion = "v1",
        Kind = "ConfigMap",
        Metadata = new V1ObjectMeta { Name = $"obj-{i}", NamespaceProperty = "default", Uid = $"uid-{i}" },
    };

    private static int EventPosts(FakeApiServer server) =>
        server.Journal.Count(e => e.Method == "POST" && e.Path.EndsWith("/events", StringComparison.Ordinal));

    [Fact]
    public async Task Does_drop_suppression_entries_when_older_than_the_window()
    {
        await using var server = await FakeApiServer.StartAsync();
        var time = new FakeTimeProvider();
        var recorder = new EventRecorder(TestSupport.Client(server, new RuntimeMetrics()), time, NullLogger<EventRecorder>.Instance);

        for (var i = 0; i < 200; i++)
        {
            await recorder.RecordAsync(Object(i), "Normal", "Planned", $"placed on node type {i}", CancellationToken.None);
        }

        Assert.Equal((200, 200), recorder.Tracked);
        Assert.Equal(200, EventPosts(server));

        // Within the window the same event is suppressed (no request) and nothing is forgotten.
        time.Advance(EventRecorder.DedupWindow / 2);
        await recorder.RecordAsync(Object(0), "Normal", "Planned", "placed on node type 0", CancellationToken.None);
        Assert.Equal(200, EventPosts(server));
        Assert.Equal((200, 200), recorder.Tracked);

        // Past the window every old entry expires on the next insert; only the new one is held.
        time.Advance(EventRecorder.DedupWindow);
        await recorder.RecordAsync(Object(7), "Warning", "OOMKilled", "container ran out of memory", CancellationToken.None);
        Assert.Equal((1, 1), recorder.Tracked);
        Assert.Equal(201, EventPosts(server));
    }

    [Fact]
    public async Task Does_cap_the_maps_when_a_burst_of_objects_arrives_within_one_window()
    {
        await using var server = await FakeApiServer.StartAsync();
        var time = new FakeTimeProvider();
        var recorder = new EventRecorder(TestSupport.Client(server, new RuntimeMetrics()), time, NullLogger<EventRecorder>.Instance)
        {
            MaxTracked = 100,
        };

        for (var i = 0; i < 250; i++)
        {
            time.Advance(TimeSpan.FromMilliseconds(1));
            await recorder.RecordAsync(Object(i), "Normal", "Planned", "placed", CancellationToken.None);
        }

        var (recent, perObject) = recorder.Tracked;
        Assert.InRange(recent, 1, 100);
        Assert.InRange(perObject, 1, 100);
        Assert.Equal(250, EventPosts(server));
    }
}
