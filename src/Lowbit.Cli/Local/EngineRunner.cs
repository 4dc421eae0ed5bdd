using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;

namespace Lowbit.Cli.Local;

/// <summary>Runs <c>lowbit-engine</c> verbs as child processes for the demo and reads their JSON result file.</summary>
public static class EngineRunner
{
    /// <summary>Runs the engine with <paramref name="args"/> plus <c>--result-file</c>; the result, or null when it failed.</summary>
    public static async Task<JsonNode?> RunAsync(string engine, IReadOnlyList<string> args, string resultFile, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var start = new ProcessStartInfo(engine)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in args.Concat(["--result-file", resultFile]))
        {
            start.ArgumentList.Add(arg);
        }
        File.Delete(resultFile);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {engine}");
        var drainOut = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var drainErr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        await Task.WhenAll(drainOut, drainErr).ConfigureAwait(false);
        return process.ExitCode == 0 && File.Exists(resultFile)
            ? JsonNode.Parse(await File.ReadAllTextAsync(resultFile, cancellationToken).ConfigureAwait(false))
            : null;
    }

    /// <summary><c>eval</c>: the perplexity of a text under a model (and adapter), or null when the run failed.</summary>
    public static async Task<double?> EvalAsync(string engine, string model, string? adapter, string textFile, CancellationToken cancellationToken)
    {
        var args = new List<string> { "eval", "--model", model, "--text", textFile };
        if (adapter is not null)
        {
            args.AddRange(["--adapter", adapter]);
        }
        var resultFile = textFile + (adapter is null ? ".base" : ".adapter") + ".result.json";
        var result = await RunAsync(engine, args, resultFile, cancellationToken).ConfigureAwait(false);
        return JsonNumbers.Double(result?["metrics"]?["perplexity"]);
    }

    /// <summary><c>quantize</c> to the lowbit format with perplexity on the model's eval text.</summary>
    public static Task<JsonNode?> QuantizeAsync(string engine, string model, string output, string method, int bits, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(output);
        return RunAsync(engine,
        [
            "quantize", "--model", model, "--method", method, "--bits", bits.ToString(CultureInfo.InvariantCulture), "--group-size", "32",
            "--format", "lowbit", "--out", Path.Combine(output, "model"), "--eval-text", Path.Combine(model, "eval.txt"),
        ], Path.Combine(output, "result.json"), cancellationToken);
    }
}
