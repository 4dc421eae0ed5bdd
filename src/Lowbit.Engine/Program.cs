namespace Lowbit.Engine;

/// <summary>The <c>lowbit-engine</c> command line: inspect, quantize, eval (finetune and serve come later).</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("lowbit-engine: no verbs yet");
        return args.Length == 0 ? 2 : 2;
    }
}
