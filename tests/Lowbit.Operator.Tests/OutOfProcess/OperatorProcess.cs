using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Lowbit.Operator.Runtime;

namespace Lowbit.Operator.Tests.OutOfProcess;

/// <summary>
/// The <c>lowbit-operator</c> executable as a child OS process (<c>dotnet lowbit-operator.dll</c> from the test
/// output folder, where the project reference copies it with its runtimeconfig): started with a kubeconfig and
/// <c>--Operator:...</c> settings, its stdout and stderr captured line by line, <c>/metrics</c> and <c>/readyz</c>
/// read from the port it reports, stopped with SIGTERM (<c>kill -TERM</c>) or SIGKILL.
/// </summary>
internal sealed class OperatorProcess : IAsyncDisposable
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    private const string ListeningPrefix = "Now listening on: ";
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _output = new();
    private readonly TaskCompletionSource<Uri> _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(5) };

    private OperatorProcess(Process process, string identity)
    {
        _process = process;
        Identity = identity;
    }

    /// <summary>The leader-election identity; also in the User-Agent of every request it makes.</summary>
    public string Identity { get; }

    public string UserAgent => UserAgentHandler.For(Identity);

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>Everything written to stdout and stderr so far, a line per entry.</summary>
    public IReadOnlyList<string> Output => [.. _output];

    /// <summary>The operator's HTTP address (<c>/metrics</c>, <c>/healthz</c>, <c>/readyz</c>), once it listens.</summary>
    public Uri Url => _listening.Task.IsCompletedSuccessfully ? _listening.Task.Result : throw new InvalidOperationException($"{Identity} is not listening yet");

    /// <summary>Starts the operator against <paramref name="kubeconfig"/> and waits until it serves HTTP.</summary>
    public static async Task<OperatorProcess> StartAsync(string kubeconfig, string identity, params string[] settings)
    {
        var (process, op) = Launch(kubeconfig, identity, settings);
        try
        {
            await op._listening.Task.WaitAsync(Patience);
        }
        catch (Exception ex) when (ex is TimeoutException or InvalidOperationException)
        {
            var what = process.HasExited ? $"exited with {process.ExitCode}" : $"did not report its address within {Patience.TotalSeconds} s";
            await op.DisposeAsync(); // waits for the output to drain
            throw new InvalidOperationException($"{identity} {what}:\n{op.Transcript()}", ex);
        }

        return op;
    }

    /// <summary>Runs the operator until it exits by itself (e.g. on invalid settings); its exit code and output.</summary>
    public static async Task<(int ExitCode, IReadOnlyList<string> Output)> RunToExitAsync(string kubeconfig, params string[] settings)
    {
        var (process, op) = Launch(kubeconfig, "run-to-exit", settings);
        await using (op)
        {
            var exitCode = await op.WaitForExitAsync(Patience)
                ?? throw new TimeoutException($"still running after {Patience.TotalSeconds} s:\n{op.Transcript()}");
            await process.WaitForExitAsync(); // drain the output
            return (exitCode, op.Output);
        }
    }

    private static (Process Process, OperatorProcess Operator) Launch(string kubeconfig, string identity, string[] settings)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "lowbit-operator.dll");
        if (!File.Exists(dll) || !File.Exists(Path.ChangeExtension(dll, ".runtimeconfig.json")))
        {
            throw new FileNotFoundException($"{dll} (and its runtimeconfig) not next to the tests: the project reference to Lowbit.Operator copies them", dll);
        }

        var start = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        foreach (var arg in new[]
        {
            "exec", dll,
            "--kubeconfig", kubeconfig,
            "--urls", "http://127.0.0.1:0",
            $"--Operator:LeaderElection:Identity={identity}",
            "--Operator:LeaderElection:LeaseNamespace=default",
            "--Operator:WatchNamespace=default",
            "--Logging:Console:FormatterName=simple",
            "--Logging:Console:FormatterOptions:SingleLine=true",
            "--Logging:Console:FormatterOptions:TimestampFormat=HH:mm:ss.fff ",
            "--Logging:Console:FormatterOptions:ColorBehavior=Disabled",
            "--Logging:LogLevel:Microsoft.AspNetCore=Warning",
        }.Concat(settings))
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment.Remove("KUBECONFIG");
        start.Environment.Remove("ASPNETCORE_URLS");
        start.Environment["DOTNET_ENVIRONMENT"] = "Production";
        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        var op = new OperatorProcess(process, identity);
        process.OutputDataReceived += (_, e) => op.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => op.OnLine(e.Data);
        process.Exited += (_, _) => op._listening.TrySetException(new InvalidOperationException($"{identity} exited before listening"));
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return (process, op);
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        _output.Enqueue(line);
        var at = line.IndexOf(ListeningPrefix, StringComparison.Ordinal);
        if (at >= 0 && Uri.TryCreate(line[(at + ListeningPrefix.Length)..].Trim(), UriKind.Absolute, out var url))
        {
            _listening.TrySetResult(url);
        }
    }

    /// <summary>The captured output, for failure messages.</summary>
    public string Transcript() => string.Join('\n', _output);

    public async Task<HttpStatusCode> ReadyzAsync()
    {
        using var response = await _http.GetAsync(new Uri(Url, "/readyz"));
        return response.StatusCode;
    }

    public Task<string> MetricsAsync() => _http.GetStringAsync(new Uri(Url, "/metrics"));

    /// <summary>The value of one series (name with labels exactly as exposed), or null when it is not exposed.</summary>
    public async Task<double?> MetricAsync(string series)
    {
        foreach (var line in (await MetricsAsync()).Split('\n'))
        {
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
            {
                return double.Parse(line[(series.Length + 1)..], CultureInfo.InvariantCulture);
            }
        }

        return null;
    }

    /// <summary>Polls <c>/readyz</c> until it answers 200.</summary>
    public Task WaitReadyAsync() => WaitAsync(async () => await ReadyzAsync() == HttpStatusCode.OK, "/readyz 200");

    /// <summary>Polls until <paramref name="condition"/> holds, failing with the transcript after <see cref="Patience"/>.</summary>
    public async Task WaitAsync(Func<Task<bool>> condition, string what)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var deadline = DateTime.UtcNow + Patience;
        while (!await condition())
        {
            if (HasExited)
            {
                throw new Xunit.Sdk.XunitException($"{Identity} exited ({_process.ExitCode}) while waiting for {what}:\n{Transcript()}");
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"{Identity}: {what} not reached within {Patience.TotalSeconds} s:\n{Transcript()}");
            }

            await Task.Delay(50);
        }
    }

    /// <summary>Sends SIGTERM, as the kubelet does when it stops a pod.</summary>
    public async Task TerminateAsync()
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-TERM", Pid.ToString(CultureInfo.InvariantCulture)]) { UseShellExecute = false })!;
        await kill.WaitForExitAsync();
        if (kill.ExitCode != 0)
        {
            throw new InvalidOperationException($"kill -TERM {Pid} exited {kill.ExitCode}");
        }
    }

    /// <summary>SIGKILL: no shutdown code runs, the Lease is not released.</summary>
    public void Kill() => _process.Kill();

    /// <summary>Waits for the process to exit and returns its exit code; null when it is still running after <paramref name="within"/>.</summary>
    public async Task<int?> WaitForExitAsync(TimeSpan within)
    {
        using var timeout = new CancellationTokenSource(within);
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            return null;
        }

        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        _http.Dispose();
        if (!_process.HasExited)
        {
            _process.Kill();
        }

        await _process.WaitForExitAsync(); // also drains the redirected output
        _process.Dispose();
    }

    /// <summary>The <c>dotnet</c> host running the tests (it runs the operator's framework-dependent dll too).</summary>
    private static string DotnetHost()
    {
        if (Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet")
        {
            return self;
        }

        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host))
        {
            return host;
        }

        foreach (var root in new[] { Environment.GetEnvironmentVariable("DOTNET_ROOT") }.Concat((Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')))
        {
            if (!string.IsNullOrEmpty(root) && File.Exists(Path.Combine(root, "dotnet")))
            {
                return Path.Combine(root, "dotnet");
            }
        }

        throw new FileNotFoundException("no dotnet host: not the test host, not DOTNET_HOST_PATH, DOTNET_ROOT or PATH");
    }
}
