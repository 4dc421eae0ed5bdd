namespace Lowbit.Engine.Decoding;

/// <summary>
/// One captured CUDA graph (libtorch's <c>at::cuda::CUDAGraph</c> through <see cref="NativeKernels"/>): the work
/// queued by <see cref="Capture"/>'s action, on a side stream from libtorch's pool, recorded once and replayed on the
/// current stream. Tensors the action allocates come from the graph's private memory pool, so a replay allocates nothing.
/// </summary>
public sealed class CudaGraph : IStepGraph
{
    private IntPtr _handle;

    public CudaGraph()
    {
        _handle = NativeKernels.GraphCreate();
    }

    /// <summary>Runs <paramref name="warmUp"/> eagerly on the capture stream (lazy handles and workspaces), then records <paramref name="step"/>.</summary>
    public void Capture(Action warmUp, Action step) => Capture(warmUp, step, default);

    /// <summary>
    /// As <see cref="Capture(Action, Action)"/>, allocating from <paramref name="pool"/>, the memory pool of graphs
    /// captured earlier on this device (default: a new private pool). Returns the pool this graph allocated from, for
    /// the next capture to share. Only for steps that leave nothing they allocate alive and never run concurrently.
    /// </summary>
    public GraphPool Capture(Action warmUp, Action step, GraphPool pool)
    {
        NativeKernels.GraphEnter(_handle);
        try
        {
            warmUp();
        }
        finally
        {
            NativeKernels.GraphLeave(_handle);
        }
        // Tensors the finalizer thread would free during the capture are freed now instead.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        NativeKernels.CaptureBegin(_handle, pool);
        try
        {
            step();
        }
        finally
        {
            NativeKernels.CaptureEnd(_handle);
        }
        return NativeKernels.PoolOf(_handle);
    }

    public void Replay() => NativeKernels.Replay(_handle);

    public void Dispose()
    {
        if (_handle != IntPtr.Zero)
        {
            NativeKernels.GraphDestroy(_handle);
            _handle = IntPtr.Zero;
        }
    }
}

/// <summary>A CUDA caching-allocator pool id (libtorch's <c>MempoolId_t</c>); default: none yet, capture into a new private pool.</summary>
public readonly record struct GraphPool(ulong First, ulong Second);

/// <summary>What a captured step is recorded with (the fine-tuner's <see cref="Training.TrainingGraph"/>): a CUDA graph, or in tests a recorder that re-runs it.</summary>
internal interface IStepGraph : IDisposable
{
    /// <summary>Runs <paramref name="warmUp"/>, then records <paramref name="step"/> without running it.</summary>
    void Capture(Action warmUp, Action step);

    /// <summary>Runs the recorded step.</summary>
    void Replay();
}
