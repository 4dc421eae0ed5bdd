using System.Text.Json;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Protocol;

namespace Lowbit.Engine.Tests;

public class EngineCliTests
{
    private static (int Exit, EngineResult Result, string Stdout, string Stderr) Run(params string[] args)
    {
        using var dir = new TempDir();
        var resultFile = dir.File("result.json");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var exit = EngineCli.Run([.. args, "--result-file", resultFile], stdout, stderr, TimeProvider.System);
        var json = File.ReadAllText(resultFile);
        return (exit, EngineResult.Parse(json)!, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void Does_report_architecture_parameters_and_size_when_inspecting_the_fixture()
    {
        var (exit, result, _, stderr) = Run("inspect", "--model", TokenizerTests.FixtureDirectory);

        Assert.Equal(EngineExitCodes.Ok, exit);
        Assert.True(result.Ok);
        Assert.Equal("LlamaForCausalLM", result.Info!["architecture"]);
        Assert.Equal("F16", result.Info["dtype"]);
        Assert.Equal(3_281_152, result.Metrics!["parameters"]);
        Assert.Equal(39, result.Metrics["tensors"]);
        Assert.Equal(6_562_304, result.Metrics["bytes"]);
        Assert.Contains("3,281,152 parameters", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_measure_a_low_perplexity_on_held_out_text_when_evaluating_the_fixture()
    {
        var text = Path.Combine(TokenizerTests.FixtureDirectory, "eval.txt");

        var (exit, result, stdout, _) = Run("eval", "--model", TokenizerTests.FixtureDirectory, "--text", text, "--context", "256", "--stride", "256", "--max-tokens", "1025", "--device", "cpu");

        Assert.Equal(EngineExitCodes.Ok, exit);
        Assert.InRange(result.Metrics!["perplexity"], 1.5, 4.5);
        Assert.Equal(4 * 255, result.Metrics["tokensScored"]);
        Assert.True(result.Metrics["tokensPerSecond"] > 0);
        var events = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(EngineEvent.TryParse).OfType<ProgressEvent>().ToList();
        Assert.Equal(5, events.Count);
        Assert.All(events, e => Assert.Equal("eval", e.Stage));
        Assert.Equal(events[^1].Layers, events[^1].Layer);
    }

    [Theory]
    [InlineData(new[] { "eval", "--model", "/nonexistent/model", "--text", "/etc/hostname" }, "--model")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "awq", "--bits", "4", "--out", "o" }, "--method")]
    [InlineData(new[] { "frobnicate" }, "verb")]
    [InlineData(new[] { "serve", "--model", "m", "--max-num-batched-tokens", "0" }, "--max-num-batched-tokens")]
    public void Does_exit_with_bad_input_and_name_the_argument(string[] args, string argument)
    {
        var (exit, result, _, stderr) = Run(args);

        Assert.Equal(EngineExitCodes.BadInput, exit);
        Assert.False(result.Ok);
        Assert.Equal(ErrorReasons.BadInput, result.Error!.Reason);
        Assert.Contains(argument, result.Error.Message, StringComparison.Ordinal);
        Assert.Contains("BadInput", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_write_a_result_within_4096_bytes_that_the_operator_parses()
    {
        using var dir = new TempDir();
        var resultFile = dir.File("r.json");

        EngineCli.Run(["inspect", "--model", TokenizerTests.FixtureDirectory, "--result-file", resultFile], TextWriter.Null, TextWriter.Null, TimeProvider.System);

        var bytes = File.ReadAllBytes(resultFile);
        Assert.InRange(bytes.Length, 10, EngineResult.MaxBytes);
        using var doc = JsonDocument.Parse(bytes);
        Assert.Equal("inspect", doc.RootElement.GetProperty("verb").GetString());
    }
}
