using System.Text;

namespace Lowbit.LocalCluster.Store;

/// <summary>
/// Container logs behind <c>pods/{name}/log</c>. A kubelet (simulated or executing) appends output and
/// completes a container's log when it ends; readers get the text so far, or follow until completion.
/// </summary>
public sealed class PodLogStore(TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly object _gate = new();
    private readonly Dictionary<string, Log> _logs = new(StringComparer.Ordinal);

    private sealed class Log
    {
        public StringBuilder Text { get; } = new();

        /// <summary>When each appended chunk arrived (its offset in <see cref="Text"/>): the lines' timestamps.</summary>
        public List<(int Offset, DateTimeOffset Time)> Chunks { get; } = [];

        public bool Completed { get; set; }

        public TaskCompletionSource Changed { get; set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public void Append(string ns, string pod, string container, string text)
    {
        lock (_gate)
        {
            var log = LogOf(ns, pod, container);
            log.Chunks.Add((log.Text.Length, _time.GetUtcNow()));
            log.Text.Append(text);
            Signal(log);
        }
    }

    /// <summary>Marks a container's log finished (followers stop).</summary>
    public void Complete(string ns, string pod, string container)
    {
        lock (_gate)
        {
            var log = LogOf(ns, pod, container);
            log.Completed = true;
            Signal(log);
        }
    }

    /// <summary>Forgets a pod's logs (when the pod is deleted).</summary>
    public void Remove(string ns, string pod)
    {
        lock (_gate)
        {
            foreach (var key in _logs.Keys.Where(k => k.StartsWith($"{ns}/{pod}/", StringComparison.Ordinal)).ToList())
            {
                Signal(_logs[key]);
                _logs.Remove(key);
            }
        }
    }

    /// <summary>The containers that have logs for a pod.</summary>
    public IReadOnlyList<string> Containers(string ns, string pod)
    {
        lock (_gate)
        {
            var prefix = $"{ns}/{pod}/";
            return _logs.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).Select(k => k[prefix.Length..]).ToList();
        }
    }

    /// <summary>
    /// The log so far, or its last <paramref name="tailLines"/> lines; with <paramref name="timestamps"/> each line starts
    /// with the RFC 3339 time it was written and a space, as the kubelet writes them (<c>timestamps=true</c>).
    /// </summary>
    public string Read(string ns, string pod, string container, int? tailLines = null, bool timestamps = false)
    {
        string text;
        lock (_gate)
        {
            text = !_logs.TryGetValue(Key(ns, pod, container), out var log) ? "" : timestamps ? Stamped(log) : log.Text.ToString();
        }
        if (tailLines is { } tail)
        {
            var lines = text.Split('\n');
            var trailing = text.EndsWith('\n') ? 1 : 0;
            text = string.Join('\n', lines.Skip(Math.Max(0, lines.Length - trailing - tail)));
        }
        return text;
    }

    /// <summary>Yields new text as it is appended, from <paramref name="offset"/>, until the log completes or the token fires.</summary>
    public async IAsyncEnumerable<string> FollowAsync(string ns, string pod, string container, int offset,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            string chunk;
            bool completed;
            Task changed;
            lock (_gate)
            {
                var log = LogOf(ns, pod, container);
                chunk = log.Text.Length > offset ? log.Text.ToString(offset, log.Text.Length - offset) : "";
                offset = log.Text.Length;
                completed = log.Completed;
                changed = log.Changed.Task;
            }
            if (chunk.Length > 0)
            {
                yield return chunk;
            }
            if (completed)
            {
                yield break;
            }
            try
            {
                await changed.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                yield break;
            }
        }
    }

    private static string Stamped(Log log)
    {
        var text = log.Text.ToString();
        var stamped = new StringBuilder(text.Length + (log.Chunks.Count * 32));
        var chunk = 0;
        for (var start = 0; start < text.Length;)
        {
            while (chunk + 1 < log.Chunks.Count && log.Chunks[chunk + 1].Offset <= start)
            {
                chunk++;
            }

            var end = text.IndexOf('\n', start);
            end = end < 0 ? text.Length : end + 1;
            stamped.Append(log.Chunks[chunk].Time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", System.Globalization.CultureInfo.InvariantCulture))
                .Append(' ').Append(text, start, end - start);
            start = end;
        }

        return stamped.ToString();
    }

    private Log LogOf(string ns, string pod, string container)
    {
        var key = Key(ns, pod, container);
        if (!_logs.TryGetValue(key, out var log))
        {
            log = new Log();
            _logs[key] = log;
        }
        return log;
    }

    private static void Signal(Log log)
    {
        var old = log.Changed;
        log.Changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        old.TrySetResult();
    }

    private static string Key(string ns, string pod, string container) => $"{ns}/{pod}/{container}";
}
