using Lowbit.Api;
using Lowbit.Schema;
using Lowbit.Operator.Status;

namespace Lowbit.Operator.Builders;

/// <summary>
/// Why a spec cannot become a workload, naming the field to fix (e.g. <c>spec.formats</c>). Validators, the
/// planner's input checks and the builders' <c>Check</c> functions return one; a <c>Decide</c> turns it into a
/// Stalled/InvalidSpec outcome. It is a value, never thrown.
/// </summary>
public sealed record SpecError(string Field, string Message)
{
    /// <summary>The first of the validator's errors, the message listing them all; null when there are none.</summary>
    public static SpecError? First(IReadOnlyList<SchemaError> errors)
    {
        ArgumentNullException.ThrowIfNull(errors);
        return errors.Count == 0 ? null : new SpecError(errors[0].Field, string.Join("; ", errors.Select(e => e.ToString())));
    }

    public Outcome ToOutcome() => new Outcome.Stalled(Conditions.Reasons.InvalidSpec, ToString());

    public override string ToString() => $"{Field}: {Message}";
}
