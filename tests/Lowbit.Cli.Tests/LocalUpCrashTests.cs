using System.Diagnostics;
using k8s;
using k8s.Models;

namespace Lowbit.Cli.Tests;

/// <summary>
/// Issue 17, item 6: <c>lowbit local up</c> killed with SIGKILL and started again on the same state directory keeps
/// every write acknowledged more than a snapshot interval before the kill, and kills the container process the
/// killed run left behind instead of running the pod a second time beside it.
/// </summary>
public sealed class LocalUpCrashTests : IDisposable
{
    private const int SnapshotSeconds = 1;

    private readonly string _state = Directory.CreateTempSubdirectory("lowbit-crash-").FullName;
    private readonly List<Process> _started = [];
    private int _orphan;

    public void Dispose()
    {
        if (_orphan > 0 && Alive(_orphan))
        {
            using var left = Process.GetProcessById(_orphan);
            left.Kill();
        }

        foreach (var process in _started)
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit(10_000);
            }

            process.Dispose();
        }

        Directory.Delete(_state, recursive: true);
    }

    private async Task<(Process Process, Kubernetes Client)> UpAsync()
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "exec", Path.Combine(AppContext.BaseDirectory, "lowbit.dll"), "local", "up", "--no-operator", "--state-dir", _state, "--snapshot-interval", $"{SnapshotSeconds}" })
        {
            start.ArgumentList.Add(arg);
        }

        var process = Process.Start(start)!;
        _started.Add(process);
        process.ErrorDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
        {
            if (line.StartsWith("ready: kubeconfig=", StringComparison.Ordinal))
            {
                var config = KubernetesClientConfiguration.BuildConfigFromConfigFile(line["ready: kubeconfig=".Length..]);
                _ = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
                return (process, new Kubernetes(config));
            }
        }

        throw new InvalidOperationException($"lowbit local up exited ({(process.HasExited ? process.ExitCode : -1)}) before it was ready");
    }

    private static async Task<T> EventuallyAsync<T>(Func<Task<T?>> probe, string what)
        where T : class
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if (await probe() is { } value)
            {
                return value;
            }

            await Task.Delay(100);
        }

        throw new TimeoutException(what + " not seen within 60 s");
    }

    private static bool Alive(int pid)
    {
        var stat = $"/proc/{pid}/stat";
        // A killed orphan nobody reaped yet is a zombie (state Z): it no longer runs.
        return File.Exists(stat) && File.ReadAllText(stat).Split(')')[^1].TrimStart().FirstOrDefault() is not ('Z' or 'X');
    }

    [Fact]
    public async Task Does_keep_acknowledged_writes_and_kill_the_orphaned_pod_process_after_sigkill_and_restart()
    {
        var (first, client) = await UpAsync();
        for (var i = 0; i < 20; i++)
        {
            await client.CoreV1.CreateNamespacedConfigMapAsync(new V1ConfigMap
            {
                Metadata = new V1ObjectMeta { Name = $"acked-{i}" },
                Data = new Dictionary<string, string> { ["i"] = $"{i}" },
            }, "default");
        }

        // A pod with no GPU request lands on the catalog's CPU node, which executes pods as local processes.
        await client.CoreV1.CreateNamespacedPodAsync(new V1Pod
        {
            Metadata = new V1ObjectMeta { Name = "sleeper" },
            Spec = new V1PodSpec
            {
                RestartPolicy = "Never",
                Containers = [new V1Container { Name = "main", Image = "busybox:1.36", Command = ["sleep", "300"] }],
            },
        }, "default");
        var pidFile = await EventuallyAsync(() => Task.FromResult(Directory.Exists(Path.Combine(_state, "executor", "pods"))
            ? Directory.EnumerateFiles(Path.Combine(_state, "executor", "pods"), "pid", SearchOption.AllDirectories).FirstOrDefault()
            : null), "the pod's pid file");
        var orphan = _orphan = int.Parse(File.ReadAllText(pidFile).Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(Alive(orphan));

        // Let more than one snapshot interval pass after the last acknowledged write, then SIGKILL (no shutdown hook runs).
        await Task.Delay(TimeSpan.FromSeconds(3 * SnapshotSeconds));
        first.Kill(entireProcessTree: false);
        await first.WaitForExitAsync();
        Assert.True(Alive(orphan), "the pod's process outlives the killed server (an orphan)");

        var (_, restarted) = await UpAsync();

        var names = (await restarted.CoreV1.ListNamespacedConfigMapAsync("default")).Items.Select(c => c.Metadata.Name).ToHashSet();
        Assert.All(Enumerable.Range(0, 20), i => Assert.Contains($"acked-{i}", names));
        Assert.NotNull(await restarted.CoreV1.ReadNamespacedPodAsync("sleeper", "default"));
        Assert.False(Alive(orphan), $"orphaned process {orphan} of the killed run still runs");
    }
}
