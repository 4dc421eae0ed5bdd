using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Lowbit.Operator.Telemetry;

namespace Lowbit.Benchmarks.Operator;

/// <summary>
/// The built <c>lowbit-operator</c> run as its own OS process (<c>dotnet lowbit-operator.dll</c>, with the
/// runtimeconfig.json the operator project ships, so its GC settings apply), pointed at a kubeconfig; its
/// <c>/metrics</c> scraped over HTTP and its memory read from <c>/proc/&lt;pid&gt;/status</c>.
/// </summary>
public sealed class OperatorProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly HttpClient _http;
    private readonly StringBuilder _output = new();

    private OperatorProcess(Process process, Uri baseUri)
    {
        _process = process;
        _http = new HttpClient { BaseAddress = baseUri, Timeout = TimeSpan.FromSeconds(10) };
    }

    /// <summary>Names an operator executable the benchmarks start instead of <c>dotnet lowbit-operator.dll</c>.</summary>
    public const string ExecutableVariable = "LOWBIT_BENCH_OPERATOR";

    public int Id => _process.Id;

    /// <summary>What the benchmarks measure, for their reports: the executable named by <see cref="ExecutableVariable"/>, or the build's dll.</summary>
    public static string Describe() => Environment.GetEnvironmentVariable(ExecutableVariable) is { Length: > 0 } executable
        ? $"`{Path.GetFullPath(executable)}` ({ExecutableVariable}; `make build` ships `out/lowbit-operator`, self-contained and trimmed)"
        : "`dotnet lowbit-operator.dll` from the benchmark's build, framework-dependent (set LOWBIT_BENCH_OPERATOR=out/lowbit-operator after `make build` to measure what ships)";

    /// <summary>Starts the operator and waits until <c>/readyz</c> answers 200 (caches synced).</summary>
    public static async Task<OperatorProcess> StartAsync(string kubeconfig, IEnumerable<string> settings, IReadOnlyDictionary<string, string>? environment = null)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "lowbit-operator.dll");
        if (!File.Exists(dll) || !File.Exists(Path.ChangeExtension(dll, ".runtimeconfig.json")))
        {
            throw new FileNotFoundException($"the operator build is missing next to the benchmark ({dll} and its runtimeconfig.json); build tests/Lowbit.Benchmarks", dll);
        }

        // LOWBIT_BENCH_OPERATOR: an operator executable to measure instead (e.g. the published out/lowbit-operator).
        var executable = Environment.GetEnvironmentVariable(ExecutableVariable);
        var port = FreePort();
        var info = new ProcessStartInfo(string.IsNullOrEmpty(executable) ? "dotnet" : Path.GetFullPath(executable))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        foreach (var arg in (string.IsNullOrEmpty(executable) ? new[] { dll } : []).Concat(["--kubeconfig", kubeconfig, "--urls", $"http://127.0.0.1:{port}"]).Concat(settings))
        {
            info.ArgumentList.Add(arg);
        }

        foreach (var (key, value) in environment ?? ChartEnvironment())
        {
            info.Environment[key] = value;
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException("could not start the operator process");
        var op = new OperatorProcess(process, new Uri($"http://127.0.0.1:{port}"));
        process.OutputDataReceived += (_, e) => op.Keep(e.Data);
        process.ErrorDataReceived += (_, e) => op.Keep(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        await op.WaitReadyAsync(TimeSpan.FromMinutes(1)).ConfigureAwait(false);
        return op;
    }

    /// <summary>VmRSS (resident now) and VmHWM (peak resident since start) of the process, in bytes.</summary>
    public (long Rss, long Peak) Memory()
    {
        long rss = 0, peak = 0;
        foreach (var line in File.ReadLines($"/proc/{_process.Id}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                rss = Kilobytes(line);
            }
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            {
                peak = Kilobytes(line);
            }
        }

        return (rss, peak);
    }

    public async Task<MetricsScrape> ScrapeAsync()
    {
        var text = await _http.GetStringAsync(new Uri("/metrics", UriKind.Relative)).ConfigureAwait(false);
        return new MetricsScrape(PrometheusText.Parse(text));
    }

    /// <summary>SIGTERM (the pod's stop signal), then waits for a graceful exit; kills after 30 s.</summary>
    public async Task StopAsync()
    {
        if (_process.HasExited)
        {
            return;
        }

        using (var kill = Process.Start("kill", ["-TERM", _process.Id.ToString(CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync().ConfigureAwait(false);
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await _process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _process.Kill(entireProcessTree: true);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        _process.Dispose();
        _http.Dispose();
    }

    private async Task WaitReadyAsync(TimeSpan patience)
    {
        var deadline = DateTime.UtcNow + patience;
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"the operator exited with code {_process.ExitCode} before it was ready:\n{Output()}");
            }

            try
            {
                using var response = await _http.GetAsync(new Uri("/readyz", UriKind.Relative)).ConfigureAwait(false);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }

            await Task.Delay(100).ConfigureAwait(false);
        }

        throw new TimeoutException($"the operator was not ready within {patience.TotalSeconds} s:\n{Output()}");
    }

    private void Keep(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            if (_output.Length > 64 * 1024)
            {
                _output.Remove(0, _output.Length - (32 * 1024));
            }

            _output.AppendLine(line);
        }
    }

    private string Output()
    {
        lock (_output)
        {
            return _output.ToString();
        }
    }

    private static long Kilobytes(string line) =>
        long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;

    /// <summary>
    /// The .NET runtime settings the chart gives the operator's container (<c>DOTNET_*</c> literals in
    /// charts/lowbit/templates/deployment.yaml), so the benchmark measures the process a cluster runs.
    /// </summary>
    public static IReadOnlyDictionary<string, string> ChartEnvironment()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var chart = Path.Combine(dir.FullName, "charts", "lowbit", "templates", "deployment.yaml");
            if (File.Exists(chart))
            {
                return System.Text.RegularExpressions.Regex
                    .Matches(File.ReadAllText(chart), @"- name: (DOTNET_\w+)\s+value: ""([^""]*)""")
                    .ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value, StringComparer.Ordinal);
            }
        }

        throw new InvalidOperationException("charts/lowbit/templates/deployment.yaml not found above the benchmark");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>One scrape of the operator's <c>/metrics</c>, parsed by the operator's own <see cref="PrometheusText"/>.</summary>
public sealed class MetricsScrape(PrometheusParseResult parsed)
{
    public IReadOnlyList<PrometheusSample> Samples => parsed.Samples;

    /// <summary>The sum of <paramref name="name"/>'s samples whose labels include every pair of <paramref name="labels"/>.</summary>
    public double Sum(string name, params (string Key, string Value)[] labels) =>
        parsed.Samples.Where(s => s.Name == name && labels.All(l => s.Labels.TryGetValue(l.Key, out var v) && v == l.Value)).Sum(s => s.Value);
}
