using System.Diagnostics;

namespace Lowbit.Engine.Tests;

public class NativeKernelEmulationTests
{
    /// <summary>
    /// The int4 GEMV v2 (src/Lowbit.Engine/native/lowbit_kernels_v2.cu) compiled with g++ against headers that emulate
    /// the CUDA subset it uses (native/emulate): its outputs against a float64 reference for 1-4 rows, tail rows,
    /// several blocks, K up to 16,384, and the (rows, K) it refuses. No GPU here; the bundle's self-check runs the real one.
    /// </summary>
    [Fact]
    public async Task Does_match_the_float64_reference_when_the_int4_v2_kernel_runs_emulated_on_the_cpu()
    {
        var script = Path.Combine(Path.GetDirectoryName(TokenizerTests.FixtureDirectory)!, "..", "..", "src", "Lowbit.Engine", "native", "emulate", "run.sh");
        var start = new ProcessStartInfo("bash", [Path.GetFullPath(script)]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var stderr = process.StandardError.ReadToEndAsync(timeout.Token);
        var stdout = await process.StandardOutput.ReadToEndAsync(timeout.Token);
        await process.WaitForExitAsync(timeout.Token);

        Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}: {stdout} {await stderr}");
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(16, lines.Count(l => l.Contains("rel err", StringComparison.Ordinal) && l.EndsWith("padding untouched 1", StringComparison.Ordinal)));
        Assert.Equal("ok", lines[^1]);
    }
}
