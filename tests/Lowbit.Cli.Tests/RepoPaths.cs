namespace Lowbit.Cli.Tests;

/// <summary>Where the end-to-end tests find the repository and the engine this test assembly's build made.</summary>
internal static class RepoPaths
{
    /// <summary>The folder holding Operator.sln, above this test assembly.</summary>
    public static string Root()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Operator.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("Operator.sln not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Release or Debug: the configuration this test assembly was built in (…/bin/&lt;configuration&gt;/net10.0/).</summary>
    public static string Configuration() => new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;

    /// <summary>The lowbit-engine the solution build wrote (src/Lowbit.Engine/bin/&lt;configuration&gt;/net10.0/).</summary>
    public static string Engine(string root) => Path.Combine(root, "src", "Lowbit.Engine", "bin", Configuration(), "net10.0", "lowbit-engine");
}
