namespace Lowbit.Benchmarks;

/// <summary>Entry point for <c>make bench</c>: the first argument names a suite (planner, ...).</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        Console.WriteLine("usage: Lowbit.Benchmarks <suite>");
        return args.Length == 0 ? 2 : 0;
    }
}
