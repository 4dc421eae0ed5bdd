using System.CommandLine;

namespace Lowbit.Cli;

/// <summary>The <c>lowbit</c> command line: plan, crds, local.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("Lowbit: quantize, fine-tune and serve LLMs on the cheapest GPU that fits.");
        return root.Parse(args).Invoke();
    }
}
