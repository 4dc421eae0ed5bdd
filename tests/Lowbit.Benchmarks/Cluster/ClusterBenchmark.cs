using System.Diagnostics;
using System.Globalization;
using System.Text;
using k8s.Models;
using Lowbit.LocalCluster;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lowbit.Benchmarks.Cluster;

/// <summary>
/// "cluster": N single-pod Jobs (default 1,000) in simulate mode created at once, in process against the store;
/// measures the time until every Job is Complete (scheduler, job controller and kubelets all at work), the
/// process CPU time over that span and the memory. Args: [jobs] [simulated run seconds].
/// </summary>
public sealed class ClusterBenchmark : IBenchmarkSuite
{
    public string Name => "cluster";

    public async Task RunAsync(string reportDir, string[] args)
    {
        var jobs = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 1000;
        var runSeconds = args.Length > 1 ? double.Parse(args[1], CultureInfo.InvariantCulture) : 1.0;
        var api = new ClusterApi(new ClusterApiOptions { GracefulPodDeletion = true, WatchHistoryPerResource = 100_000 });
        var logs = new PodLogStore();
        var nodes = NodesConfig.Parse("""
            nodes:
            - name: sim-cpu
              count: 8
              cpu: "64"
              memory: 256Gi
              maxPods: 250
            """);
        await using var cluster = await SimulatedCluster.StartAsync(api, logs, new ClusterSimulationOptions
        {
            Nodes = nodes,
            Kubelet = new KubeletOptions { SimulatedRunDuration = TimeSpan.FromSeconds(runSeconds) },
        }, TimeProvider.System, NullLoggerFactory.Instance);

        GC.Collect();
        var process = Process.GetCurrentProcess();
        process.Refresh();
        var memoryBefore = process.WorkingSet64;
        var cpuBefore = process.TotalProcessorTime;
        var complete = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var watchRv = api.CurrentResourceVersion.ToString(CultureInfo.InvariantCulture);
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        var counted = new HashSet<string>(StringComparer.Ordinal);
        var watcher = Task.Run(async () =>
        {
            await foreach (var e in api.WatchAsync(BuiltinResources.Jobs, "default", new WatchOptions { ResourceVersion = watchRv }, stop.Token))
            {
                if (e.Object is null || counted.Contains(e.Object.Name))
                {
                    continue;
                }
                var job = e.Object.As<V1Job>();
                if (job.Status?.Conditions?.Any(c => c.Type == "Complete" && c.Status == "True") == true)
                {
                    counted.Add(job.Metadata.Name);
                    if (++complete == jobs)
                    {
                        done.TrySetResult();
                        return;
                    }
                }
            }
        });

        var clock = Stopwatch.StartNew();
        for (var i = 0; i < jobs; i++)
        {
            api.Create(BuiltinResources.Jobs, "default", Typed.ToJson(Job($"bench-{i:D5}")));
        }
        var createdAfter = clock.Elapsed;
        await done.Task.WaitAsync(stop.Token);
        var elapsed = clock.Elapsed;
        process.Refresh();
        var cpu = process.TotalProcessorTime - cpuBefore;
        var memoryAfter = process.WorkingSet64;
        var managed = GC.GetTotalMemory(forceFullCollection: false);
        await stop.CancelAsync();
        try
        {
            await watcher;
        }
        catch (OperationCanceledException)
        {
        }

        var pods = api.List(BuiltinResources.Pods, "default").Items.Count;
        var report = new StringBuilder();
        report.AppendLine("# Cluster benchmark: single-pod Jobs in simulate mode");
        report.AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture, $"- Machine: {Environment.ProcessorCount} cores, .NET {Environment.Version}; 8 simulated nodes; each pod runs {runSeconds:0.###} s (simulated)");
        report.AppendLine(CultureInfo.InvariantCulture, $"- Jobs created at once: {jobs} (create calls took {createdAfter.TotalSeconds:0.00} s); pods at the end: {pods}");
        report.AppendLine();
        report.AppendLine("| metric | value |");
        report.AppendLine("|---|---|");
        report.AppendLine(CultureInfo.InvariantCulture, $"| time until all Jobs Complete | {elapsed.TotalSeconds:0.00} s (goal ≤ 20 s) |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| time minus the simulated run time | {elapsed.TotalSeconds - runSeconds:0.00} s |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| process CPU time over that span | {cpu.TotalSeconds:0.00} s ({cpu.TotalSeconds / elapsed.TotalSeconds:0.00} cores busy on average) |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| working set before → after | {memoryBefore / 1048576.0:0} MiB → {memoryAfter / 1048576.0:0} MiB |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| managed heap after | {managed / 1048576.0:0} MiB |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| resourceVersion at the end (writes) | {api.CurrentResourceVersion} |");
        var text = report.ToString();
        Console.Write(text);
        await File.WriteAllTextAsync(Path.Combine(reportDir, "cluster.md"), text);
    }

    private static V1Job Job(string name) => new()
    {
        ApiVersion = "batch/v1",
        Kind = "Job",
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default" },
        Spec = new V1JobSpec
        {
            BackoffLimit = 0,
            Template = new V1PodTemplateSpec
            {
                Metadata = new V1ObjectMeta { Annotations = new Dictionary<string, string> { [SimulationAnnotations.Log] = "done" } },
                Spec = new V1PodSpec
                {
                    RestartPolicy = "Never",
                    Containers =
                    [
                        new V1Container
                        {
                            Name = "main",
                            Image = "ghcr.io/lowbit/lowbit-engine:bench",
                            Resources = new V1ResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["cpu"] = new("100m"), ["memory"] = new("128Mi") } },
                        },
                    ],
                },
            },
        },
    };
}
