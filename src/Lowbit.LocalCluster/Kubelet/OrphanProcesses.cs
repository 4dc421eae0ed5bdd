using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster.Kubelet;

/// <summary>
/// Pid files of executed containers (issue 17, item 6). Each local process a container runs as is recorded in
/// <c>&lt;pod dir&gt;/containers/&lt;name&gt;/pid</c> (its pid and start time) while it runs. When <c>lowbit local up</c>
/// is killed (SIGKILL, a crash) its engine processes live on as orphans; the next start on the same state directory
/// kills every recorded process that is still the one recorded (same pid and start time, so a reused pid is left
/// alone) before any kubelet starts, so a pod never runs twice at once (the restored pod then starts again, as a
/// node restart would).
/// </summary>
public static partial class OrphanProcesses
{
    public const string FileName = "pid";

    /// <summary>
    /// Records a started process in <paramref name="path"/>. A process that has already exited (a container like
    /// <c>echo</c> can be gone and reaped before this runs) leaves nothing to orphan and is not recorded: its start time
    /// can no longer be read.
    /// </summary>
    public static void Record(string path, Process process)
    {
        ArgumentNullException.ThrowIfNull(process);
        long startTicks;
        try
        {
            startTicks = process.StartTime.ToUniversalTime().Ticks;
        }
        catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // Gone already: InvalidOperationException once the Process object knows it exited, Win32Exception when the
            // runtime reaped it between that check and the read of /proc/<pid>/stat (Process.GetStat on Linux; it
            // failed an `echo` pod with StartError in a fresh-clone CI run, 2026-12-06). Nothing is left to orphan.
            return;
        }
        File.WriteAllText(path, string.Create(CultureInfo.InvariantCulture, $"{process.Id} {startTicks}\n"));
    }

    /// <summary>Kills the processes recorded under <paramref name="executorDirectory"/> that still run; removes every pid file. Returns the pids killed.</summary>
    public static IReadOnlyList<int> KillAll(string executorDirectory, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(logger);
        var pods = Path.Combine(executorDirectory, "pods");
        if (!Directory.Exists(pods))
        {
            return [];
        }

        var killed = new List<int>();
        foreach (var file in Directory.EnumerateFiles(pods, FileName, SearchOption.AllDirectories))
        {
            if (Read(file) is { } recorded && Kill(recorded.Pid, recorded.StartTicks))
            {
                killed.Add(recorded.Pid);
                Log.KilledOrphan(logger, recorded.Pid, file);
            }

            File.Delete(file);
        }

        return killed;
    }

    private static (int Pid, long StartTicks)? Read(string file)
    {
        var parts = File.ReadAllText(file).Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return parts.Length == 2 && int.TryParse(parts[0], CultureInfo.InvariantCulture, out var pid) && pid > 0
            && long.TryParse(parts[1], CultureInfo.InvariantCulture, out var ticks)
            ? (pid, ticks)
            : null;
    }

    private static bool Kill(int pid, long startTicks)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            // A pid the system gave to another process since (its start time differs) is not ours.
            if (Math.Abs(process.StartTime.ToUniversalTime().Ticks - startTicks) > TimeSpan.TicksPerSecond)
            {
                return false;
            }

            process.Kill(entireProcessTree: true);
            process.WaitForExit(TimeSpan.FromSeconds(10));
            return true;
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or Win32Exception)
        {
            // Gone already, or not ours to signal.
            return false;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Warning, Message = "killed orphaned container process {Pid} left by a previous run ({File})")]
        public static partial void KilledOrphan(ILogger logger, int pid, string file);
    }
}
