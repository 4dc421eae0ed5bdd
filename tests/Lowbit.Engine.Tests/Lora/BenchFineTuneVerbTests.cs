using System.Text.Json;
using Lowbit.Engine.DevTools;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>
/// The fields of <c>bench-finetune</c> that <c>bench-finetune.sh</c> reads on the GPU host (<c>hostMsPerStep</c>, the
/// optimizer-only lines), on a tiny random model on the CPU. Values are timings: only their presence and consistency
/// are checked.
/// </summary>
public sealed class BenchFineTuneVerbTests
{
    private static List<JsonElement> Lines(StringWriter stdout) =>
        stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();

    [Fact]
    public void Does_report_host_milliseconds_per_phase_on_a_random_model_it_writes()
    {
        using var dir = new TempDir();
        var stdout = new StringWriter();
        var exit = BenchFineTuneVerb.Run(
            ["bench-finetune", "--model", dir.File("random"), "--random-layers", "2", "--random-hidden", "32", "--random-intermediate", "64",
             "--random-heads", "2", "--random-vocab", "100", "--method", "lora", "--device", "cpu", "--seq-length", "16", "--steps", "4",
             "--warmup", "1", "--r", "4"],
            stdout, TextWriter.Null);

        Assert.Equal(0, exit);
        Assert.True(File.Exists(Path.Combine(dir.File("random"), "config.json")), "the random model was written");
        var line = Assert.Single(Lines(stdout));
        Assert.Equal(2, line.GetProperty("layers").GetInt32());
        Assert.Equal(3, line.GetProperty("timedSteps").GetInt32());
        Assert.Equal(2 * (4 * (4 * 32 + 32 * 4) + 2 * (4 * 32 + 64 * 4) + (4 * 64 + 32 * 4)), line.GetProperty("trainableParameters").GetInt64());
        var phases = line.GetProperty("hostMsPerStep");
        var names = new[] { "forwardBackward", "clip", "optimizerStep", "zeroGrad", "lossSync", "bookkeeping" };
        Assert.Equal([.. names, "total"], phases.EnumerateObject().Select(p => p.Name));
        Assert.All(names, n => Assert.True(phases.GetProperty(n).GetDouble() >= 0, n));
        Assert.True(phases.GetProperty("forwardBackward").GetDouble() > 0, "forward+backward took time");
        // Each phase and the total are rounded to 0.001 ms, so the sum of the six may be off by 0.0035 (a one-decimal
        // comparison failed once when both sides sat at 8.65 and rounded apart).
        var sum = names.Sum(n => phases.GetProperty(n).GetDouble());
        var total = phases.GetProperty("total").GetDouble();
        Assert.True(Math.Abs(sum - total) <= 0.01, $"the phases sum to {sum} ms, the total is {total} ms");
    }

    [Fact]
    public void Does_time_the_per_tensor_and_the_flat_optimizer_at_the_lora_shapes_of_a_llama()
    {
        var stdout = new StringWriter();
        var exit = BenchFineTuneVerb.Run(
            ["bench-finetune", "--optimizer-only", "true", "--device", "cpu", "--layers", "2", "--hidden", "64", "--intermediate", "96", "--r", "4", "--steps", "2"],
            stdout, TextWriter.Null);

        Assert.Equal(0, exit);
        var lines = Lines(stdout);
        Assert.Equal(["per-tensor", "flat"], lines.Select(l => l.GetProperty("implementation").GetString()));
        Assert.All(lines, l =>
        {
            Assert.Equal(2 * 7 * 2, l.GetProperty("tensors").GetInt32());
            Assert.Equal(2 * (4 * 2 * 4 * 64 + 2 * (4 * 64 + 96 * 4) + (4 * 96 + 64 * 4)), l.GetProperty("parameters").GetInt64());
            Assert.Equal(2, l.GetProperty("timedSteps").GetInt32());
            Assert.True(l.GetProperty("medianMs").GetProperty("total").GetDouble() > 0);
        });
    }
}
