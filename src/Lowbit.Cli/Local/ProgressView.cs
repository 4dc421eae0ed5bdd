using System.Globalization;
using System.Text.Json.Nodes;
using k8s;
using Lowbit.Api;
using Spectre.Console;

namespace Lowbit.Cli.Local;

/// <summary>An object the demo follows: its kind, plural (for the API path), namespace and name.</summary>
public sealed record FollowedObject(string Kind, string Plural, string Namespace, string Name);

/// <summary>What one poll saw of a followed object, reduced to what a person reads.</summary>
public sealed record ObjectState(FollowedObject Object, string Ready, string Phase, string Detail, bool Failed)
{
    public bool IsReady => Ready == "True";

    public string Line => $"{Object.Kind}/{Object.Name}: ready={Ready} phase={(Phase.Length == 0 ? "-" : Phase)}{(Detail.Length == 0 ? "" : " " + Detail)}";
}

/// <summary>
/// Follows Lowbit objects until all are Ready, one fails (Stalled), or time runs out: a live table on a terminal; on a
/// pipe or a CI log, one plain line per change (progress of the same phase at most every <see cref="PlainInterval"/>),
/// so the log stays readable.
/// </summary>
public static class ProgressView
{
    public static readonly TimeSpan PlainInterval = TimeSpan.FromSeconds(10);

    public static async Task<IReadOnlyList<ObjectState>> FollowAsync(Kubernetes client, IReadOnlyList<FollowedObject> objects, IAnsiConsole console,
        bool live, TimeSpan timeout, TimeProvider time, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(console);
        ArgumentNullException.ThrowIfNull(time);
        var start = time.GetTimestamp();
        IReadOnlyList<ObjectState> states = [];
        bool Done() => states.Count > 0 && (states.All(s => s.IsReady) || states.Any(s => s.Failed));
        if (live)
        {
            var table = new Table().AddColumns("Kind", "Name", "Ready", "Phase", "Progress");
            await console.Live(table).StartAsync(async context =>
            {
                while (!Done() && time.GetElapsedTime(start) < timeout)
                {
                    states = await PollAsync(client, objects, cancellationToken).ConfigureAwait(false);
                    table.Rows.Clear();
                    foreach (var s in states)
                    {
                        var ready = s.IsReady ? "[green]True[/]" : s.Failed ? "[red]False[/]" : Markup.Escape(s.Ready);
                        table.AddRow(s.Object.Kind, s.Object.Name, ready, Markup.Escape(s.Phase), Markup.Escape(s.Detail));
                    }
                    table.Caption(string.Create(CultureInfo.InvariantCulture, $"{time.GetElapsedTime(start).TotalSeconds:0} s"));
                    context.Refresh();
                    if (!Done())
                    {
                        await Task.Delay(TimeSpan.FromSeconds(1), time, cancellationToken).ConfigureAwait(false);
                    }
                }
            }).ConfigureAwait(false);
            return states;
        }

        var printed = new Dictionary<FollowedObject, (string Phase, string Ready, string Line, TimeSpan At)>();
        while (!Done() && time.GetElapsedTime(start) < timeout)
        {
            states = await PollAsync(client, objects, cancellationToken).ConfigureAwait(false);
            var elapsed = time.GetElapsedTime(start);
            foreach (var s in states)
            {
                var seen = printed.TryGetValue(s.Object, out var last);
                var changed = !seen || last.Phase != s.Phase || last.Ready != s.Ready;
                var progressed = seen && last.Line != s.Line && elapsed - last.At >= PlainInterval;
                if (changed || progressed)
                {
                    console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{elapsed.TotalSeconds,4:0}s] {s.Line}"));
                    printed[s.Object] = (s.Phase, s.Ready, s.Line, elapsed);
                }
            }
            if (!Done())
            {
                await Task.Delay(TimeSpan.FromSeconds(1), time, cancellationToken).ConfigureAwait(false);
            }
        }
        return states;
    }

    public static async Task<IReadOnlyList<ObjectState>> PollAsync(Kubernetes client, IReadOnlyList<FollowedObject> objects, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(objects);
        var states = new List<ObjectState>(objects.Count);
        foreach (var o in objects)
        {
            var node = await client.CustomObjects.GetNamespacedCustomObjectAsync<JsonObject>(ApiGroup.Group, ApiGroup.Version, o.Namespace, o.Plural, o.Name,
                cancellationToken).ConfigureAwait(false);
            states.Add(Describe(o, node));
        }
        return states;
    }

    /// <summary>Reads the conventions every Lowbit kind shares: the Ready and Stalled conditions, phase, progress and artifact.</summary>
    public static ObjectState Describe(FollowedObject o, JsonObject? obj)
    {
        ArgumentNullException.ThrowIfNull(o);
        var status = obj?["status"] as JsonObject;
        var conditions = status?["conditions"] as JsonArray ?? [];
        JsonObject? Condition(string type) => conditions.OfType<JsonObject>().FirstOrDefault(c => (string?)c["type"] == type);
        var ready = Condition("Ready");
        var stalled = Condition("Stalled");
        var failed = (string?)stalled?["status"] == "True";
        var detail = new List<string>();
        if (status?["progress"] is JsonObject progress && progress["totalSteps"] is not null)
        {
            detail.Add(string.Create(CultureInfo.InvariantCulture, $"step {JsonNumbers.Long(progress["step"]) ?? 0}/{JsonNumbers.Long(progress["totalSteps"]) ?? 0}"));
            if (JsonNumbers.Double(progress["loss"]) is { } loss)
            {
                detail.Add(string.Create(CultureInfo.InvariantCulture, $"loss {loss:0.000}"));
            }
            if (JsonNumbers.Double(progress["tokensPerSecond"]) is { } tps)
            {
                detail.Add(string.Create(CultureInfo.InvariantCulture, $"{tps:0} tok/s"));
            }
        }
        if (status?["quality"] is JsonObject quality && JsonNumbers.Double(quality["perplexityAfter"]) is { } after)
        {
            detail.Add(string.Create(CultureInfo.InvariantCulture, $"perplexity {JsonNumbers.Double(quality["perplexityBefore"]) ?? double.NaN:0.000} -> {after:0.000}"));
        }
        if ((string?)status?["url"] is { Length: > 0 } url)
        {
            detail.Add(url);
        }
        var notReady = ready is not null && (string?)ready["status"] != "True";
        if ((failed || notReady) && (string?)(failed ? stalled : ready)?["reason"] is { Length: > 0 } reason)
        {
            detail.Add($"{reason}: {(string?)(failed ? stalled : ready)?["message"]}");
        }
        return new ObjectState(o, (string?)ready?["status"] ?? "Unknown", (string?)status?["phase"] ?? "", string.Join(", ", detail), failed);
    }
}
