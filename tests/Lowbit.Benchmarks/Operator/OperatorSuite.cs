using System.Diagnostics;
using System.Globalization;
using System.Text;
using k8s;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.LocalCluster;
using Lowbit.LocalCluster.Store;
using Lowbit.Operator;
using Lowbit.Operator.Runtime;
using Microsoft.Extensions.DependencyInjection;

namespace Lowbit.Benchmarks.Operator;

/// <summary>
/// <c>make bench operator [--objects N]</c>: N InferenceEndpoints created at once against the embedded API server;
/// time until every Deployment and Service exists and every status is written, API requests per object (server
/// journal), process RSS; then a pass that reconciles every object again with nothing changed: writes must be 0.
/// </summary>
public sealed class OperatorSuite : IBenchmarkSuite
{
    public string Name => "operator";

    public async Task RunAsync(string reportDir, string[] args)
    {
        var objects = 1000;
        var index = Array.IndexOf(args, "--objects");
        if (index >= 0 && index + 1 < args.Length)
        {
            objects = int.Parse(args[index + 1], CultureInfo.InvariantCulture);
        }

        await using var server = await LocalClusterServer.StartAsync(new LocalClusterOptions { Https = false });
        foreach (var file in Directory.GetFiles(Path.Combine(RepoRoot(), "crds"), "*.yaml"))
        {
            server.Api.Create(KubernetesYaml.Deserialize<V1CustomResourceDefinition>(await File.ReadAllTextAsync(file)));
        }

        server.Api.Create(new V1Namespace { Metadata = new V1ObjectMeta { Name = "bench" } });
        var config = KubernetesClientConfiguration.BuildConfigFromConfigFile(server.KubeconfigPath);
        var app = OperatorHost.Build(["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default", "Warning"], op =>
        {
            OperatorSetup.Configure(op);
            op.UseKubernetes(config);
            op.Configure(o =>
            {
                o.LeaderElection.Enabled = false;
                o.MaxConcurrentReconciles = 8;
            });
        });
        await app.StartAsync();
        var metrics = app.Services.GetRequiredService<RuntimeMetrics>();
        server.Journal.Clear();
        var rssBefore = Process.GetCurrentProcess().WorkingSet64;

        var clock = Stopwatch.StartNew();
        for (var i = 0; i < objects; i++)
        {
            server.Api.Create(Endpoint(i));
        }

        await WaitAsync(() => server.Api.List<V1Deployment>("bench").Count == objects
            && server.Api.List<V1Service>("bench").Count == objects
            && server.Api.List<InferenceEndpoint>("bench").All(e => e.Status?.ObservedGeneration == e.Metadata.Generation), TimeSpan.FromMinutes(5));
        var converged = clock.Elapsed;
        var entries = server.Journal.Entries;
        var requests = entries.Count;
        var writes = entries.Count(e => e.IsWrite);
        GC.Collect();
        var rss = Process.GetCurrentProcess().WorkingSet64;
        var managed = GC.GetTotalMemory(forceFullCollection: true);

        // Resync: a metadata-only change on every object makes each reconcile again; nothing may be written.
        await WaitIdleAsync(metrics);
        server.Journal.Clear();
        var reconcilesBefore = Reconciles(metrics);
        clock.Restart();
        foreach (var endpoint in server.Api.List<InferenceEndpoint>("bench"))
        {
            endpoint.Metadata.Labels = new Dictionary<string, string> { ["resync"] = "1" };
            server.Api.Update(endpoint);
        }

        await WaitAsync(() => Reconciles(metrics) >= reconcilesBefore + objects, TimeSpan.FromMinutes(5));
        await WaitIdleAsync(metrics);
        var resync = clock.Elapsed;
        var resyncWrites = server.Journal.Writes.Count(e => !e.Path.Contains("/leases", StringComparison.Ordinal));
        await app.StopAsync();

        var report = new StringBuilder();
        report.AppendLine("# Operator benchmark").AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture, $"{objects} InferenceEndpoints created at once against the embedded API server (HTTP, in process); operator with 8 workers, leader election off; {Environment.ProcessorCount} CPUs.").AppendLine();
        report.AppendLine("| measure | value | goal |").AppendLine("|---|---|---|");
        report.AppendLine(CultureInfo.InvariantCulture, $"| time to all Deployments + Services + statuses | {converged.TotalSeconds:0.00} s | ≤ 10 s at 1,000 |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| API requests per object (all verbs, incl. list/watch) | {(double)requests / objects:0.00} | ≤ 6 |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| API writes per object | {(double)writes / objects:0.00} | — |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| process RSS after convergence (operator + API server + store) | {rss / 1048576.0:0} MiB (before: {rssBefore / 1048576.0:0} MiB) | ≤ 200 MB at 10,000 |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| managed heap after convergence | {managed / 1048576.0:0} MiB | — |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| resync of every object, nothing changed: time | {resync.TotalSeconds:0.00} s | — |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| resync writes | {resyncWrites} | 0 |");
        report.AppendLine().AppendLine("The API server runs in the same process, so RSS covers both; the operator alone is smaller.");
        var path = Path.Combine(reportDir, "operator.md");
        await File.WriteAllTextAsync(path, report.ToString());
        Console.WriteLine(report.ToString());
        if (resyncWrites != 0)
        {
            throw new InvalidOperationException($"resync with no changes wrote {resyncWrites} times (must be 0)");
        }
    }

    private static InferenceEndpoint Endpoint(int i) => new()
    {
        Metadata = new V1ObjectMeta { Name = string.Create(CultureInfo.InvariantCulture, $"ep-{i:00000}"), NamespaceProperty = "bench" },
        Spec = new InferenceEndpointSpec
        {
            Model = new ModelReference { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "mistralai/Mistral-7B-v0.1" } } },
            Replicas = 1,
            MaxContextLength = 4096,
            MaxConcurrency = 4,
        },
    };

    private static double Reconciles(RuntimeMetrics metrics) =>
        new[] { "success", "error", "requeue", "requeue_after" }.Sum(r => metrics.ReconcileTotal.WithLabels("inferenceendpoint", r).Value);

    private static async Task WaitAsync(Func<bool> condition, TimeSpan patience)
    {
        var deadline = DateTime.UtcNow + patience;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("the operator did not converge in time");
            }

            await Task.Delay(50);
        }
    }

    private static async Task WaitIdleAsync(RuntimeMetrics metrics)
    {
        var quiet = Stopwatch.StartNew();
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
        while (DateTime.UtcNow < deadline)
        {
            if (metrics.QueueDepth.WithLabels("inferenceendpoint").Value > 0 || metrics.ActiveWorkers.WithLabels("inferenceendpoint").Value > 0)
            {
                quiet.Restart();
            }
            else if (quiet.Elapsed > TimeSpan.FromMilliseconds(500))
            {
                return;
            }

            await Task.Delay(20);
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
}
