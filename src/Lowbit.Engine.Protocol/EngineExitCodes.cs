namespace Lowbit.Engine.Protocol;

/// <summary>
/// Process exit codes of <c>lowbit-engine</c>. The operator's Job <c>podFailurePolicy</c> fails the Job at once
/// (action FailJob, no retry) on <see cref="BadInput"/>, <see cref="OutOfMemory"/> and 137 (SIGKILL, the kernel's
/// OOM killer); every other non-zero code is retried within the Job's backoff limit.
/// </summary>
public static class EngineExitCodes
{
    /// <summary>The verb finished and wrote its result.</summary>
    public const int Ok = 0;

    /// <summary>A runtime failure (I/O, a download, a numerical error); retrying may help.</summary>
    public const int Failure = 1;

    /// <summary>Bad input: an argument, a missing file, an unsupported architecture, a bits/format mismatch.</summary>
    public const int BadInput = 42;

    /// <summary>The engine ran out of host or device memory (a CUDA or allocator out-of-memory error).</summary>
    public const int OutOfMemory = 43;

    /// <summary>Stopped by SIGTERM after writing a checkpoint (128 + 15, what a shell reports for SIGTERM).</summary>
    public const int Interrupted = 143;

    /// <summary>The container was killed by SIGKILL, in practice the kernel OOM killer (128 + 9).</summary>
    public const int Killed = 137;

    /// <summary>The exit codes on which the operator fails the Job without retrying.</summary>
    public static IReadOnlyList<int> FailFast { get; } = [BadInput, OutOfMemory, Killed];
}
