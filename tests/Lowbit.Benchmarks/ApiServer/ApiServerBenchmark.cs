using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Lowbit.LocalCluster;
using Lowbit.LocalCluster.Store;

namespace Lowbit.Benchmarks.ApiServer;

/// <summary>
/// The embedded API server under load: 10,000 small custom objects created over HTTPS by a few concurrent
/// clients, listed, and watch-streamed (initial events and live events); creates/s, events/s, memory.
/// </summary>
public sealed class ApiServerBenchmark : IBenchmarkSuite
{
    private const string Crd = """
        {"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"gadgets.bench.lowbit.dev"},
         "spec":{"group":"bench.lowbit.dev","scope":"Namespaced","names":{"plural":"gadgets","singular":"gadget","kind":"Gadget"},
          "versions":[{"name":"v1","served":true,"storage":true,"subresources":{"status":{}},
           "schema":{"openAPIV3Schema":{"type":"object","properties":{
             "spec":{"type":"object","properties":{"size":{"type":"string","enum":["small","large"]},"count":{"type":"integer","minimum":0},"owner":{"type":"string"}}},
             "status":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}}}]}}
        """;

    public string Name => "apiserver";

    public async Task RunAsync(string reportDir, string[] args)
    {
        var objects = args.Length > 0 && int.TryParse(args[0], CultureInfo.InvariantCulture, out var n) ? n : 10_000;
        const int Clients = 4;
        await using var server = await LocalClusterServer.StartAsync();
        using var http = CreateHttpClient(server);
        var baseUrl = server.Url.ToString().TrimEnd('/');
        await PostAsync(http, $"{baseUrl}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Crd);
        var collection = $"{baseUrl}/apis/bench.lowbit.dev/v1/namespaces/default/gadgets";

        // Live watch opened before the creates: counts events as they are committed.
        using var liveCts = new CancellationTokenSource();
        var liveStarted = new TaskCompletionSource();
        var liveWatch = CountWatchEventsAsync(http, $"{collection}?watch=1&resourceVersion={server.Api.CurrentResourceVersion}", objects, liveStarted, liveCts.Token);
        await liveStarted.Task;

        ForceGc();
        var heapBefore = GC.GetTotalMemory(forceFullCollection: true);
        var sampleJson = Body(0);
        var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        var created = Stopwatch.StartNew();
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, Clients).Select(async _ =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < objects)
            {
                await PostAsync(http, collection, Body(i));
            }
        }));
        created.Stop();
        var cpuPerCreate = (Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalMilliseconds / objects;
        var liveEvents = await liveWatch;
        ForceGc();
        var heapAfter = GC.GetTotalMemory(forceFullCollection: true);
        var storedJsonBytes = server.Api.List(server.Api.Resources.Find("bench.lowbit.dev", "v1", "gadgets")!, "default").Items.Sum(o => (long)o.Json.Length);

        var listed = Stopwatch.StartNew();
        var listBody = await http.GetStringAsync(new Uri(collection));
        listed.Stop();
        var listCount = CountOccurrences(listBody, "\"kind\":\"Gadget\"");

        var watched = Stopwatch.StartNew();
        var snapshotEvents = await CountWatchEventsAsync(http, $"{collection}?watch=1", objects, null, CancellationToken.None);
        watched.Stop();

        var gadgets = server.Api.Resources.Find("bench.lowbit.dev", "v1", "gadgets")!;
        server.Api.Create(BuiltinResources.Namespaces, null, new System.Text.Json.Nodes.JsonObject { ["metadata"] = new System.Text.Json.Nodes.JsonObject { ["name"] = "inproc" } });
        var inProcess = Stopwatch.StartNew();
        for (var i = 0; i < objects; i++)
        {
            server.Api.Create(gadgets, "inproc", System.Text.Json.Nodes.JsonNode.Parse(Body(i))!.AsObject());
        }
        inProcess.Stop();

        var perObjectOverhead = (double)(heapAfter - heapBefore - storedJsonBytes) / objects;
        var process = Process.GetCurrentProcess();
        var load = File.Exists("/proc/loadavg") ? (await File.ReadAllTextAsync("/proc/loadavg")).Trim() : "n/a";
        var report = new StringBuilder()
            .AppendLine("# Embedded API server benchmark")
            .AppendLine()
            .AppendLine(CultureInfo.InvariantCulture, $"{objects:N0} custom objects (`Gadget`, schema-validated), {Clients} concurrent HTTPS clients (HTTP/1.1), server and clients in one process; {Environment.ProcessorCount} CPUs.")
            .AppendLine()
            .AppendLine("| measure | value | goal |")
            .AppendLine("|---|---|---|")
            .AppendLine(CultureInfo.InvariantCulture, $"| creates/s (POST, {Clients} clients) | {objects / created.Elapsed.TotalSeconds:N0} | ≥ 2,000 |")
            .AppendLine(CultureInfo.InvariantCulture, $"| CPU time per HTTP create (server + client + live watch, whole process) | {cpuPerCreate:N3} ms → {2000 / cpuPerCreate:N0} creates/s on 2 idle cores | — |")
            .AppendLine(CultureInfo.InvariantCulture, $"| creates/s in process (`ClusterApi.Create`, no HTTP) | {objects / inProcess.Elapsed.TotalSeconds:N0} | — |")
            .AppendLine(CultureInfo.InvariantCulture, $"| live watch events received during the creates | {liveEvents.Count:N0} in {liveEvents.Elapsed.TotalSeconds:N2} s | all |")
            .AppendLine(CultureInfo.InvariantCulture, $"| list of {listCount:N0} objects | {listed.Elapsed.TotalMilliseconds:N0} ms ({listBody.Length / 1024.0 / 1024.0:N1} MiB) | — |")
            .AppendLine(CultureInfo.InvariantCulture, $"| watch events/s (initial events of a new watch) | {snapshotEvents.Count / watched.Elapsed.TotalSeconds:N0} | ≥ 20,000 |")
            .AppendLine(CultureInfo.InvariantCulture, $"| managed heap growth per stored object beyond its JSON ({storedJsonBytes / objects} B) | {perObjectOverhead / 1024:N2} KiB | ≤ 5 KiB |")
            .AppendLine(CultureInfo.InvariantCulture, $"| process working set after the run | {process.WorkingSet64 / 1024.0 / 1024.0:N0} MiB | — |")
            .AppendLine(CultureInfo.InvariantCulture, $"| managed heap after the run | {heapAfter / 1024.0 / 1024.0:N0} MiB | — |")
            .AppendLine()
            .AppendLine("Heap growth counts everything the store keeps per object (JSON bytes are excluded): the stored entry, its label index, the bounded watch history entries and the garbage collector's owner index.")
            .AppendLine(CultureInfo.InvariantCulture, $"Machine load during the run (/proc/loadavg at the end): `{load}` — on a shared machine the create rate scales with the CPU share it gets.")
            .AppendLine()
            .AppendLine(CultureInfo.InvariantCulture, $"Sample object JSON: `{sampleJson}`");
        var path = Path.Combine(reportDir, "apiserver.md");
        await File.WriteAllTextAsync(path, report.ToString());
        Console.WriteLine(report.ToString());
        if (snapshotEvents.Count != objects || listCount != objects || liveEvents.Count != objects)
        {
            throw new InvalidOperationException($"expected {objects} objects everywhere; listed {listCount}, watched {snapshotEvents.Count}, live {liveEvents.Count}");
        }
    }

    private static string Body(int i) =>
        $"{{\"apiVersion\":\"bench.lowbit.dev/v1\",\"kind\":\"Gadget\",\"metadata\":{{\"name\":\"gadget-{i:D5}\",\"labels\":{{\"app\":\"bench\",\"shard\":\"{i % 16}\"}}}},\"spec\":{{\"size\":\"{(i % 2 == 0 ? "small" : "large")}\",\"count\":{i},\"owner\":\"team-{i % 7}\"}}}}";

    private static async Task PostAsync(HttpClient http, string url, string body)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await http.PostAsync(new Uri(url), content);
        if (response.StatusCode != HttpStatusCode.Created)
        {
            throw new InvalidOperationException($"POST {url} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        }
    }

    private sealed record WatchCount(int Count, TimeSpan Elapsed);

    private static async Task<WatchCount> CountWatchEventsAsync(HttpClient http, string url, int expected, TaskCompletionSource? started, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(url));
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        response.EnsureSuccessStatusCode();
        started?.TrySetResult();
        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
        using var reader = new StreamReader(stream);
        var count = 0;
        var clock = new Stopwatch();
        while (count < expected && await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (count == 0)
            {
                clock.Start();
            }
            if (line.StartsWith("{\"type\":\"ADDED\"", StringComparison.Ordinal))
            {
                count++;
            }
        }
        return new WatchCount(count, clock.Elapsed);
    }

    private static int CountOccurrences(string text, string value)
    {
        var count = 0;
        for (var at = text.IndexOf(value, StringComparison.Ordinal); at >= 0; at = text.IndexOf(value, at + value.Length, StringComparison.Ordinal))
        {
            count++;
        }
        return count;
    }

    private static HttpClient CreateHttpClient(LocalClusterServer server)
    {
        var ca = X509Certificate2.CreateFromPem(server.CaPem!);
        var handler = new SocketsHttpHandler { MaxConnectionsPerServer = 16 };
        handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, _, _) =>
        {
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(ca);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            return cert is not null && chain.Build(new X509Certificate2(cert));
        };
        var client = new HttpClient(handler) { Timeout = TimeSpan.FromMinutes(5) };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", server.Token);
        return client;
    }

    private static void ForceGc()
    {
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
    }
}
