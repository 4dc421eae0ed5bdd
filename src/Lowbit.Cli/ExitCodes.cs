namespace Lowbit.Cli;

/// <summary>Process exit codes of the <c>lowbit</c> command.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>A runtime failure (I/O, server error).</summary>
    public const int Failure = 1;
    /// <summary>Bad input: unknown model, format or option; the message lists accepted values.</summary>
    public const int BadInput = 2;
    /// <summary>The request is valid but nothing fits (no feasible placement).</summary>
    public const int NoFit = 3;
}
