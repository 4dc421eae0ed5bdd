using Lowbit.Cli.Commands;

namespace Lowbit.Cli.Tests;

public sealed class CrdsCommandTests : IDisposable
{
    private readonly DirectoryInfo _directory = Directory.CreateTempSubdirectory("lowbit-crds-");
    private readonly StringWriter _stdout = new();
    private readonly StringWriter _stderr = new();

    public void Dispose()
    {
        _directory.Delete(recursive: true);
        _stdout.Dispose();
        _stderr.Dispose();
    }

    private int Run(bool check) => CrdsCommand.Run(_directory, check, _stdout, _stderr);

    [Fact]
    public void Does_write_one_file_per_kind_and_pass_check_afterwards()
    {
        Assert.Equal(ExitCodes.Failure, Run(check: true));
        Assert.Equal(ExitCodes.Ok, Run(check: false));
        Assert.Equal(
            ["lowbit.dev_finetunejobs.yaml", "lowbit.dev_inferenceendpoints.yaml", "lowbit.dev_quantizedmodels.yaml"],
            _directory.GetFiles().Select(f => f.Name).Order(StringComparer.Ordinal));
        Assert.Equal(ExitCodes.Ok, Run(check: true));
    }

    [Fact]
    public void Does_fail_check_naming_the_file_when_it_was_edited_by_hand()
    {
        Assert.Equal(ExitCodes.Ok, Run(check: false));
        File.AppendAllText(Path.Combine(_directory.FullName, "lowbit.dev_quantizedmodels.yaml"), "# edited\n");
        Assert.Equal(ExitCodes.Failure, Run(check: true));
        Assert.Contains("lowbit.dev_quantizedmodels.yaml differs from the generated CRD; run `make crds`", _stderr.ToString(), StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Ok, Run(check: false));
        Assert.Equal(ExitCodes.Ok, Run(check: true));
    }

    [Fact]
    public void Does_parse_the_command_line_options()
    {
        var result = Program.BuildRoot().Parse(["crds", "--out", _directory.FullName, "--check"]);
        Assert.Empty(result.Errors);
        Assert.Equal("crds", result.CommandResult.Command.Name);
    }
}
