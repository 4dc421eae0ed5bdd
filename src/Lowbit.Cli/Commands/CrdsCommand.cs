using System.CommandLine;
using Lowbit.Api.Generation;

namespace Lowbit.Cli.Commands;

/// <summary><c>lowbit crds --out DIR [--check]</c>: writes (or checks) the generated CustomResourceDefinitions.</summary>
public static class CrdsCommand
{
    public static Command Create()
    {
        var output = new Option<DirectoryInfo>("--out")
        {
            Description = "Directory that receives lowbit.dev_<plural>.yaml",
            DefaultValueFactory = _ => new DirectoryInfo("crds"),
        };
        var check = new Option<bool>("--check")
        {
            Description = "Write nothing; exit 1 when a file in --out differs from the generated YAML",
        };
        var command = new Command("crds", "Generate the CustomResourceDefinitions from the C# resource types");
        command.Options.Add(output);
        command.Options.Add(check);
        command.SetAction(parseResult =>
        {
            var directory = parseResult.GetValue(output)!;
            return Run(directory, parseResult.GetValue(check), Console.Out, Console.Error);
        });
        return command;
    }

    /// <summary>Writes the CRDs into <paramref name="directory"/>, or with <paramref name="check"/> only compares them.</summary>
    internal static int Run(DirectoryInfo directory, bool check, TextWriter stdout, TextWriter stderr) =>
        check ? Check(directory, stdout, stderr) : Write(directory, stdout);

    private static int Write(DirectoryInfo directory, TextWriter stdout)
    {
        directory.Create();
        foreach (var (fileName, yaml) in CrdGenerator.GenerateFiles())
        {
            var path = Path.Combine(directory.FullName, fileName);
            var changed = !File.Exists(path) || File.ReadAllText(path) != yaml;
            if (changed)
            {
                File.WriteAllText(path, yaml);
            }

            stdout.WriteLine($"{(changed ? "wrote    " : "unchanged")} {Path.GetRelativePath(Environment.CurrentDirectory, path)}");
        }

        return ExitCodes.Ok;
    }

    private static int Check(DirectoryInfo directory, TextWriter stdout, TextWriter stderr)
    {
        var stale = CrdGenerator.GenerateFiles()
            .Where(f => !File.Exists(Path.Combine(directory.FullName, f.FileName)) || File.ReadAllText(Path.Combine(directory.FullName, f.FileName)) != f.Yaml)
            .Select(f => f.FileName)
            .ToList();
        foreach (var fileName in stale)
        {
            stderr.WriteLine($"stale: {Path.Combine(directory.ToString(), fileName)} differs from the generated CRD; run `make crds`");
        }

        if (stale.Count == 0)
        {
            stdout.WriteLine($"crds up to date in {directory}");
        }

        return stale.Count == 0 ? ExitCodes.Ok : ExitCodes.Failure;
    }
}
