using Prometheus;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// The runtime's Prometheus metrics, named like controller-runtime and client-go so existing dashboards and
/// alerts apply. One instance per operator host, on its own registry (two operators in one test process do not
/// share series). Labels are bounded: controller and queue names, kinds, result, HTTP method and code.
/// </summary>
public sealed class RuntimeMetrics
{
    private static readonly double[] ReconcileBuckets =
        [0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
         1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60];

    private static readonly double[] QueueBuckets = Histogram.ExponentialBuckets(1e-8, 10, 10);

    /// <summary>
    /// Environment variable: <c>1</c> makes every scrape (at most one per 10 s) run a full compacting GC first, so the
    /// GC gauges show live data rather than live data plus garbage. A diagnostic for sizing the caches; off in production.
    /// </summary>
    public const string MemoryDiagnosticsVariable = "LOWBIT_MEMORY_DIAGNOSTICS";

    private static readonly TimeSpan DiagnosticCollectInterval = TimeSpan.FromSeconds(10);

    private readonly bool _collectBeforeScrape = Environment.GetEnvironmentVariable(MemoryDiagnosticsVariable) == "1";
    private static readonly System.Text.UTF8Encoding Utf8NoBom = new(encoderShouldEmitUTF8Identifier: false);
    private readonly TimeProvider _time;
    private readonly List<Func<TextWriter, CancellationToken, Task>> _families = [];
    private long _lastCollect;

    public RuntimeMetrics()
        : this(Metrics.NewCustomRegistry())
    {
    }

    public RuntimeMetrics(TimeProvider time)
        : this(Metrics.NewCustomRegistry(), time)
    {
    }

    public RuntimeMetrics(CollectorRegistry registry, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(registry);
        _time = time ?? TimeProvider.System;
        Registry = registry;
        Factory = Metrics.WithCustomRegistry(registry);
        var f = Factory;

        ReconcileTotal = f.CreateCounter("controller_runtime_reconcile_total", "Total number of reconciliations per controller", ["controller", "result"]);
        ReconcileErrors = f.CreateCounter("controller_runtime_reconcile_errors_total", "Total number of reconciliation errors per controller", ["controller"]);
        TerminalReconcileErrors = f.CreateCounter("controller_runtime_terminal_reconcile_errors_total", "Total number of terminal reconciliation errors per controller", ["controller"]);
        ReconcilePanics = f.CreateCounter("controller_runtime_reconcile_panics_total", "Total number of reconciliation panics (unexpected exceptions) per controller", ["controller"]);
        ReconcileTime = f.CreateHistogram("controller_runtime_reconcile_time_seconds", "Length of time per reconciliation per controller", ["controller"], new HistogramConfiguration { Buckets = ReconcileBuckets });
        ActiveWorkers = f.CreateGauge("controller_runtime_active_workers", "Number of currently used workers per controller", ["controller"]);
        MaxConcurrentReconciles = f.CreateGauge("controller_runtime_max_concurrent_reconciles", "Maximum number of concurrent reconciles per controller", ["controller"]);

        QueueDepth = f.CreateGauge("workqueue_depth", "Current depth of workqueue", ["name"]);
        QueueAdds = f.CreateCounter("workqueue_adds_total", "Total number of adds handled by workqueue", ["name"]);
        QueueRetries = f.CreateCounter("workqueue_retries_total", "Total number of retries handled by workqueue", ["name"]);
        QueueLatency = f.CreateHistogram("workqueue_queue_duration_seconds", "How long in seconds an item stays in workqueue before being requested", ["name"], new HistogramConfiguration { Buckets = QueueBuckets });
        QueueWorkDuration = f.CreateHistogram("workqueue_work_duration_seconds", "How long in seconds processing an item from workqueue takes", ["name"], new HistogramConfiguration { Buckets = QueueBuckets });
        QueueUnfinishedWork = f.CreateGauge("workqueue_unfinished_work_seconds", "How many seconds of work has been done that is in progress and hasn't been observed by work_duration", ["name"]);
        QueueLongestRunning = f.CreateGauge("workqueue_longest_running_processor_seconds", "How many seconds has the longest running processor for workqueue been running", ["name"]);

        LeaderStatus = f.CreateGauge("leader_election_master_status", "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master", ["name"]);
        LeaderElectionErrors = f.CreateCounter("lowbit_leader_election_errors_total", "Errors while acquiring or renewing the leader election lease", ["name"]);

        RestRequests = f.CreateCounter("rest_client_requests_total", "Number of HTTP requests to the API server, partitioned by status code, method, and host", ["code", "method", "host"]);
        RestRetries = f.CreateCounter("lowbit_rest_client_retries_total", "HTTP requests retried after 429 or 5xx, partitioned by status code and method", ["code", "method"]);

        WatchReconnects = f.CreateCounter("lowbit_watch_reconnects_total", "Watch streams re-established, partitioned by kind and reason (closed, idle, expired, decode_error, error)", ["kind", "reason"]);
        WatchRelists = f.CreateCounter("lowbit_watch_relists_total", "Full lists of a kind (initial, expired, decode_error, error)", ["kind", "reason"]);
        WatchDecodeErrors = f.CreateCounter("lowbit_watch_decode_errors_total", "Watch events that could not be deserialized", ["kind"]);
        WatchEvents = f.CreateCounter("lowbit_watch_events_total", "Watch events received, partitioned by kind and type", ["kind", "type"]);
        WatchAge = f.CreateGauge("lowbit_watch_age_seconds", "Seconds since the current watch stream of a kind was opened (0 when none is open)", ["kind"]);
        InformerSynced = f.CreateGauge("lowbit_informer_synced", "1 when the informer of a kind has completed its first list", ["kind"]);
        CachedObjects = f.CreateGauge("lowbit_informer_objects", "Objects held in the informer cache of a kind", ["kind"]);
        CachedBytes = f.CreateGauge("lowbit_informer_cached_bytes", "Bytes held in the informer cache of a kind (Brotli-compressed JSON; 0 for a kind cached as typed objects)", ["kind"]);
        CacheDecodes = f.CreateCounter("lowbit_informer_decodes_total", "Objects decoded from a serialized informer cache (every read of a serialized kind decodes; a fast-growing count is a scan)", ["kind"]);

        // Memory: what the informer caches cost (process_working_set_bytes, dotnet_total_memory_bytes from DotNetStats; the GC's own view below).
        if (!ReferenceEquals(registry, Metrics.DefaultRegistry))
        {
            DotNetStats.Register(registry);
        }

        GcHeapBytes = f.CreateGauge("lowbit_gc_heap_bytes", "Managed heap size per generation after the last GC (gen0, gen1, gen2, loh, poh)", ["generation"]);
        GcHeapSize = f.CreateGauge("lowbit_gc_heap_size_bytes", "Managed heap size after the last GC (fragmentation included)");
        GcCommittedBytes = f.CreateGauge("lowbit_gc_committed_bytes", "Memory the GC has committed (heap plus free space it keeps)");
        GcFragmentedBytes = f.CreateGauge("lowbit_gc_fragmented_bytes", "Free space inside the managed heap after the last GC");
        GcAvailableBytes = f.CreateGauge("lowbit_gc_available_memory_bytes", "Memory the GC may use: the container limit, GCHeapHardLimit or physical memory");
        BeforeCollect(UpdateGc);
    }

    public CollectorRegistry Registry { get; }

    /// <summary>Factory on this registry, for metrics defined elsewhere (the reconcilers' cost metrics).</summary>
    public IMetricFactory Factory { get; }

    public Counter ReconcileTotal { get; }
    public Counter ReconcileErrors { get; }
    public Counter TerminalReconcileErrors { get; }
    public Counter ReconcilePanics { get; }
    public Histogram ReconcileTime { get; }
    public Gauge ActiveWorkers { get; }
    public Gauge MaxConcurrentReconciles { get; }
    public Gauge QueueDepth { get; }
    public Counter QueueAdds { get; }
    public Counter QueueRetries { get; }
    public Histogram QueueLatency { get; }
    public Histogram QueueWorkDuration { get; }
    public Gauge QueueUnfinishedWork { get; }
    public Gauge QueueLongestRunning { get; }
    public Gauge LeaderStatus { get; }
    public Counter LeaderElectionErrors { get; }
    public Counter RestRequests { get; }
    public Counter RestRetries { get; }
    public Counter WatchReconnects { get; }
    public Counter WatchRelists { get; }
    public Counter WatchDecodeErrors { get; }
    public Counter WatchEvents { get; }
    public Gauge WatchAge { get; }
    public Gauge InformerSynced { get; }
    public Gauge CachedObjects { get; }
    public Gauge CachedBytes { get; }
    public Counter CacheDecodes { get; }
    public Gauge GcHeapBytes { get; }
    public Gauge GcHeapSize { get; }
    public Gauge GcCommittedBytes { get; }
    public Gauge GcFragmentedBytes { get; }
    public Gauge GcAvailableBytes { get; }

    /// <summary>Runs <paramref name="update"/> right before every scrape (for gauges computed from state: ages, unfinished work).</summary>
    public void BeforeCollect(Action update) => Registry.AddBeforeCollectCallback(update);

    /// <summary>The content type of <see cref="ExportAsync"/>: the Prometheus text format.</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>
    /// Adds metric families written straight into the exposition, after the registry's, by <paramref name="write"/>
    /// (complete families in the text format: HELP, TYPE, samples; write asynchronously: the response body allows no
    /// synchronous writes). For series with one label set per custom resource:
    /// a prometheus-net child costs about 0.5 KB of heap, so 8 series per object were 45 MiB at 10,000 objects.
    /// </summary>
    public void AddFamilies(Func<TextWriter, CancellationToken, Task> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        lock (_families)
        {
            _families.Add(write);
        }
    }

    /// <summary>Writes what <c>/metrics</c> serves: the registry (text format), then the families of <see cref="AddFamilies"/>.</summary>
    public async Task ExportAsync(Stream stream, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(stream);
        await Registry.CollectAndExportAsTextAsync(stream, ExpositionFormat.PrometheusText, cancellationToken).ConfigureAwait(false);
        Func<TextWriter, CancellationToken, Task>[] families;
        lock (_families)
        {
            families = [.. _families];
        }

        var writer = new StreamWriter(stream, Utf8NoBom, bufferSize: 16 * 1024, leaveOpen: true) { NewLine = "\n" };
        await using (writer.ConfigureAwait(false))
        {
            foreach (var write in families)
            {
                await write(writer, cancellationToken).ConfigureAwait(false);
            }

            await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private void UpdateGc()
    {
        var last = Interlocked.Read(ref _lastCollect);
        if (_collectBeforeScrape && (last == 0 || _time.GetElapsedTime(last) > DiagnosticCollectInterval))
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            Interlocked.Exchange(ref _lastCollect, _time.GetTimestamp());
        }

        var info = GC.GetGCMemoryInfo();
        string[] generations = ["gen0", "gen1", "gen2", "loh", "poh"];
        var sizes = info.GenerationInfo;
        for (var i = 0; i < generations.Length && i < sizes.Length; i++)
        {
            GcHeapBytes.WithLabels(generations[i]).Set(sizes[i].SizeAfterBytes);
        }

        GcHeapSize.Set(info.HeapSizeBytes);
        GcCommittedBytes.Set(info.TotalCommittedBytes);
        GcFragmentedBytes.Set(info.FragmentedBytes);
        GcAvailableBytes.Set(info.TotalAvailableMemoryBytes);
    }
}
