using System.Globalization;

namespace Lowbit.Cli.Local;

/// <summary>
/// The demo's quantization sweep: <c>lowbit-engine quantize</c> run for real over a grid of methods and bit widths on
/// the tiny model (two at a time), each reporting measured bits per weight and perplexity on the model's eval text.
/// </summary>
public static class QualitySweep
{
    public static readonly IReadOnlyList<(string Method, int Bits)> DefaultGrid =
        [("rtn", 2), ("rtn", 3), ("rtn", 4), ("rtn", 8), ("hqq", 2), ("hqq", 3), ("hqq", 4)];

    public sealed record Result(IReadOnlyList<QualityPoint> Points, double BaselinePerplexity, IReadOnlyList<string> Failures);

    public static async Task<Result> RunAsync(string engine, string model, string workDirectory, IReadOnlyList<(string Method, int Bits)> grid,
        Action<string> report, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(grid);
        ArgumentNullException.ThrowIfNull(report);
        var points = new List<QualityPoint>();
        var failures = new List<string>();
        var baseline = double.NaN;
        using var slots = new SemaphoreSlim(2);
        var runs = grid.Select(async cell =>
        {
            await slots.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                var result = await QuantizeAsync(engine, model, Path.Combine(workDirectory, $"{cell.Method}-{cell.Bits}"), cell.Method, cell.Bits, cancellationToken)
                    .ConfigureAwait(false);
                lock (points)
                {
                    if (result is { } r)
                    {
                        points.Add(r.Point);
                        baseline = r.Before;
                        report(string.Create(CultureInfo.InvariantCulture,
                            $"sweep: {cell.Method} {cell.Bits}-bit: {r.Point.BitsPerWeight:0.00} bits/weight, perplexity {r.Point.Perplexity:0.000}"));
                    }
                    else
                    {
                        failures.Add($"{cell.Method} {cell.Bits}-bit");
                    }
                }
            }
            finally
            {
                slots.Release();
            }
        });
        await Task.WhenAll(runs).ConfigureAwait(false);
        return new Result(points.OrderBy(p => p.Method, StringComparer.Ordinal).ThenBy(p => p.Bits).ToList(), baseline, failures);
    }

    private static async Task<(QualityPoint Point, double Before)?> QuantizeAsync(string engine, string model, string output, string method, int bits,
        CancellationToken cancellationToken)
    {
        var result = await EngineRunner.QuantizeAsync(engine, model, output, method, bits, cancellationToken).ConfigureAwait(false);
        var bpw = JsonNumbers.Double(result?["artifact"]?["bitsPerWeight"]);
        var before = JsonNumbers.Double(result?["quality"]?["perplexityBefore"]);
        var after = JsonNumbers.Double(result?["quality"]?["perplexityAfter"]);
        return bpw is null || before is null || after is null
            ? null
            : (new QualityPoint { Method = method, Bits = bits, BitsPerWeight = bpw.Value, Perplexity = after.Value }, before.Value);
    }
}
