using System.Globalization;
using ScottPlot;

namespace Lowbit.Cli.Local;

/// <summary>One quantization of the demo's sweep: a method at a bit width, its measured bits per weight and perplexity.</summary>
public sealed record QualityPoint
{
    public required string Method { get; init; }

    public required int Bits { get; init; }

    public required double BitsPerWeight { get; init; }

    public required double Perplexity { get; init; }
}

/// <summary>The demo's perplexity-versus-bits-per-weight chart (PNG), one line per method, the 16-bit model as a reference line.</summary>
public static class QualityChart
{
    public static void Write(string path, IReadOnlyList<QualityPoint> points, double baselinePerplexity, string modelName)
    {
        ArgumentNullException.ThrowIfNull(points);
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var index = 0;
        foreach (var method in points.Select(p => p.Method).Distinct(StringComparer.Ordinal))
        {
            var series = points.Where(p => p.Method == method).OrderBy(p => p.BitsPerWeight).ToList();
            var scatter = plot.Add.Scatter(series.Select(p => p.BitsPerWeight).ToArray(), series.Select(p => p.Perplexity).ToArray());
            scatter.LegendText = method;
            scatter.Color = palette.GetColor(index++);
            scatter.LineWidth = 2;
            scatter.MarkerSize = 8;
        }
        var baseline = plot.Add.HorizontalLine(baselinePerplexity);
        baseline.LegendText = string.Create(CultureInfo.InvariantCulture, $"16-bit ({baselinePerplexity:0.000})");
        baseline.LinePattern = LinePattern.Dashed;
        baseline.Color = Colors.Gray;
        plot.Title($"{modelName}: perplexity vs bits per weight");
        plot.XLabel("bits per weight (scales and zeros included)");
        plot.YLabel("perplexity (lower is better)");
        plot.ShowLegend(Alignment.UpperRight);
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        plot.SavePng(path, 900, 560);
    }
}
