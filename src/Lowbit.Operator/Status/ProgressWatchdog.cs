using System.Globalization;
using k8s.Models;
using Lowbit.Engine.Protocol;

namespace Lowbit.Operator.Status;

/// <summary>
/// The progress watchdog (issue 17, item 4), pure: the engine prints a JSON progress line (progress, download,
/// train, checkpoint) as it works; the operator reads the running pod's log tail with <c>timestamps=true</c>, and a
/// pod whose last progress line (or, before the first one, whose container start) is older than the timeout makes
/// its resource Stalled with reason <see cref="StatusReasons.NoProgress"/>. Nothing is remembered between reconciles:
/// the log's own timestamps are the memory, so an operator restart does not reset the clock.
/// </summary>
public static class ProgressWatchdog
{
    /// <summary>The lines of a log tail, each split into the kubelet's timestamp (when present) and the text.</summary>
    public static IEnumerable<(DateTimeOffset? Time, string Text)> Lines(string? log)
    {
        if (string.IsNullOrEmpty(log))
        {
            yield break;
        }

        foreach (var raw in log.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            var space = line.IndexOf(' ', StringComparison.Ordinal);
            if (space is >= 20 and <= 40 && char.IsAsciiDigit(line[0]) && Timestamp(line.AsSpan(0, space)) is { } time)
            {
                yield return (time, line[(space + 1)..]);
            }
            else
            {
                yield return (null, line);
            }
        }
    }

    /// <summary>The time of the last engine progress line in a timestamped log tail, or null when it has none.</summary>
    public static DateTimeOffset? LastProgress(string? logTail)
    {
        DateTimeOffset? last = null;
        foreach (var (time, text) in Lines(logTail))
        {
            if (time is not null && EngineEvent.TryParse(text) is ProgressEvent or DownloadEvent or TrainEvent or CheckpointEvent)
            {
                last = time;
            }
        }

        return last;
    }

    /// <summary>
    /// Stalled with <see cref="StatusReasons.NoProgress"/> when the running pod made no progress for longer than
    /// <paramref name="timeout"/>; null while it does, or when no pod runs or no log tail was read.
    /// </summary>
    public static Outcome.Stalled? Check(string? logTail, IReadOnlyList<V1Pod> pods, DateTimeOffset now, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(pods);
        var running = pods.FirstOrDefault(p => p.Status?.Phase == "Running");
        if (logTail is null || running is null)
        {
            return null;
        }

        var last = LastProgress(logTail);
        var started = running.Status.ContainerStatuses?.Select(c => c.State?.Running?.StartedAt).FirstOrDefault(t => t is not null) ?? running.Status.StartTime;
        DateTimeOffset? since = last ?? (started is { } s ? new DateTimeOffset(DateTime.SpecifyKind(s, DateTimeKind.Utc)) : null);
        if (since is not { } reference || now - reference <= timeout)
        {
            return null;
        }

        var what = last is null ? "since its container started" : "since its last one";
        return new Outcome.Stalled(StatusReasons.NoProgress, string.Create(CultureInfo.InvariantCulture,
            $"pod {running.Metadata.Name} printed no progress line for {(now - reference).TotalMinutes:0} min {what} at {reference.UtcDateTime:yyyy-MM-dd'T'HH:mm:ss'Z'} (limit {timeout.TotalMinutes:0} min); its Job runs on until activeDeadlineSeconds: delete the Job to retry now"));
    }

    private static DateTimeOffset? Timestamp(ReadOnlySpan<char> text)
    {
        // RFC 3339 with up to 9 fractional digits (the kubelet's RFC3339Nano); .NET parses at most 7.
        var s = text.ToString();
        var dot = s.IndexOf('.', StringComparison.Ordinal);
        var zone = s.IndexOfAny(['Z', '+'], Math.Max(dot, 0));
        if (dot > 0 && zone > dot + 8)
        {
            s = string.Concat(s.AsSpan(0, dot + 8), s.AsSpan(zone));
        }

        return DateTimeOffset.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var time) ? time : null;
    }
}
