using System.CommandLine;

namespace Lowbit.Cli.Commands;

/// <summary><c>lowbit local</c> (placeholder until its issue lands).</summary>
public static class LocalCommand
{
    public static Command Create()
    {
        var command = new Command("local", "not yet implemented");
        command.SetAction(_ =>
        {
            Console.Error.WriteLine("lowbit local: not yet");
            return ExitCodes.Failure;
        });
        return command;
    }
}
