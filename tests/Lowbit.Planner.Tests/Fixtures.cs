namespace Lowbit.Planner.Tests;

/// <summary>Paths under tests/fixtures, found by walking up from the test assembly to the repo root (Operator.sln).</summary>
internal static class Fixtures
{
    public static string Root { get; } = FindRoot();

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, "tests", "fixtures", .. parts]);

    public static string HfConfig(string name) => File.ReadAllText(Path("hf-configs", name));

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(System.IO.Path.Combine(dir.FullName, "Operator.sln")))
        {
            dir = dir.Parent;
        }
        return dir?.FullName ?? throw new InvalidOperationException("repository root (Operator.sln) not found above " + AppContext.BaseDirectory);
    }
}
