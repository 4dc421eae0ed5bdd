using System.Diagnostics;
using Lowbit.LocalCluster.Kubelet;

namespace Lowbit.LocalCluster.Tests.Cluster;

public sealed class OrphanProcessesTests
{
    [Fact]
    public void Does_record_nothing_for_a_container_process_that_exited_before_it_was_recorded()
    {
        // A container like `echo first line` can exit (and be reaped) before the executor records its pid; reading its
        // start time then throws, which failed the container with StartError (a fresh-clone CI run, 2026-12-05).
        using var process = Process.Start(new ProcessStartInfo("/bin/true") { UseShellExecute = false })!;
        process.WaitForExit();
        var path = Path.Combine(Path.GetTempPath(), $"lowbit-orphan-{Guid.NewGuid():N}");

        OrphanProcesses.Record(path, process);

        Assert.False(File.Exists(path));
    }

    [Fact]
    public void Does_record_the_pid_and_start_time_of_a_running_process()
    {
        using var process = Process.Start(new ProcessStartInfo("/bin/sleep", "5") { UseShellExecute = false })!;
        var path = Path.Combine(Path.GetTempPath(), $"lowbit-orphan-{Guid.NewGuid():N}");
        try
        {
            OrphanProcesses.Record(path, process);

            var fields = File.ReadAllText(path).Trim().Split(' ');
            Assert.Equal(process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), fields[0]);
            Assert.Equal(process.StartTime.ToUniversalTime().Ticks.ToString(System.Globalization.CultureInfo.InvariantCulture), fields[1]);
        }
        finally
        {
            process.Kill();
            File.Delete(path);
        }
    }
}
