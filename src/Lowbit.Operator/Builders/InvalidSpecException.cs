namespace Lowbit.Operator.Builders;

/// <summary>The spec cannot be turned into a workload; <see cref="Field"/> names the offending field (e.g. <c>spec.formats</c>).</summary>
public sealed class InvalidSpecException : Exception
{
    public InvalidSpecException()
        : this("spec", "invalid spec")
    {
    }

    public InvalidSpecException(string message)
        : this("spec", message)
    {
    }

    public InvalidSpecException(string message, Exception innerException)
        : base(message, innerException)
    {
        Field = "spec";
    }

    public InvalidSpecException(string field, string message)
        : base($"{field}: {message}")
    {
        Field = field;
    }

    public string Field { get; }
}
