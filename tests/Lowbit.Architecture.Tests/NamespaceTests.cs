using System.Text.RegularExpressions;

namespace Lowbit.Architecture.Tests;

/// <summary>
/// A file's namespace says where it is: the project's root namespace plus its folder path
/// (<c>src/Lowbit.Operator/Telemetry/CostMetrics.cs</c> is <c>Lowbit.Operator.Telemetry</c>), in every project under
/// <c>src/</c> and <c>tests/</c>. Only <c>tests/Shared</c> (files linked into every test project) is exempt.
/// </summary>
public sealed partial class NamespaceTests
{
    [Fact]
    public void Does_declare_the_folder_namespace_in_every_source_file()
    {
        var root = RepoRoot();
        var files = 0;
        var wrong = new List<string>();
        foreach (var project in Directory.EnumerateFiles(Path.Combine(root, "src"), "*.csproj", SearchOption.AllDirectories)
                     .Concat(Directory.EnumerateFiles(Path.Combine(root, "tests"), "*.csproj", SearchOption.AllDirectories)))
        {
            var directory = Path.GetDirectoryName(project)!;
            var rootNamespace = RootNamespaceRegex().Match(File.ReadAllText(project)) is { Success: true } m
                ? m.Groups[1].Value
                : Path.GetFileNameWithoutExtension(project);
            foreach (var file in Directory.EnumerateFiles(directory, "*.cs", SearchOption.AllDirectories))
            {
                var relative = Path.GetRelativePath(directory, Path.GetDirectoryName(file)!);
                if (relative.Split(Path.DirectorySeparatorChar)[0] is "bin" or "obj")
                {
                    continue;
                }
                var expected = relative == "." ? rootNamespace : $"{rootNamespace}.{relative.Replace(Path.DirectorySeparatorChar, '.')}";
                var declared = NamespaceRegex().Match(File.ReadAllText(file)) is { Success: true } n ? n.Groups[1].Value : "(none)";
                files++;
                if (declared != expected)
                {
                    wrong.Add($"{Path.GetRelativePath(root, file)}: namespace {declared}, expected {expected}");
                }
            }
        }
        Assert.True(files > 300, $"only {files} files found under {root}: is the repository root right?");
        Assert.True(wrong.Count == 0, $"{wrong.Count} file(s) whose namespace is not their folder:\n{string.Join("\n", wrong)}");
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Operator.sln")))
            {
                return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException($"no Operator.sln above {AppContext.BaseDirectory}");
    }

    [GeneratedRegex(@"<RootNamespace>([^<]+)</RootNamespace>")]
    private static partial Regex RootNamespaceRegex();

    [GeneratedRegex(@"^namespace\s+([A-Za-z0-9_.]+)", RegexOptions.Multiline)]
    private static partial Regex NamespaceRegex();
}
