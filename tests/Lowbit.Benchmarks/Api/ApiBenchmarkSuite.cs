using System.Diagnostics;
using System.Globalization;
using System.Text;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Lowbit.Api.Generation;

namespace Lowbit.Benchmarks.Api;

/// <summary>
/// <c>make bench</c> suite "api": BenchmarkDotNet (short in-process job) on admission of one FineTuneJob, plus the
/// wall time of generating the three CRDs; writes api.md.
/// </summary>
public sealed class ApiBenchmarkSuite : IBenchmarkSuite
{
    public string Name => "api";

    public Task RunAsync(string reportDir, string[] args)
    {
        var config = ManualConfig.CreateEmpty()
            .AddJob(Job.ShortRun.WithToolchain(InProcessEmitToolchain.Instance).WithId("short-inprocess"))
            .AddDiagnoser(MemoryDiagnoser.Default)
            .AddColumnProvider(DefaultColumnProviders.Instance)
            .AddLogger(ConsoleLogger.Default)
            .WithArtifactsPath(Path.Combine(reportDir, "api-artifacts"))
            .WithOptions(ConfigOptions.DisableOptimizationsValidator);
        var summary = BenchmarkRunner.Run<ApiBenchmarks>(config);

        CrdGenerator.GenerateFiles();
        var stopwatch = Stopwatch.StartNew();
        var files = CrdGenerator.GenerateFiles();
        stopwatch.Stop();

        var report = new StringBuilder();
        report.AppendLine("# API benchmark (admission of one FineTuneJob)");
        report.AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture, $"BenchmarkDotNet {summary.HostEnvironmentInfo.BenchmarkDotNetVersion}, job ShortRun in-process, {summary.HostEnvironmentInfo.RuntimeVersion}, {Environment.ProcessorCount} logical CPUs.");
        report.AppendLine();
        report.AppendLine("| benchmark | mean | stddev | allocated/op |");
        report.AppendLine("|---|---:|---:|---:|");
        foreach (var benchmark in summary.Reports)
        {
            var name = benchmark.BenchmarkCase.Descriptor.WorkloadMethodDisplayInfo;
            if (benchmark.ResultStatistics is not { } stats)
            {
                report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | failed | | |");
                continue;
            }

            var allocated = benchmark.GcStats.GetBytesAllocatedPerOperation(benchmark.BenchmarkCase) ?? 0;
            report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {stats.Mean / 1000:0.0} µs | {stats.StandardDeviation / 1000:0.0} µs | {allocated / 1024.0:0.0} KiB |");
        }

        report.AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture, $"Generating the {files.Count} CRDs (warm, one run): {stopwatch.Elapsed.TotalMilliseconds:0.0} ms, {files.Sum(f => f.Yaml.Length) / 1024.0:0} KiB of YAML.");
        var path = Path.Combine(reportDir, "api.md");
        File.WriteAllText(path, report.ToString());
        Console.WriteLine(report.ToString());
        Console.WriteLine($"api report: {path}");
        if (summary.Reports.Length == 0 || summary.Reports.Any(r => r.ResultStatistics is null))
        {
            throw new InvalidOperationException("api benchmark: a case failed");
        }

        return Task.CompletedTask;
    }
}
