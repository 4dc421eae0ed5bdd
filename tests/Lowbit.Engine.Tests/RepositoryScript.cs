using System.Diagnostics;

namespace Lowbit.Engine.Tests;

/// <summary>Runs one of the repository's bash scripts (path relative to the repository root) and collects its output.</summary>
internal static class RepositoryScript
{
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string relativePath, TimeSpan timeout)
    {
        var root = Path.Combine(Path.GetDirectoryName(TokenizerTests.FixtureDirectory)!, "..", "..");
        var start = new ProcessStartInfo("bash", [Path.GetFullPath(Path.Combine(root, relativePath))]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        using var cancel = new CancellationTokenSource(timeout);
        var stderr = process.StandardError.ReadToEndAsync(cancel.Token);
        var stdout = await process.StandardOutput.ReadToEndAsync(cancel.Token);
        await process.WaitForExitAsync(cancel.Token);
        return (process.ExitCode, stdout, await stderr);
    }
}
