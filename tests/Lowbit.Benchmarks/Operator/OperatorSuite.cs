using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using k8s;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.LocalCluster;
using Lowbit.LocalCluster.Store;
using Lowbit.Operator.Runtime;

namespace Lowbit.Benchmarks.Operator;

/// <summary>
/// <c>make bench operator [--objects 1000,10000]</c>: for each size, N InferenceEndpoints created at once against the
/// embedded API server (in this process) and the operator running as its own OS process (<see cref="OperatorProcess"/>);
/// time until every Deployment and Service exists and every status is written, API requests per object (server
/// journal), the operator's RSS and peak RSS (/proc) and GC heap (its /metrics); then a pass that reconciles every
/// object again with nothing changed: writes must be 0.
/// </summary>
public sealed class OperatorSuite : IBenchmarkSuite
{
    private const string Namespace = "bench";
    private const string Controller = "inferenceendpoint";

    public string Name => "operator";

    public async Task RunAsync(string reportDir, string[] args)
    {
        var sizes = new[] { 1000, 10000 };
        var index = Array.IndexOf(args, "--objects");
        if (index >= 0 && index + 1 < args.Length)
        {
            sizes = args[index + 1].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        }

        // --memory-diagnostics: the operator runs a full GC before each scrape (at most every 10 s), so the heap
        // reported is live data; it changes RSS, so it is a separate run for sizing, not for the RSS goal.
        var diagnostics = args.Contains("--memory-diagnostics");
        var results = new List<Result>();
        foreach (var objects in sizes)
        {
            var result = await RunOnceAsync(objects, diagnostics);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"operator: {objects} objects in {result.Converged.TotalSeconds:0.00} s, {result.RequestsPerObject:0.00} req/obj, RSS {Mib(result.Rss)} MiB (peak {Mib(result.PeakRss)} MiB), heap {Mib(result.Heap)} MiB, resync writes {result.ResyncWrites}"));
            results.Add(result);
        }

        var report = Report(results);
        await File.WriteAllTextAsync(Path.Combine(reportDir, "operator.md"), report);
        Console.WriteLine(report);
        if (results.FirstOrDefault(r => r.ResyncWrites != 0) is { } bad)
        {
            throw new InvalidOperationException($"resync with no changes wrote {bad.ResyncWrites} times at {bad.Objects} objects (must be 0)");
        }
    }

    private static async Task<Result> RunOnceAsync(int objects, bool diagnostics)
    {
        await using var server = await LocalClusterServer.StartAsync(new LocalClusterOptions { Https = false });
        foreach (var file in Directory.GetFiles(Path.Combine(RepoRoot(), "crds"), "*.yaml"))
        {
            server.Api.Create(KubernetesYaml.Deserialize<V1CustomResourceDefinition>(await File.ReadAllTextAsync(file)));
        }

        server.Api.Create(new V1Namespace { Metadata = new V1ObjectMeta { Name = Namespace } });
        await using var op = await OperatorProcess.StartAsync(server.KubeconfigPath,
        [
            "--Operator:LeaderElection:Enabled=false",
            "--Operator:MaxConcurrentReconciles=8",
            "--Logging:LogLevel:Default=Warning",
        ], diagnostics ? new Dictionary<string, string> { [RuntimeMetrics.MemoryDiagnosticsVariable] = "1" } : null);
        var idle = op.Memory().Rss;
        server.Journal.Clear();

        var clock = Stopwatch.StartNew();
        for (var i = 0; i < objects; i++)
        {
            server.Api.Create(Endpoint(i));
        }

        var convergence = new Convergence(server.Api, objects);
        await WaitAsync(convergence.Done, TimeSpan.FromMinutes(5), TimeSpan.FromMilliseconds(100));
        var converged = clock.Elapsed;
        var entries = server.Journal.Entries;
        var requests = entries.Count;
        var writes = entries.Count(e => e.IsWrite);
        var atConvergence = await op.ScrapeAsync();
        var reconciles = Reconciles(atConvergence);

        // Settled: the queue drained, then the memory the operator holds for N objects.
        await WaitIdleAsync(op);
        if (diagnostics)
        {
            // Past the operator's 10 s throttle: the next scrape collects with every object cached.
            await Task.Delay(TimeSpan.FromSeconds(11));
        }

        var (rss, _) = op.Memory();
        var settled = await op.ScrapeAsync();

        // Resync: a metadata-only change on every object makes each reconcile again; nothing may be written.
        server.Journal.Clear();
        var reconcilesBefore = Reconciles(settled);
        clock.Restart();
        foreach (var endpoint in server.Api.List<InferenceEndpoint>(Namespace))
        {
            endpoint.Metadata.Labels = new Dictionary<string, string> { ["resync"] = "1" };
            server.Api.Update(endpoint);
        }

        var resynced = false;
        await WaitAsync(async () => resynced = Reconciles(await op.ScrapeAsync()) >= reconcilesBefore + objects, TimeSpan.FromMinutes(5), TimeSpan.FromMilliseconds(100));
        await WaitIdleAsync(op);
        var resync = clock.Elapsed;
        var resyncWrites = server.Journal.Writes.Count(e => !e.Path.Contains("/leases", StringComparison.Ordinal));
        var (rssAfterResync, peak) = op.Memory();
        await op.StopAsync();
        return new Result(objects, converged, (double)requests / objects, (double)writes / objects, reconciles / objects,
            idle, rss, rssAfterResync, peak,
            (long)settled.Sum("dotnet_total_memory_bytes"),
            (long)settled.Sum("lowbit_gc_heap_size_bytes"),
            (long)settled.Sum("lowbit_gc_committed_bytes"),
            resync, resynced ? resyncWrites : -1);
    }

    private static string Report(IReadOnlyList<Result> results)
    {
        var report = new StringBuilder();
        report.AppendLine("# Operator benchmark").AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture,
            $"InferenceEndpoints created at once against the embedded API server (HTTP, in the benchmark process); the operator runs as its own process ({OperatorProcess.Describe()}), 8 workers, leader election off; {Environment.ProcessorCount} CPUs. Memory is the operator process alone (/proc/<pid>/status); heap from its /metrics.").AppendLine();
        report.Append("| measure |");
        foreach (var r in results)
        {
            report.Append(CultureInfo.InvariantCulture, $" {r.Objects:N0} objects |");
        }

        report.AppendLine(" goal |").Append("|---|");
        report.AppendLine(string.Concat(results.Select(_ => "---|")) + "---|");
        Row(report, results, "time to all Deployments + Services + statuses", r => $"{r.Converged.TotalSeconds:0.00} s", "≤ 10 s at 1,000");
        Row(report, results, "API requests per object (all verbs, incl. list/watch)", r => $"{r.RequestsPerObject:0.00}", "≤ 6");
        Row(report, results, "API writes per object", r => $"{r.WritesPerObject:0.00}", "—");
        Row(report, results, "reconciles per object until converged", r => $"{r.ReconcilesPerObject:0.00}", "—");
        Row(report, results, "operator RSS, idle before the objects", r => $"{Mib(r.IdleRss)} MiB", "—");
        Row(report, results, "operator RSS after convergence (queue drained)", r => $"{Mib(r.Rss)} MiB", "≤ 200 MB at 10,000");
        Row(report, results, "operator RSS after the resync pass", r => $"{Mib(r.RssAfterResync)} MiB", "—");
        Row(report, results, "operator peak RSS (VmHWM)", r => $"{Mib(r.PeakRss)} MiB", "—");
        Row(report, results, "managed heap: allocated (live + garbage) / after the last GC / GC committed", r => $"{Mib(r.Heap)} / {Mib(r.HeapAfterGc)} / {Mib(r.Committed)} MiB", "—");
        Row(report, results, "resync of every object, nothing changed: time", r => $"{r.Resync.TotalSeconds:0.00} s", "—");
        Row(report, results, "resync writes", r => r.ResyncWrites < 0 ? (FormattableString)$"did not finish" : $"{r.ResyncWrites}", "0");
        return report.ToString();
    }

    private static void Row(StringBuilder report, IReadOnlyList<Result> results, string measure, Func<Result, FormattableString> value, string goal)
    {
        report.Append(CultureInfo.InvariantCulture, $"| {measure} |");
        foreach (var r in results)
        {
            report.Append(' ').Append(value(r).ToString(CultureInfo.InvariantCulture)).Append(" |");
        }

        report.AppendLine(CultureInfo.InvariantCulture, $" {goal} |");
    }

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString("0", CultureInfo.InvariantCulture);

    private static InferenceEndpoint Endpoint(int i) => new()
    {
        Metadata = new V1ObjectMeta { Name = string.Create(CultureInfo.InvariantCulture, $"ep-{i:00000}"), NamespaceProperty = Namespace },
        Spec = new InferenceEndpointSpec
        {
            Model = new ModelReference { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "mistralai/Mistral-7B-v0.1" } } },
            Replicas = 1,
            MaxContextLength = 4096,
            MaxConcurrency = 4,
        },
    };

    private static double Reconciles(MetricsScrape metrics) =>
        metrics.Sum("controller_runtime_reconcile_total", ("controller", Controller));

    private static async Task WaitAsync(Func<Task<bool>> condition, TimeSpan patience, TimeSpan poll)
    {
        var deadline = DateTime.UtcNow + patience;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("the operator did not converge in time");
            }

            await Task.Delay(poll);
        }
    }

    private static Task WaitAsync(Func<bool> condition, TimeSpan patience, TimeSpan poll) =>
        WaitAsync(() => Task.FromResult(condition()), patience, poll);

    private static async Task WaitIdleAsync(OperatorProcess op)
    {
        var quiet = Stopwatch.StartNew();
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
        while (DateTime.UtcNow < deadline)
        {
            var metrics = await op.ScrapeAsync();
            if (metrics.Sum("workqueue_depth", ("name", Controller)) > 0 || metrics.Sum("controller_runtime_active_workers", ("controller", Controller)) > 0)
            {
                quiet.Restart();
            }
            else if (quiet.Elapsed > TimeSpan.FromMilliseconds(500))
            {
                return;
            }

            await Task.Delay(50);
        }
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Operator.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("repository root not found");
    }

    private sealed record Result(
        int Objects,
        TimeSpan Converged,
        double RequestsPerObject,
        double WritesPerObject,
        double ReconcilesPerObject,
        long IdleRss,
        long Rss,
        long RssAfterResync,
        long PeakRss,
        long Heap,
        long HeapAfterGc,
        long Committed,
        TimeSpan Resync,
        int ResyncWrites);

    /// <summary>
    /// Every Deployment and Service exists and every status observed its generation, read from the store without
    /// deserializing typed objects (the check must not compete with the operator for the CPU).
    /// </summary>
    private sealed class Convergence(ClusterApi api, int objects)
    {
        private readonly HashSet<string> _observed = new(StringComparer.Ordinal);

        public bool Done()
        {
            if (api.List(api.Resources.For<V1Deployment>(), Namespace).Items.Count < objects
                || api.List(api.Resources.For<V1Service>(), Namespace).Items.Count < objects)
            {
                return false;
            }

            foreach (var stored in api.List(api.Resources.For<InferenceEndpoint>(), Namespace).Items)
            {
                if (_observed.Contains(stored.Name))
                {
                    continue;
                }

                using var document = JsonDocument.Parse(stored.Json);
                var root = document.RootElement;
                var generation = root.GetProperty("metadata").TryGetProperty("generation", out var g) ? g.GetInt64() : 0;
                if (root.TryGetProperty("status", out var status) && status.TryGetProperty("observedGeneration", out var observed)
                    && observed.ValueKind == JsonValueKind.Number && observed.GetInt64() == generation)
                {
                    _observed.Add(stored.Name);
                }
            }

            return _observed.Count >= objects;
        }
    }
}
