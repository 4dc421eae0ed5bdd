using System.Text;

namespace Lowbit.LocalCluster.Store;

/// <summary>
/// Container logs behind <c>pods/{name}/log</c>. A kubelet (simulated or executing) appends output and
/// completes a container's log when it ends; readers get the text so far, or follow until completion.
/// </summary>
public sealed class PodLogStore
{
    private readonly object _gate = new();
    private readonly Dictionary<string, Log> _logs = new(StringComparer.Ordinal);

    private sealed class Log
    {
        public StringBuilder Text { get; } = new();

        public bool Completed { get; set; }

        public TaskCompletionSource Changed { get; set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public void Append(string ns, string pod, string container, string text)
    {
        lock (_gate)
        {
            var log = LogOf(ns, pod, container);
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

    public string Read(string ns, string pod, string container, int? tailLines = null)
    {
        string text;
        lock (_gate)
        {
            text = _logs.TryGetValue(Key(ns, pod, container), out var log) ? log.Text.ToString() : "";
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
