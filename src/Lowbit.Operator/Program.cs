namespace Lowbit.Operator;

/// <summary>The <c>lowbit-operator</c> process.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("lowbit-operator: not yet implemented");
        return args.Length == 0 ? 1 : 1;
    }
}
