using k8s;
using k8s.Models;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// Brings the world in line with one object. Called with the cached object (do not mutate it; copy before
/// changing). Must be idempotent: a second call on an unchanged object writes nothing.
/// </summary>
public interface IReconciler<in T>
    where T : class, IKubernetesObject<V1ObjectMeta>
{
    Task<ReconcileResult> ReconcileAsync(T obj, CancellationToken cancellationToken);
}

/// <summary>What a reconcile asks of the controller next (KubeOps's result type, controller-runtime's semantics).</summary>
public abstract record ReconcileResult
{
    private ReconcileResult()
    {
    }

    /// <summary>Converged: forget the key's failures; the next event brings it back.</summary>
    public static ReconcileResult Done { get; } = new Success();

    /// <summary>Converged for now, look again after <paramref name="delay"/> (polling a running Job); failures are forgotten.</summary>
    public static ReconcileResult RequeueAfter(TimeSpan delay) =>
        delay > TimeSpan.Zero ? new Requeue(delay) : throw new ArgumentOutOfRangeException(nameof(delay), delay, "RequeueAfter needs a positive delay");

    /// <summary>A retryable failure: counted as an error, retried with per-key exponential backoff.</summary>
    public static ReconcileResult Failed(string reason, string message) => new Failure(reason, message);

    /// <summary>
    /// A failure retrying cannot fix (invalid spec, unknown GPU type): counted as a terminal error and not retried
    /// until the object's <c>metadata.generation</c> changes.
    /// </summary>
    public static ReconcileResult Terminal(string reason, string message) => new TerminalFailure(reason, message);

    public sealed record Success : ReconcileResult;

    public sealed record Requeue(TimeSpan Delay) : ReconcileResult;

    public sealed record Failure(string Reason, string Message) : ReconcileResult;

    public sealed record TerminalFailure(string Reason, string Message) : ReconcileResult;
}

/// <summary>Thrown from deep inside a reconcile to end it as <see cref="ReconcileResult.Terminal"/>.</summary>
public sealed class TerminalReconcileException : Exception
{
    public TerminalReconcileException()
        : this("TerminalError", "terminal reconcile error")
    {
    }

    public TerminalReconcileException(string message)
        : this("TerminalError", message)
    {
    }

    public TerminalReconcileException(string message, Exception innerException)
        : base(message, innerException)
    {
        Reason = "TerminalError";
    }

    public TerminalReconcileException(string reason, string message)
        : base(message)
    {
        Reason = reason;
    }

    public string Reason { get; }
}
