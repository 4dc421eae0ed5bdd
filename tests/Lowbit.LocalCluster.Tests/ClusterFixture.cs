using System.Diagnostics;
using System.Text;
using Lowbit.LocalCluster;

namespace Lowbit.LocalCluster.Tests;

/// <summary>One embedded API server per test class, plus runners for the real kubectl and helm binaries.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    private string _home = "";

    public LocalClusterServer Server { get; private set; } = null!;

    public static string RepoRoot { get; } = FindRepoRoot();

    public static string FixturesDir => Path.Combine(AppContext.BaseDirectory, "fixtures");

    public static string ChartsDir => Path.Combine(AppContext.BaseDirectory, "charts");

    public async Task InitializeAsync()
    {
        _home = Directory.CreateTempSubdirectory("lowbit-kubectl-home-").FullName;
        Server = await LocalClusterServer.StartAsync(new LocalClusterOptions
        {
            Store = new Store.ClusterApiOptions { BookmarkInterval = TimeSpan.FromMilliseconds(200) },
        });
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        Directory.Delete(_home, recursive: true);
    }

    public Task<ToolResult> KubectlAsync(params string[] args) => RunAsync(Tool("kubectl"), args, TimeSpan.FromSeconds(60));

    public Task<ToolResult> HelmAsync(params string[] args) => RunAsync(Tool("helm"), args, TimeSpan.FromSeconds(60));

    /// <summary>kubectl that must succeed; returns stdout.</summary>
    public async Task<string> Kubectl(params string[] args)
    {
        var result = await KubectlAsync(args);
        Assert.True(result.ExitCode == 0, $"kubectl {string.Join(' ', args)} failed ({result.ExitCode}): {result.StdErr}\n{result.StdOut}");
        return result.StdOut;
    }

    /// <summary>Starts a long-running kubectl (e.g. <c>get -w</c>) whose stdout lines arrive on a channel.</summary>
    public StreamingTool StartKubectl(params string[] args) => new(StartProcess(Tool("kubectl"), args));

    public static string Tool(string name)
    {
        var path = Path.Combine(RepoRoot, ".tools", "bin", name);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{name} not found at {path}: run `bash .ci/tools.sh` in the repository first", path);
        }
        return path;
    }

    private Process StartProcess(string file, string[] args) => StartTool(file, args, Server.KubeconfigPath, _home);

    private Task<ToolResult> RunAsync(string file, string[] args, TimeSpan timeout) => RunToolAsync(file, args, Server.KubeconfigPath, _home, timeout);

    /// <summary>Starts kubectl or helm with its output redirected, against <paramref name="kubeconfig"/> and with its own HOME.</summary>
    public static Process StartTool(string file, string[] args, string kubeconfig, string home)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        info.Environment["KUBECONFIG"] = kubeconfig;
        info.Environment["HOME"] = home;
        info.Environment["HELM_CACHE_HOME"] = Path.Combine(home, ".cache", "helm");
        info.Environment["HELM_CONFIG_HOME"] = Path.Combine(home, ".config", "helm");
        info.Environment["HELM_DATA_HOME"] = Path.Combine(home, ".local", "helm");
        return Process.Start(info)!;
    }

    /// <summary>Runs kubectl or helm to completion (killed after <paramref name="timeout"/>); exit code and output, whether it succeeds or not.</summary>
    public static async Task<ToolResult> RunToolAsync(string file, string[] args, string kubeconfig, string home, TimeSpan timeout)
    {
        using var process = StartTool(file, args, kubeconfig, home);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{Path.GetFileName(file)} {string.Join(' ', args)} did not finish in {timeout.TotalSeconds}s");
        }
        return new ToolResult(process.ExitCode, await stdout, await stderr);
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Operator.sln")))
            {
                return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException($"no Operator.sln above {AppContext.BaseDirectory}");
    }
}

public sealed record ToolResult(int ExitCode, string StdOut, string StdErr);

/// <summary>A running tool whose stdout lines can be awaited.</summary>
public sealed class StreamingTool : IDisposable
{
    private readonly Process _process;
    private readonly System.Threading.Channels.Channel<string> _lines = System.Threading.Channels.Channel.CreateUnbounded<string>();
    private readonly StringBuilder _all = new();

    public StreamingTool(Process process)
    {
        _process = process;
        _ = Task.Run(async () =>
        {
            while (await process.StandardOutput.ReadLineAsync() is { } line)
            {
                lock (_all)
                {
                    _all.AppendLine(line);
                }
                _lines.Writer.TryWrite(line);
            }
            _lines.Writer.TryComplete();
        });
    }

    /// <summary>Waits for a line containing <paramref name="text"/>.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> predicate, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            while (await _lines.Reader.WaitToReadAsync(cts.Token))
            {
                while (_lines.Reader.TryRead(out var line))
                {
                    if (predicate(line))
                    {
                        return line;
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        string seen;
        lock (_all)
        {
            seen = _all.ToString();
        }
        throw new TimeoutException($"no matching line within {timeout.TotalSeconds}s; output so far:\n{seen}\nstderr: {(_process.HasExited ? _process.StandardError.ReadToEnd() : "(running)")}");
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }
        _process.Dispose();
    }
}
