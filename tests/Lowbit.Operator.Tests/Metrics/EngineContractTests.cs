using System.Diagnostics;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Telemetry;

namespace Lowbit.Operator.Tests.Metrics;

/// <summary>The page the serve verb must emit (rendered by the test's engine stub from EngineMetricNames) is what the scraper reads.</summary>
public sealed class EngineContractTests
{
    [Fact]
    public void Does_read_the_lowbit_page_back_into_its_counters()
    {
        var dialect = EngineMetricDialect.For(ServingRuntime.Lowbit);
        var reading = dialect.Read(PrometheusText.Parse(EngineStub.Render(tokens: 12345, ttftSum: 3.25, ttftCount: 13), dialect.Wants), out var error);

        Assert.Null(error);
        Assert.Equal(new EngineReading(12345, new HistogramTotals(3.25, 13)), reading);
        Assert.Equal(0, PrometheusText.Parse(EngineStub.Render(1, 1, 1)).MalformedLines);
    }

    [PromtoolFact]
    public async Task Does_render_a_page_promtool_parses_with_only_the_colon_lint_vllm_also_gets()
    {
        using var promtool = Process.Start(new ProcessStartInfo(PromtoolFactAttribute.Binary!, "check metrics")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        await promtool.StandardInput.WriteAsync(EngineStub.Render(tokens: 500, ttftSum: 1.5, ttftCount: 4));
        promtool.StandardInput.Close();
        var output = await promtool.StandardOutput.ReadToEndAsync() + await promtool.StandardError.ReadToEndAsync();
        await promtool.WaitForExitAsync();

        // Exit 1 is a parse error; 3 is lint findings only. Colons are reserved for recording rules by promlint,
        // and vLLM's names (whose shape the contract keeps) carry them too.
        Assert.True(promtool.ExitCode is 0 or 3, $"promtool exit {promtool.ExitCode}: {output}");
        Assert.All(output.Split('\n', StringSplitOptions.RemoveEmptyEntries), line => Assert.EndsWith("metric names should not contain ':'", line, StringComparison.Ordinal));
    }
}

/// <summary>A fact that needs promtool on PATH; skipped, with the reason, when it is missing.</summary>
public sealed class PromtoolFactAttribute : FactAttribute
{
    public static readonly string? Binary =
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Where(d => d.Length > 0).Select(d => Path.Combine(d, "promtool")).FirstOrDefault(File.Exists);

    public PromtoolFactAttribute()
    {
        if (Binary is null)
        {
            Skip = "the promtool binary is not on PATH (bash .ci/tools.sh installs it)";
        }
    }
}
