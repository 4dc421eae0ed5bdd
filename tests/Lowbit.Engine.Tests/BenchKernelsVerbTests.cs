using System.Text.Json;
using Lowbit.Engine.DevTools;
using Lowbit.Engine.Protocol;

namespace Lowbit.Engine.Tests;

public class BenchKernelsVerbTests
{
    [Fact]
    public void Does_print_one_line_per_kernel_shape_and_rows_with_time_and_bandwidth()
    {
        var stdout = new StringWriter();

        var exit = BenchKernelsVerb.Run(["bench-kernels", "--device", "cpu", "--rows", "1,3", "--iterations", "1"], stdout, TextWriter.Null);

        Assert.Equal(0, exit);
        var lines = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var header = lines[0];
        Assert.Equal("bench-kernels", header.GetProperty("event").GetString());
        Assert.Equal("stopwatch", header.GetProperty("timing").GetString());
        // The fused variants the decode step runs (q/k/v, o, gate/up, down; none for lm_head): on the CPU no int4 kernel has
        // one, so each role's line names that instead of a time.
        var fused = lines.Where(l => l.GetProperty("event").GetString() == "bench-kernel-fused").ToList();
        Assert.Equal(4 * 2 * 2, fused.Count);
        Assert.All(fused, l => Assert.Equal("no fused variant for these rows", l.GetProperty("error").GetString()));
        Assert.Equal(["down:None:True", "gate_up:RmsNorm:False", "gate_up:RmsNormSiluMul:False", "o:None:True", "qkv:RmsNorm:False"],
            fused.Select(l => $"{l.GetProperty("shape").GetString()}:{l.GetProperty("prologue").GetString()}:{l.GetProperty("residual").GetBoolean()}").Distinct().Order());
        Assert.Equal("RmsNormSiluMul", fused.Single(l => l.GetProperty("shape").GetString() == "gate_up" && l.GetProperty("rows").GetInt32() == 1 && l.GetProperty("group").GetInt32() == 64).GetProperty("prologue").GetString());
        var kernels = lines.Skip(1).Where(l => l.GetProperty("event").GetString() != "bench-kernel-fused").ToList();
        Assert.All(kernels, l =>
        {
            Assert.Equal("bench-kernel", l.GetProperty("event").GetString());
            Assert.True(l.GetProperty("microseconds").GetDouble() > 0);
            Assert.True(l.GetProperty("gbPerSecond").GetDouble() >= 0);
        });
        var gemvs = kernels.Where(l => l.TryGetProperty("shape", out _)).ToList();
        // Without CUDA each shape offers its eager reference only: linear (dense) and dequantize + linear per group.
        Assert.Equal(5 * 2 * 3, gemvs.Count);
        foreach (var line in gemvs)
        {
            long n = line.GetProperty("n").GetInt64(), k = line.GetProperty("k").GetInt64();
            var group = line.GetProperty("group").GetInt32();
            var expected = line.GetProperty("kernel").GetString() switch
            {
                "linear" => n * k * 2,
                "int4-dequant" => n * k / 2 + 4 * n * (k / group),
                var other => throw new InvalidOperationException($"unexpected kernel {other} on CPU"),
            };
            Assert.Equal(expected, line.GetProperty("weightBytes").GetInt64());
            Assert.Equal(0, line.GetProperty("relativeError").GetDouble());
        }
        Assert.Equal(["down", "gate_up", "lm_head", "o", "qkv"], gemvs.Select(l => l.GetProperty("shape").GetString()).Distinct().Order());
        Assert.Equal([1, 3], gemvs.Select(l => l.GetProperty("rows").GetInt32()).Distinct().Order());
        var parts = kernels.Where(l => !l.TryGetProperty("shape", out _)).Select(l => $"{l.GetProperty("kernel").GetString()}:{l.GetProperty("rows").GetInt32()}").ToList();
        Assert.Equal(["attention-sdpa:1", "rmsnorm-eager:1", "rope-eager:1", "silu-mul-eager:1", "attention-sdpa:3", "rmsnorm-eager:3", "rope-eager:3", "silu-mul-eager:3", "copy:1"], parts);
    }

    [Fact]
    public void Does_name_the_argument_when_rows_are_not_positive()
    {
        var error = Assert.Throws<ProtocolArgumentException>(() => BenchKernelsVerb.Run(["bench-kernels", "--device", "cpu", "--rows", "1,0"], TextWriter.Null, TextWriter.Null));

        Assert.Equal("--rows", error.Argument);
    }
}
