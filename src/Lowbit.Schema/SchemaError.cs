namespace Lowbit.Schema;

/// <summary>
/// One validation failure, shaped like a Kubernetes <c>StatusCause</c>: <paramref name="Field"/> is the full
/// field path (<c>spec.bits</c>, <c>spec.adapters[0].name</c>), <paramref name="Reason"/> the cause type
/// (<see cref="SchemaErrorReasons"/>), <paramref name="Message"/> a human-readable explanation.
/// </summary>
public sealed record SchemaError(string Field, string Reason, string Message)
{
    /// <summary>The error as the API server prints it: <c>spec.bits: Invalid value: 9: should be less than or equal to 8</c>.</summary>
    public override string ToString() => Field.Length == 0 ? Message : $"{Field}: {Message}";
}

/// <summary>Kubernetes <c>CauseType</c> values used in <see cref="SchemaError.Reason"/>.</summary>
public static class SchemaErrorReasons
{
    public const string Required = "FieldValueRequired";
    public const string Invalid = "FieldValueInvalid";
    public const string NotSupported = "FieldValueNotSupported";
    public const string TypeInvalid = "FieldValueTypeInvalid";
    public const string TooLong = "FieldValueTooLong";
    public const string TooMany = "FieldValueTooMany";
    public const string Forbidden = "FieldValueForbidden";
    public const string Duplicate = "FieldValueDuplicate";
}
