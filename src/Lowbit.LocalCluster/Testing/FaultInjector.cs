namespace Lowbit.LocalCluster.Testing;

/// <summary>What a watch fault does to the stream.</summary>
public enum WatchFault
{
    /// <summary>Abort the connection (the client sees a reset / unexpected end).</summary>
    Drop,

    /// <summary>Stop sending anything while keeping the connection open (a half-open watch).</summary>
    Stall,

    /// <summary>Send an ERROR event with a 410 Expired Status and end the stream.</summary>
    Expire,
}

/// <summary>
/// Programmatic faults for tests: the next N matching requests fail with a status code (409, 429 with
/// Retry-After, 500, ...) or are delayed; the next matching watch is dropped, stalled or expired after
/// some events. Matching is by Kubernetes verb (get, list, watch, create, update, patch, delete; null = any)
/// and a substring of the request path (null = any). Thread-safe.
/// </summary>
public sealed class FaultInjector
{
    private readonly object _gate = new();
    private readonly List<Rule> _rules = [];
    private int _held;

    private sealed class Rule
    {
        public required string? Verb { get; init; }

        public required string? PathContains { get; init; }

        public int Remaining { get; set; }

        public int? StatusCode { get; init; }

        public int? RetryAfterSeconds { get; init; }

        public TimeSpan? Delay { get; init; }

        public WatchFault? Watch { get; init; }

        public int AfterEvents { get; init; }

        public string? Message { get; init; }
    }

    /// <summary>The next <paramref name="count"/> matching requests answer <paramref name="statusCode"/> with a Status body.</summary>
    public void FailNext(int count, int statusCode, string? verb = null, string? pathContains = null, int? retryAfterSeconds = null, string? message = null) =>
        Add(new Rule { Verb = verb, PathContains = pathContains, Remaining = count, StatusCode = statusCode, RetryAfterSeconds = retryAfterSeconds, Message = message });

    /// <summary>The next <paramref name="count"/> matching requests are answered after <paramref name="delay"/>.</summary>
    public void DelayNext(int count, TimeSpan delay, string? verb = null, string? pathContains = null) =>
        Add(new Rule { Verb = verb, PathContains = pathContains, Remaining = count, Delay = delay });

    /// <summary>The next matching watch suffers <paramref name="fault"/> after sending <paramref name="afterEvents"/> events.</summary>
    public void BreakNextWatch(WatchFault fault, string? pathContains = null, int afterEvents = 0) =>
        Add(new Rule { Verb = "watch", PathContains = pathContains, Remaining = 1, Watch = fault, AfterEvents = afterEvents });

    /// <summary>
    /// Requests a <see cref="DelayNext"/> rule is holding right now: a test waits for this to know that a write
    /// has reached the server and is in flight (the journal records a request only once it is answered).
    /// </summary>
    public int HeldRequests => Volatile.Read(ref _held);

    /// <summary>Removes every pending fault.</summary>
    public void Clear()
    {
        lock (_gate)
        {
            _rules.Clear();
        }
    }

    /// <summary>A request fault to apply now, if one matches (consumes one use of it).</summary>
    internal (int? StatusCode, int? RetryAfterSeconds, TimeSpan? Delay, string? Message) TakeRequestFault(string verb, string path)
    {
        lock (_gate)
        {
            var rule = _rules.FirstOrDefault(r => r.Watch is null && Matches(r, verb, path));
            if (rule is null)
            {
                return default;
            }
            Consume(rule);
            return (rule.StatusCode, rule.RetryAfterSeconds, rule.Delay, rule.Message);
        }
    }

    /// <summary>Holds a request for <paramref name="delay"/>, counted in <see cref="HeldRequests"/> meanwhile.</summary>
    internal async Task HoldAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _held);
        try
        {
            await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _held);
        }
    }

    internal (WatchFault Fault, int AfterEvents)? TakeWatchFault(string path)
    {
        lock (_gate)
        {
            var rule = _rules.FirstOrDefault(r => r.Watch is not null && Matches(r, "watch", path));
            if (rule is null)
            {
                return null;
            }
            Consume(rule);
            return (rule.Watch!.Value, rule.AfterEvents);
        }
    }

    private void Add(Rule rule)
    {
        if (rule.Remaining <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(rule), "count must be at least 1");
        }
        lock (_gate)
        {
            _rules.Add(rule);
        }
    }

    private void Consume(Rule rule)
    {
        if (--rule.Remaining <= 0)
        {
            _rules.Remove(rule);
        }
    }

    private static bool Matches(Rule rule, string verb, string path) =>
        (rule.Verb is null || string.Equals(rule.Verb, verb, StringComparison.OrdinalIgnoreCase))
        && (rule.PathContains is null || path.Contains(rule.PathContains, StringComparison.Ordinal));
}

/// <summary>One served request: Kubernetes verb, path, field manager, user agent, response status.</summary>
public sealed record JournalEntry(DateTimeOffset Time, string Verb, string Method, string Path, string? FieldManager, string UserAgent, int Status)
{
    /// <summary>create, update, patch, delete and deletecollection change state; get, list and watch do not.</summary>
    public bool IsWrite => Verb is "create" or "update" or "patch" or "delete" or "deletecollection";
}

/// <summary>The request journal (bounded; newest last) so tests can count writes and inspect managers.</summary>
public sealed class RequestJournal
{
    private readonly object _gate = new();
    private readonly LinkedList<JournalEntry> _entries = new();
    private readonly int _capacity;

    public RequestJournal(int capacity = 100_000) => _capacity = capacity;

    public IReadOnlyList<JournalEntry> Entries
    {
        get
        {
            lock (_gate)
            {
                return [.. _entries];
            }
        }
    }

    /// <summary>The writes (create/update/patch/delete) recorded so far.</summary>
    public IReadOnlyList<JournalEntry> Writes => Entries.Where(e => e.IsWrite).ToList();

    public void Clear()
    {
        lock (_gate)
        {
            _entries.Clear();
        }
    }

    internal void Add(JournalEntry entry)
    {
        lock (_gate)
        {
            _entries.AddLast(entry);
            if (_entries.Count > _capacity)
            {
                _entries.RemoveFirst();
            }
        }
    }
}
