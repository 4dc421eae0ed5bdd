using System.Text.Json;
using Lowbit.Engine.DevTools;
using Lowbit.Engine.Quantization;

namespace Lowbit.Engine.Tests.Quantization;

public class QuantBenchTests
{
    [Fact]
    public void Does_print_one_json_line_per_method_when_benching_a_tiny_shape()
    {
        var stdout = new StringWriter();
        var exit = QuantBench.RunVerb(
            ["bench-quant", "--shape", "tiny", "--layers", "1", "--method", "rtn,hqq,gptq", "--calibration-samples", "2", "--calibration-length", "32"],
            stdout, TextWriter.Null);
        Assert.Equal(0, exit);
        var lines = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["rtn", "hqq", "gptq"], lines.Select(l => l.GetProperty("method").GetString()));
        Assert.All(lines, l =>
        {
            Assert.Equal(4 * 256 * 256 + 3 * 256 * 704, l.GetProperty("parameters").GetInt64());
            Assert.InRange(l.GetProperty("meanRelativeError").GetDouble(), 0.01, 0.2);
        });
    }
}
