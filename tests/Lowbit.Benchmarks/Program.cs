using System.Reflection;

namespace Lowbit.Benchmarks;

/// <summary>
/// Entry point for <c>make bench</c>. Each area adds an <see cref="IBenchmarkSuite"/> in its own
/// folder; <c>all</c> runs every suite. Reports go to <c>bench-results/</c>.
/// </summary>
public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        var suites = Assembly.GetExecutingAssembly().GetTypes()
            .Where(t => typeof(IBenchmarkSuite).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
            .Select(t => (IBenchmarkSuite)Activator.CreateInstance(t)!)
            .OrderBy(s => s.Name, StringComparer.Ordinal)
            .ToList();
        var wanted = args.FirstOrDefault() ?? "all";
        var selected = wanted == "all" ? suites : suites.Where(s => s.Name == wanted).ToList();
        if (selected.Count == 0)
        {
            Console.Error.WriteLine($"unknown suite '{wanted}'; accepted: all, {string.Join(", ", suites.Select(s => s.Name))}");
            return 2;
        }
        var reportDir = Path.GetFullPath(Environment.GetEnvironmentVariable("LOWBIT_BENCH_DIR") ?? "bench-results");
        Directory.CreateDirectory(reportDir);
        var failures = 0;
        foreach (var suite in selected)
        {
            Console.WriteLine($"== bench {suite.Name}");
            try
            {
                await suite.RunAsync(reportDir, args.Skip(1).ToArray());
            }
            catch (Exception ex)
            {
                failures++;
                Console.Error.WriteLine($"bench {suite.Name} failed: {ex}");
            }
        }
        return failures == 0 ? 0 : 1;
    }
}

/// <summary>One benchmark area (planner, apiserver, cluster, operator, engine).</summary>
public interface IBenchmarkSuite
{
    string Name { get; }

    /// <summary>Runs the suite and writes a Markdown report (and any raw data) under <paramref name="reportDir"/>.</summary>
    Task RunAsync(string reportDir, string[] args);
}
