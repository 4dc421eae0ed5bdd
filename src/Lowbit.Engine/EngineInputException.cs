namespace Lowbit.Engine;

/// <summary>
/// Input the engine cannot use: a malformed file, an unsupported architecture, a missing file. The CLI maps it to
/// exit code 42 (<see cref="Protocol.EngineExitCodes.BadInput"/>) with the message in the result.
/// </summary>
public sealed class EngineInputException : Exception
{
    public EngineInputException(string message)
        : base(message)
    {
    }

    public EngineInputException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
