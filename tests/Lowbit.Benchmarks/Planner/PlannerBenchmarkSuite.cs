using System.Globalization;
using System.Text;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Lowbit.Planner;

namespace Lowbit.Benchmarks.Planner;

/// <summary>
/// <c>make bench</c> suite "planner": BenchmarkDotNet (short in-process job, well under a minute) on a full
/// placement; writes planner.md with the mean per call against the 1 ms target.
/// </summary>
public sealed class PlannerBenchmarkSuite : IBenchmarkSuite
{
    public const double TargetMicroseconds = 1000;

    public string Name => "planner";

    public Task RunAsync(string reportDir, string[] args)
    {
        var config = ManualConfig.CreateEmpty()
            .AddJob(Job.ShortRun.WithToolchain(InProcessEmitToolchain.Instance).WithId("short-inprocess"))
            .AddDiagnoser(MemoryDiagnoser.Default)
            .AddColumnProvider(DefaultColumnProviders.Instance)
            .AddLogger(ConsoleLogger.Default)
            .WithArtifactsPath(Path.Combine(reportDir, "planner-artifacts"))
            .WithOptions(ConfigOptions.DisableOptimizationsValidator);
        var summary = BenchmarkRunner.Run<PlannerBenchmarks>(config);

        var report = new StringBuilder();
        report.AppendLine("# Planner benchmark");
        report.AppendLine();
        report.AppendLine(CultureInfo.InvariantCulture, $"BenchmarkDotNet {summary.HostEnvironmentInfo.BenchmarkDotNetVersion}, job ShortRun in-process (3 warm-ups, 3 iterations), {summary.HostEnvironmentInfo.RuntimeVersion}, {Environment.ProcessorCount} logical CPUs.");
        report.AppendLine(CultureInfo.InvariantCulture, $"Default catalog: {GpuCatalog.Default.NodeTypes.Count} node types. Target: under {TargetMicroseconds:0} µs per full placement.");
        report.AppendLine();
        report.AppendLine("| benchmark | mean | stddev | allocated/op | under 1 ms |");
        report.AppendLine("|---|---:|---:|---:|---|");
        var failures = 0;
        foreach (var benchmark in summary.Reports)
        {
            var name = benchmark.BenchmarkCase.Descriptor.WorkloadMethodDisplayInfo;
            if (benchmark.ResultStatistics is not { } stats)
            {
                report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | failed | | | no |");
                failures++;
                continue;
            }
            var meanUs = stats.Mean / 1000;
            var allocated = benchmark.GcStats.GetBytesAllocatedPerOperation(benchmark.BenchmarkCase) ?? 0;
            var ok = meanUs < TargetMicroseconds;
            failures += ok ? 0 : 1;
            report.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {meanUs:0.0} µs | {stats.StandardDeviation / 1000:0.0} µs | {allocated / 1024.0:0.0} KiB | {(ok ? "yes" : "NO")} |");
        }
        var path = Path.Combine(reportDir, "planner.md");
        File.WriteAllText(path, report.ToString());
        Console.WriteLine(report.ToString());
        Console.WriteLine($"planner report: {path}");
        if (failures > 0 || summary.Reports.Length == 0)
        {
            throw new InvalidOperationException($"planner benchmark: {failures} case(s) failed or missed the {TargetMicroseconds:0} µs target");
        }
        return Task.CompletedTask;
    }
}
