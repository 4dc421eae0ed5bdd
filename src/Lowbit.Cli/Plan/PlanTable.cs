using System.Globalization;
using Lowbit.Planner;
using Spectre.Console;

namespace Lowbit.Cli.Plan;

/// <summary>The <c>lowbit plan --output table</c> rendering: summary, memory breakdown, ranked options.</summary>
public static class PlanTable
{
    /// <summary>Options shown after the choice.</summary>
    public const int ExtraOptionsShown = 5;

    /// <summary>Cheaper (rejected) options shown before the choice: the closest in price.</summary>
    public const int CheaperOptionsShown = 10;

    public static void Write(IAnsiConsole console, PlanResult result)
    {
        var request = result.Request;
        var chosen = result is Planned planned ? planned.Choice : null;
        console.MarkupLine($"[bold]{Markup.Escape(request.Model.Name)}[/] · {result.Parameters.Total / 1e9:0.00}B parameters · {Markup.Escape(PlannerNames.Name(request.Workload.Mode))} · {Markup.Escape(request.Workload.Weights.Name)} · runtime {PlannerNames.Name(request.Workload.Runtime)} (memory model assumed) · estimate ±{MemoryEstimator.Margin(request.Workload):0%}");
        console.MarkupLine(Markup.Escape(result.Summary));
        if (PlanJson.VllmMaxConcurrency(result) is { } concurrency)
        {
            console.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"vLLM pool on {concurrency.Label}: {concurrency.Tokens:N0} KV tokens = {concurrency.Concurrency:0.##}× the {request.Workload.ContextLength}-token context")));
        }
        console.WriteLine();

        var memory = new Table().Border(TableBorder.Rounded).Title("Memory (GiB)");
        memory.AddColumn("part");
        memory.AddColumn(new TableColumn("total (1 device)").RightAligned());
        // A pipeline split's GPUs hold different stages: the column is the heaviest one, which decides the fit.
        var perGpuTitle = chosen is null ? "per GPU" : chosen.PipelineStages > 1 ? $"per GPU on {chosen.Label} (heaviest stage)" : $"per GPU on {chosen.Label}";
        memory.AddColumn(new TableColumn(perGpuTitle).RightAligned());
        var perGpu = chosen?.PerDevice ?? result.Total;
        AddRow(memory, "weights", result.Total.Weights, perGpu.Weights);
        AddRow(memory, "KV cache", result.Total.KvCache, perGpu.KvCache);
        AddRow(memory, "activations", result.Total.Activations, perGpu.Activations);
        AddRow(memory, "optimizer", result.Total.Optimizer, perGpu.Optimizer);
        AddRow(memory, "gradients", result.Total.Gradients, perGpu.Gradients);
        AddRow(memory, "overhead (CUDA context, allocator, buffers)", result.Total.Overhead, perGpu.Overhead);
        AddRow(memory, "[bold]total[/]", result.Total.Total, perGpu.Total);
        console.Write(memory);

        var options = new Table().Border(TableBorder.Rounded).Title("Placements (cheapest first)");
        options.AddColumn("#");
        options.AddColumn("placement");
        options.AddColumn(new TableColumn("USD/h").RightAligned());
        options.AddColumn(new TableColumn("GiB/GPU").RightAligned());
        options.AddColumn(new TableColumn("tok/s").RightAligned());
        options.AddColumn(new TableColumn("USD/1M tok").RightAligned());
        options.AddColumn("verdict");
        // Excluded node types (not in --gpu-types, or CPU nodes not asked for) are left out of the table.
        var shown = result.Options.Where(o => o is not DoesNotFit { Reason: RejectionReason.GpuTypeNotAllowed }).ToList();
        var chosenIndex = chosen is null ? -1 : IndexOf(shown, chosen);
        var limit = Math.Min(shown.Count, chosenIndex >= 0 ? chosenIndex + 1 + ExtraOptionsShown : 12);
        var first = Math.Max(0, chosenIndex - CheaperOptionsShown);
        for (var i = first; i < limit; i++)
        {
            var option = shown[i];
            var isChoice = i == chosenIndex;
            var verdict = option switch
            {
                _ when isChoice => "[green]chosen[/]",
                Fits => "fits",
                DoesNotFit rejected => $"[grey]{Markup.Escape(rejected.Explanation)}[/]",
                _ => "",
            };
            options.AddRow(
                (i + 1).ToString(CultureInfo.InvariantCulture),
                isChoice ? $"[bold]{Markup.Escape(option.Label)}[/]" : Markup.Escape(option.Label),
                option.HourlyUsd.ToString("0.00", CultureInfo.InvariantCulture),
                option.PerDevice.Total.GiB.ToString("0.0", CultureInfo.InvariantCulture),
                option.Throughput.TokensPerSecond.ToString("0", CultureInfo.InvariantCulture),
                option.Throughput.UsdPerMillionTokens.ToString("0.00", CultureInfo.InvariantCulture),
                verdict);
        }
        console.Write(options);
        var hidden = result.Options.Count - limit + first;
        if (hidden > 0)
        {
            console.MarkupLine($"[grey]{hidden} more options (far cheaper ones that do not fit, dearer ones, excluded node types) in --output json[/]");
        }
    }

    private static int IndexOf(List<PlacementOption> options, PlacementOption target)
    {
        for (var i = 0; i < options.Count; i++)
        {
            if (ReferenceEquals(options[i], target))
            {
                return i;
            }
        }
        return -1;
    }

    private static void AddRow(Table table, string label, ByteSize total, ByteSize perGpu) =>
        table.AddRow(label, total.GiB.ToString("0.00", CultureInfo.InvariantCulture), perGpu.GiB.ToString("0.00", CultureInfo.InvariantCulture));
}
