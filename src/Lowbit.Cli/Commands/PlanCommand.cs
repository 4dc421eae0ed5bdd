using System.CommandLine;

namespace Lowbit.Cli.Commands;

/// <summary><c>lowbit plan</c> (placeholder until its issue lands).</summary>
public static class PlanCommand
{
    public static Command Create()
    {
        var command = new Command("plan", "not yet implemented");
        command.SetAction(_ =>
        {
            Console.Error.WriteLine("lowbit plan: not yet");
            return ExitCodes.Failure;
        });
        return command;
    }
}
