using System.Diagnostics;
using System.Globalization;
using System.Text;
using Lowbit.Engine.Protocol;
using k8s;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.LocalCluster;

namespace Lowbit.Benchmarks.Operator;

/// <summary>
/// <c>make bench SUITE=soak ARGS="--objects 10000 --minutes 30"</c> (issue 17, item 7): N mixed resources (InferenceEndpoints
/// and QuantizedModels, 4:1) held for M minutes against the embedded API server, the operator in its own process. Every
/// minute 1% of them get a spec change; every 5 minutes every watch is dropped (the server closes them, as on an
/// apiserver restart or a timeout). Every 10 s: operator RSS (/proc), reconciles, API requests. Reports RSS over time
/// with its least-squares slope after the first quarter (a leak shows as a positive trend), reconcile latency p99 per
/// minute (from <c>controller_runtime_reconcile_time_seconds</c> buckets) and API requests per minute at rest (the
/// minutes without churn or drops are not distinguished: churn is 1%, so "at rest" is the floor of the series).
/// </summary>
public sealed class SoakSuite : IBenchmarkSuite
{
    private const string Namespace = "soak";

    public string Name => "soak";

    public async Task RunAsync(string reportDir, string[] args)
    {
        var objects = Arg(args, "--objects", 10_000);
        var minutes = Arg(args, "--minutes", 30);
        var churnPercent = Arg(args, "--churn-percent", 1);
        var dropEvery = Arg(args, "--drop-every-minutes", 5);

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
        ]);

        var endpoints = objects * 4 / 5;
        for (var i = 0; i < objects; i++)
        {
            if (i < endpoints)
            {
                server.Api.Create(Endpoint(i));
            }
            else
            {
                server.Api.Create(Model(i));
            }
        }

        var samples = new List<Sample>();
        var random = new Random(7);
        var clock = Stopwatch.StartNew();
        var nextMinute = TimeSpan.FromMinutes(1);
        var minute = 0;
        double lastBucketsTotal = 0;
        var lastBuckets = new Dictionary<string, double>();
        server.Journal.Clear();
        var requestsAtMinuteStart = 0;
        var p99s = new List<(int Minute, double P99, int Requests)>();
        while (clock.Elapsed < TimeSpan.FromMinutes(minutes))
        {
            await Task.Delay(TimeSpan.FromSeconds(10));
            var (rss, _) = op.Memory();
            var scrape = await op.ScrapeAsync();
            samples.Add(new Sample(clock.Elapsed, rss, scrape.Sum("controller_runtime_reconcile_total"), server.Journal.Entries.Count));
            if (clock.Elapsed < nextMinute)
            {
                continue;
            }
            minute++;
            nextMinute += TimeSpan.FromMinutes(1);

            // p99 of the reconciles of the last minute, from the cumulative histogram buckets.
            var buckets = Buckets(scrape);
            var delta = buckets.ToDictionary(b => b.Key, b => b.Value - lastBuckets.GetValueOrDefault(b.Key));
            var total = delta.Values.DefaultIfEmpty(0).Max();
            var p99 = total <= 0 ? 0 : delta.Where(b => b.Value >= 0.99 * total).Select(b => Le(b.Key)).DefaultIfEmpty(double.PositiveInfinity).Min();
            lastBuckets = buckets;
            lastBucketsTotal = total;
            var requests = server.Journal.Entries.Count;
            p99s.Add((minute, p99, requests - requestsAtMinuteStart));
            requestsAtMinuteStart = requests;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"soak: minute {minute}, RSS {rss / 1048576.0:0} MiB, reconcile p99 ≤ {p99} s, {p99s[^1].Requests} requests"));

            // Churn: 1% of the objects get a spec change.
            foreach (var i in Enumerable.Range(0, objects * churnPercent / 100).Select(_ => random.Next(objects)))
            {
                if (i < endpoints)
                {
                    var e = server.Api.Get<InferenceEndpoint>(Namespace, ResourceName(i));
                    e.Spec = e.Spec with { MaxConcurrency = e.Spec.MaxConcurrency == 4 ? 8 : 4 };
                    server.Api.Update(e);
                }
                else
                {
                    var m = server.Api.Get<QuantizedModel>(Namespace, ResourceName(i));
                    m.Spec = m.Spec with { GroupSize = m.Spec.GroupSize == 64 ? 128 : 64 };
                    server.Api.Update(m);
                }
            }
            if (dropEvery > 0 && minute % dropEvery == 0)
            {
                server.DropAllWatches();
            }
            if (server.Journal.Entries.Count > 2_000_000)
            {
                server.Journal.Clear();
                requestsAtMinuteStart = 0;
            }
        }
        await op.StopAsync();

        var report = Report(objects, minutes, samples, p99s);
        await File.WriteAllTextAsync(Path.Combine(reportDir, "soak.md"), report);
        Console.WriteLine(report);
        _ = lastBucketsTotal;
    }

    private static string Report(int objects, int minutes, List<Sample> samples, List<(int Minute, double P99, int Requests)> perMinute)
    {
        var settled = samples.Where(s => s.At >= TimeSpan.FromMinutes(minutes / 4.0)).ToList();
        var slope = Slope(settled.Select(s => (s.At.TotalMinutes, s.Rss / 1048576.0)).ToList());
        var report = new StringBuilder();
        report.AppendLine("# Operator soak").AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture, $"{objects:N0} resources (4 InferenceEndpoints : 1 QuantizedModel) for {minutes} min; 1% spec changes per minute; every watch dropped every 5 min; {Environment.ProcessorCount} CPUs; operator: {OperatorProcess.Describe()}.").AppendLine();
        report.AppendLine("| measure | value |").AppendLine("|---|---|");
        report.AppendLine(CultureInfo.InvariantCulture, $"| operator RSS first / last / max | {Mib(samples[0].Rss)} / {Mib(samples[^1].Rss)} / {Mib(samples.Max(s => s.Rss))} MiB |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| RSS trend after the first quarter (least squares) | {slope:+0.00;-0.00} MiB/min |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| reconcile p99 (worst minute / median minute) | {perMinute.Select(m => m.P99).DefaultIfEmpty(0).Max()} / {Median(perMinute.Select(m => m.P99))} s (bucket bound) |");
        report.AppendLine(CultureInfo.InvariantCulture, $"| API requests per minute (min / median / max) | {perMinute.Select(m => m.Requests).DefaultIfEmpty(0).Min()} / {Median(perMinute.Select(m => (double)m.Requests))} / {perMinute.Select(m => m.Requests).DefaultIfEmpty(0).Max()} |");
        report.AppendLine().AppendLine("| minute | RSS MiB | reconcile p99 ≤ s | API requests |").AppendLine("|---|---|---|---|");
        foreach (var (m, p99, requests) in perMinute)
        {
            var rss = samples.LastOrDefault(s => s.At <= TimeSpan.FromMinutes(m))?.Rss ?? 0;
            report.AppendLine(CultureInfo.InvariantCulture, $"| {m} | {Mib(rss)} | {p99} | {requests} |");
        }
        return report.ToString();
    }

    private static Dictionary<string, double> Buckets(MetricsScrape scrape)
    {
        var result = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var s in scrape.Samples.Where(s => s.Name == "controller_runtime_reconcile_time_seconds_bucket"))
        {
            var le = s.Labels.GetValueOrDefault("le") ?? "+Inf";
            result[le] = result.GetValueOrDefault(le) + s.Value;
        }
        return result;
    }

    private static double Le(string le) => le == "+Inf" ? double.PositiveInfinity : double.Parse(le, CultureInfo.InvariantCulture);

    private static double Slope(List<(double X, double Y)> points)
    {
        if (points.Count < 2)
        {
            return 0;
        }
        var mx = points.Average(p => p.X);
        var my = points.Average(p => p.Y);
        var sxx = points.Sum(p => (p.X - mx) * (p.X - mx));
        return sxx == 0 ? 0 : points.Sum(p => (p.X - mx) * (p.Y - my)) / sxx;
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count == 0 ? 0 : sorted[sorted.Count / 2];
    }

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString("0", CultureInfo.InvariantCulture);

    private static int Arg(string[] args, string flag, int fallback)
    {
        var index = Array.IndexOf(args, flag);
        return index >= 0 && index + 1 < args.Length ? int.Parse(args[index + 1], CultureInfo.InvariantCulture) : fallback;
    }

    private static string ResourceName(int i) => string.Create(CultureInfo.InvariantCulture, $"r-{i:00000}");

    private static InferenceEndpoint Endpoint(int i) => new()
    {
        Metadata = new V1ObjectMeta { Name = ResourceName(i), NamespaceProperty = Namespace },
        Spec = new InferenceEndpointSpec
        {
            Model = new ModelReference { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "mistralai/Mistral-7B-v0.1" } } },
            Replicas = 1,
            MaxContextLength = 4096,
            MaxConcurrency = 4,
        },
    };

    private static QuantizedModel Model(int i) => new()
    {
        Metadata = new V1ObjectMeta { Name = ResourceName(i), NamespaceProperty = Namespace },
        Spec = new QuantizedModelSpec
        {
            Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "mistralai/Mistral-7B-v0.1" } },
            Method = QuantizationMethod.Rtn,
            Bits = 4,
            GroupSize = 64,
            Output = new OutputSpec { Pvc = new PvcSource { ClaimName = "models", Path = ResourceName(i) } },
        },
    };

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

    private sealed record Sample(TimeSpan At, long Rss, double Reconciles, int Requests);
}
