namespace Lowbit.Engine.Protocol;

/// <summary>
/// A command-line argument of an engine verb is missing, unknown or has a value outside the accepted set.
/// The message names the argument and what is accepted; the engine exits with <see cref="EngineExitCodes.BadInput"/>.
/// </summary>
public sealed class ProtocolArgumentException : ArgumentException
{
    public ProtocolArgumentException(string argument, string problem, string accepted)
        : base($"{argument}: {problem}; accepted: {accepted}")
    {
        Argument = argument;
        Accepted = accepted;
    }

    /// <summary>The argument as written on the command line, e.g. <c>--bits</c>, or <c>verb</c>.</summary>
    public string Argument { get; }

    /// <summary>A human description of the accepted values.</summary>
    public string Accepted { get; }
}
