using System.CommandLine;

namespace Lowbit.Cli.Commands;

/// <summary><c>lowbit crds</c> (placeholder until its issue lands).</summary>
public static class CrdsCommand
{
    public static Command Create()
    {
        var command = new Command("crds", "not yet implemented");
        command.SetAction(_ =>
        {
            Console.Error.WriteLine("lowbit crds: not yet");
            return ExitCodes.Failure;
        });
        return command;
    }
}
