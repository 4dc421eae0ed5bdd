using Lowbit.Engine.Cli;

namespace Lowbit.Engine;

/// <summary>The <c>lowbit-engine</c> command line: inspect, quantize, eval (finetune and serve come later).</summary>
public static class Program
{
    public static int Main(string[] args) => EngineCli.Run(args, Console.Out, Console.Error, TimeProvider.System);
}
