using System.CommandLine;
using Lowbit.Cli.Commands;

namespace Lowbit.Cli;

/// <summary>The <c>lowbit</c> command line: plan, crds, local.</summary>
public static class Program
{
    public static int Main(string[] args) => BuildRoot().Parse(args).Invoke();

    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("Lowbit: quantize, fine-tune and serve LLMs on the cheapest GPU that fits.");
        root.Subcommands.Add(PlanCommand.Create());
        root.Subcommands.Add(CrdsCommand.Create());
        root.Subcommands.Add(LocalCommand.Create());
        return root;
    }
}
