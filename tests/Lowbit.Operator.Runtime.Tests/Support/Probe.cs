using k8s.Models;

namespace Lowbit.Operator.Runtime.Tests.Support;

/// <summary>What the test reconciler saw (a singleton the scoped reconciler reports to).</summary>
public sealed class Probe
{
    private int _calls;

    public int Calls => Volatile.Read(ref _calls);

    public bool Block { get; set; }

    public bool SawCancellation { get; set; }

    public IReadOnlyList<string> OwnedPods { get; set; } = [];

    public void Called() => Interlocked.Increment(ref _calls);
}

public sealed class ProbeReconciler(Probe probe, IObjectCache cache) : IReconciler<V1ConfigMap>
{
    public async Task<ReconcileResult> ReconcileAsync(V1ConfigMap obj, CancellationToken cancellationToken)
    {
        probe.OwnedPods = cache.ListOwnedBy<V1Pod>(obj).Select(p => p.Metadata.Name).ToList();
        probe.Called();
        if (probe.Block)
        {
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                probe.SawCancellation = true;
                throw;
            }
        }

        return ReconcileResult.Done;
    }
}
