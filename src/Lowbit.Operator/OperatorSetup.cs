using Lowbit.Operator.Runtime;

namespace Lowbit.Operator;

/// <summary>The controllers <c>lowbit-operator</c> runs (shared by Program and <c>lowbit local up</c>).</summary>
public static class OperatorSetup
{
    public static void Configure(OperatorBuilder op)
    {
        ArgumentNullException.ThrowIfNull(op);

        // The QuantizedModel, FineTuneJob and InferenceEndpoint controllers are registered here once they exist.
    }
}
