namespace Lowbit.Planner;

/// <summary>
/// Bad input to the planner: an unknown model, format, runtime, a malformed config or catalog. The
/// message names the field and, where the set is closed, lists the accepted values.
/// </summary>
public sealed class PlanInputException : Exception
{
    public PlanInputException(string field, string message, IReadOnlyList<string>? accepted = null)
        : base(Compose(field, message, accepted))
    {
        Field = field;
        Accepted = accepted ?? [];
    }

    public PlanInputException()
        : this("input", "invalid planner input")
    {
    }

    public PlanInputException(string message)
        : this("input", message)
    {
    }

    public PlanInputException(string message, Exception innerException)
        : base(message, innerException)
    {
        Field = "input";
        Accepted = [];
    }

    /// <summary>The field or argument at fault, e.g. <c>weights</c> or <c>config.json: hidden_size</c>.</summary>
    public string Field { get; }

    /// <summary>The accepted values, when the set is closed (empty otherwise).</summary>
    public IReadOnlyList<string> Accepted { get; }

    private static string Compose(string field, string message, IReadOnlyList<string>? accepted) =>
        accepted is { Count: > 0 }
            ? $"{field}: {message}; accepted: {string.Join(", ", accepted)}"
            : $"{field}: {message}";
}
