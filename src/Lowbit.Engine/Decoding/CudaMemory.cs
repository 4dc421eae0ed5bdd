using System.Globalization;
using System.Runtime.InteropServices;

namespace Lowbit.Engine.Decoding;

/// <summary>What c10's CUDA caching allocator holds (bytes): live tensors and the reserve it keeps, now and at peak.</summary>
public readonly record struct AllocatorStats(long Allocated, long PeakAllocated, long Reserved, long PeakReserved)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"allocated {Allocated / (double)(1L << 30):F2} GiB (peak {PeakAllocated / (double)(1L << 30):F2}), reserved {Reserved / (double)(1L << 30):F2} GiB (peak {PeakReserved / (double)(1L << 30):F2})");
}

/// <summary>
/// The optional <c>liblowbit_memory.so</c> next to the native decode library (src/Lowbit.Engine/native/lowbit_memory.cpp):
/// the caching allocator's statistics and <c>emptyCache</c>, which TorchSharp 0.107 does not expose. Without it (no
/// CUDA, no native build, or c10 changed its API) both calls answer null/false and serve reports device-used memory only.
/// </summary>
public static unsafe class CudaMemory
{
    private static readonly Lock Gate = new();
    private static bool _tried;
    private static delegate* unmanaged<int, long*, int> _stats;
    private static delegate* unmanaged<int> _emptyCache;
    private static delegate* unmanaged<int, int> _resetPeak;

    /// <summary>The allocator's statistics for CUDA device <paramref name="device"/>, or null when the library is absent.</summary>
    public static AllocatorStats? Stats(int device)
    {
        EnsureLoaded();
        if (_stats == null)
        {
            return null;
        }
        var values = stackalloc long[4];
        return _stats(device, values) == 0 ? new AllocatorStats(values[0], values[1], values[2], values[3]) : null;
    }

    /// <summary>
    /// Returns the allocator's unused cached blocks to the driver. Serve calls it after building the fused decode weights,
    /// whose pre-fusion copies would otherwise stay reserved (docs/planner.md). False when the library is absent.
    /// </summary>
    public static bool EmptyCache()
    {
        EnsureLoaded();
        return _emptyCache != null && _emptyCache() == 0;
    }

    /// <summary>
    /// Starts the peak statistics of device <paramref name="device"/> afresh (<c>torch.cuda.reset_peak_memory_stats</c>):
    /// serve's per-phase warm-up report (<c>LOWBIT_WARMUP_MEMORY=1</c>). False when the library (or this export) is absent.
    /// </summary>
    public static bool ResetPeak(int device)
    {
        EnsureLoaded();
        return _resetPeak != null && _resetPeak(device) == 0;
    }

    private static void EnsureLoaded()
    {
        lock (Gate)
        {
            if (_tried)
            {
                return;
            }
            _tried = true;
            var native = Environment.GetEnvironmentVariable(NativeKernels.LibraryEnv);
            if (string.IsNullOrEmpty(native) || Path.GetDirectoryName(native) is not { } folder
                || !NativeLibrary.TryLoad(Path.Combine(folder, "liblowbit_memory.so"), out var handle))
            {
                return;
            }
            if (NativeLibrary.TryGetExport(handle, "lowbit_memory_stats", out var stats) && NativeLibrary.TryGetExport(handle, "lowbit_empty_cache", out var empty))
            {
                _stats = (delegate* unmanaged<int, long*, int>)stats;
                _emptyCache = (delegate* unmanaged<int>)empty;
            }
            if (NativeLibrary.TryGetExport(handle, "lowbit_reset_peak", out var reset))
            {
                _resetPeak = (delegate* unmanaged<int, int>)reset;
            }
        }
    }
}
