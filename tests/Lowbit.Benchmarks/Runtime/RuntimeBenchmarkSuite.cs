using System.Diagnostics;
using System.Globalization;
using System.Text;
using k8s;
using k8s.Models;
using Lowbit.LocalCluster;
using Lowbit.Operator.Runtime;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lowbit.Benchmarks.Runtime;

/// <summary>
/// The controller runtime's throughput: work-queue operations, informer list and watch against the embedded API
/// server, and no-op reconciles through a controller. Stopwatch scenarios (not BenchmarkDotNet): each number is
/// one run on the machine at hand.
/// </summary>
public sealed class RuntimeBenchmarkSuite : IBenchmarkSuite
{
    public string Name => "runtime";

    public async Task RunAsync(string reportDir, string[] args)
    {
        var objects = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 5_000;
        var report = new StringBuilder()
            .AppendLine("# Controller runtime")
            .AppendLine()
            .AppendLine(CultureInfo.InvariantCulture, $"Machine: {Environment.ProcessorCount} cores, .NET {Environment.Version}. One run each.")
            .AppendLine()
            .AppendLine("| scenario | result |")
            .AppendLine("|---|---|");

        foreach (var (name, result) in QueueThroughput())
        {
            report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {result} |");
        }

        foreach (var (name, result) in await ClusterScenariosAsync(objects))
        {
            report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {result} |");
        }

        var path = Path.Combine(reportDir, "runtime.md");
        await File.WriteAllTextAsync(path, report.ToString());
        Console.WriteLine(report.ToString());
        Console.WriteLine($"report: {path}");
    }

    private static IEnumerable<(string, string)> QueueThroughput()
    {
        const int Keys = 1_000;
        const int Adds = 1_000_000;
        using var queue = new RateLimitingQueue<int>("bench", DefaultControllerRateLimiter.Create<int>(TimeProvider.System), TimeProvider.System, new RuntimeMetrics());
        var processed = 0;
        using var stop = new CancellationTokenSource();
        var workers = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            while (true)
            {
                RateLimitingQueue<int>.Optional item;
                try
                {
                    item = await queue.GetAsync(stop.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                Interlocked.Increment(ref processed);
                queue.Done(item.Key);
            }
        })).ToArray();

        var watch = Stopwatch.StartNew();
        Parallel.For(0, Adds, new ParallelOptions { MaxDegreeOfParallelism = 2 }, i => queue.Add(i % Keys));
        while (queue.Count > 0 || queue.Processing > 0)
        {
            Thread.Sleep(1);
        }

        watch.Stop();
        stop.Cancel();
        Task.WaitAll(workers);
        yield return ("work queue: 1,000,000 adds over 1,000 keys, 4 workers", $"{Adds / watch.Elapsed.TotalSeconds:N0} adds/s, {processed:N0} items processed (coalesced)");
    }

    private static async Task<IReadOnlyList<(string, string)>> ClusterScenariosAsync(int objects)
    {
        var results = new List<(string, string)>();
        await using var server = await LocalClusterServer.StartAsync();
        for (var i = 0; i < objects; i++)
        {
            server.Api.Create(ConfigMap($"cm-{i}", "0"));
        }

        var metrics = new RuntimeMetrics();
        using var client = new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(server.KubeconfigPath), new RequestMetricsHandler(metrics));
        var informer = new Informer<V1ConfigMap>(new KubernetesRest(client), new InformerOptions { Namespace = "default" }, TimeProvider.System, metrics, NullLogger<Informer<V1ConfigMap>>.Instance);
        var reconciled = 0;
        var scopes = new ServiceCollection().BuildServiceProvider().GetRequiredService<IServiceScopeFactory>();
        var controller = new Controller<V1ConfigMap>(
            informer,
            _ => new CountingReconciler(() => Interlocked.Increment(ref reconciled)),
            scopes,
            new ControllerOptions { MaxConcurrentReconciles = 4 },
            TimeProvider.System,
            metrics,
            NullLogger<Controller<V1ConfigMap>>.Instance);
        using var stop = new CancellationTokenSource();

        GC.Collect();
        var heapBefore = GC.GetTotalMemory(forceFullCollection: true);
        var watch = Stopwatch.StartNew();
        var run = informer.RunAsync(stop.Token);
        await informer.WaitForSyncAsync(CancellationToken.None);
        var listed = watch.Elapsed;
        var heapAfter = GC.GetTotalMemory(forceFullCollection: true);
        results.Add(($"informer: initial list of {objects:N0} ConfigMaps (embedded server, HTTPS)", $"{listed.TotalMilliseconds:N0} ms; cache heap ≈ {(heapAfter - heapBefore) / 1024.0 / 1024.0:N1} MiB"));

        var control = controller.RunAsync(stop.Token);
        watch.Restart();
        while (Volatile.Read(ref reconciled) < objects)
        {
            await Task.Delay(5);
        }

        results.Add(($"controller: {objects:N0} queued keys, no-op reconciler, 4 workers", $"{objects / watch.Elapsed.TotalSeconds:N0} reconciles/s"));

        watch.Restart();
        for (var i = 0; i < objects; i++)
        {
            server.Api.Update(ConfigMap($"cm-{i}", "1"));
        }

        var written = watch.Elapsed;
        while (informer.List().Any(c => c.Data["value"] != "1"))
        {
            await Task.Delay(5);
        }

        results.Add(($"watch: {objects:N0} updates written in-process, until the informer has all", $"{watch.Elapsed.TotalMilliseconds:N0} ms ({objects / watch.Elapsed.TotalSeconds:N0} events/s; writing took {written.TotalMilliseconds:N0} ms)"));

        await stop.CancelAsync();
        await Task.WhenAll(run, control);
        return results;
    }

    private static V1ConfigMap ConfigMap(string name, string value) => new()
    {
        ApiVersion = "v1",
        Kind = "ConfigMap",
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default" },
        Data = new Dictionary<string, string> { ["value"] = value },
    };

    private sealed class CountingReconciler(Action onReconcile) : IReconciler<V1ConfigMap>
    {
        public Task<ReconcileResult> ReconcileAsync(V1ConfigMap obj, CancellationToken cancellationToken)
        {
            onReconcile();
            return Task.FromResult(ReconcileResult.Done);
        }
    }
}
