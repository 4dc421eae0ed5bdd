using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Lowbit.Engine.Decoding;

/// <summary>
/// The optional native library <c>liblowbit_native.so</c> (src/Lowbit.Engine/native): CUDA graph capture and replay
/// over libtorch's <c>at::cuda::CUDAGraph</c>, and the decode kernels (fused RMSNorm, RoPE, SiLU·mul, GEMV, int4
/// dequantize-GEMV). The GPU bundle's <c>run.sh</c> builds it on first use and points <c>LOWBIT_NATIVE_LIB</c> at it.
/// Tensors cross as TorchSharp handles (<see cref="Tensor.Handle"/> is a pointer to a heap <c>at::Tensor</c>).
/// Without the library the engine decodes eagerly and says so once.
/// </summary>
public static unsafe class NativeKernels
{
    /// <summary>The environment variable naming the built library.</summary>
    public const string LibraryEnv = "LOWBIT_NATIVE_LIB";

    private static readonly Lock Gate = new();
    private static bool _tried;
    private static string _status = "not loaded";
    private static delegate* unmanaged<IntPtr> _lastError;
    private static delegate* unmanaged<IntPtr*, int> _graphCreate;
    private static delegate* unmanaged<IntPtr, int> _graphDestroy;
    private static delegate* unmanaged<IntPtr, int> _graphEnter;
    private static delegate* unmanaged<IntPtr, int> _graphLeave;
    private static delegate* unmanaged<IntPtr, ulong, ulong, int> _captureBeginPool;
    private static delegate* unmanaged<IntPtr, ulong*, ulong*, int> _graphPool;
    private static delegate* unmanaged<IntPtr, int> _captureEnd;
    private static delegate* unmanaged<IntPtr, int> _replay;
    private static delegate* unmanaged<int, int> _setDevice;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, double, IntPtr, IntPtr, int> _rmsNorm;
    private static delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, IntPtr, int> _rope;
    private static delegate* unmanaged<IntPtr, IntPtr, int> _siluMul;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, int> _gemv;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, int, IntPtr, int> _int4;

    /// <summary>True when the library is loaded (it needs CUDA to do anything).</summary>
    public static bool Available
    {
        get
        {
            EnsureLoaded();
            return _lastError != null;
        }
    }

    /// <summary>Why the library is or is not in use (for logs and benchmark output).</summary>
    public static string Status
    {
        get
        {
            EnsureLoaded();
            return _status;
        }
    }

    /// <summary>Writes, once per process, that decoding runs eagerly because the library is missing.</summary>
    public static void ReportOnce(TextWriter stderr)
    {
        lock (Gate)
        {
            if (_reported || Available)
            {
                return;
            }
            _reported = true;
        }
        stderr.WriteLine($"lowbit-engine: native decode library unavailable ({_status}); decoding eagerly, without CUDA graphs or fused kernels");
    }

    private static bool _reported;

    private static void EnsureLoaded()
    {
        lock (Gate)
        {
            if (_tried)
            {
                return;
            }
            _tried = true;
            var path = Environment.GetEnvironmentVariable(LibraryEnv);
            if (string.IsNullOrEmpty(path))
            {
                _status = $"{LibraryEnv} is not set";
                return;
            }
            if (!NativeLibrary.TryLoad(path, out var handle))
            {
                _status = $"cannot load {path}";
                return;
            }
            try
            {
                nint Export(string name) => NativeLibrary.GetExport(handle, name);
                _graphCreate = (delegate* unmanaged<IntPtr*, int>)Export("lowbit_graph_create");
                _graphDestroy = (delegate* unmanaged<IntPtr, int>)Export("lowbit_graph_destroy");
                _graphEnter = (delegate* unmanaged<IntPtr, int>)Export("lowbit_graph_enter");
                _graphLeave = (delegate* unmanaged<IntPtr, int>)Export("lowbit_graph_leave");
                _captureBeginPool = (delegate* unmanaged<IntPtr, ulong, ulong, int>)Export("lowbit_graph_capture_begin_pool");
                _graphPool = (delegate* unmanaged<IntPtr, ulong*, ulong*, int>)Export("lowbit_graph_pool");
                _captureEnd = (delegate* unmanaged<IntPtr, int>)Export("lowbit_graph_capture_end");
                _replay = (delegate* unmanaged<IntPtr, int>)Export("lowbit_graph_replay");
                _setDevice = (delegate* unmanaged<int, int>)Export("lowbit_set_device");
                _rmsNorm = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, double, IntPtr, IntPtr, int>)Export("lowbit_rmsnorm");
                _rope = (delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, IntPtr, int>)Export("lowbit_rope");
                _siluMul = (delegate* unmanaged<IntPtr, IntPtr, int>)Export("lowbit_silu_mul");
                _gemv = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, int>)Export("lowbit_gemv");
                _int4 = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, int, IntPtr, int>)Export("lowbit_int4_linear");
                _lastError = (delegate* unmanaged<IntPtr>)Export("lowbit_last_error");
                _status = $"loaded {path}";
            }
            catch (EntryPointNotFoundException e)
            {
                _lastError = null;
                _status = $"{path} lacks an export ({e.Message})";
            }
        }
    }

    private static void Check(int rc, string what)
    {
        if (rc != 0)
        {
            var message = Marshal.PtrToStringUTF8(_lastError()) ?? "unknown";
            throw new InvalidOperationException($"native {what} failed: {message}");
        }
    }

    private static void Require()
    {
        if (!Available)
        {
            throw new InvalidOperationException($"native decode library unavailable: {_status}");
        }
    }

    internal static IntPtr GraphCreate()
    {
        Require();
        IntPtr graph;
        Check(_graphCreate(&graph), "graph create");
        return graph;
    }

    internal static void GraphDestroy(IntPtr graph) => Check(_graphDestroy(graph), "graph destroy");

    internal static void GraphEnter(IntPtr graph) => Check(_graphEnter(graph), "graph stream enter");

    internal static void GraphLeave(IntPtr graph) => Check(_graphLeave(graph), "graph stream leave");

    /// <summary>Capture into <paramref name="pool"/> (shared with earlier captures on this device), or a new private pool when it is default.</summary>
    internal static void CaptureBegin(IntPtr graph, GraphPool pool) => Check(_captureBeginPool(graph, pool.First, pool.Second), "graph capture begin");

    /// <summary>The memory pool a captured graph allocated from.</summary>
    internal static GraphPool PoolOf(IntPtr graph)
    {
        ulong first, second;
        Check(_graphPool(graph, &first, &second), "graph pool");
        return new GraphPool(first, second);
    }

    internal static void CaptureEnd(IntPtr graph) => Check(_captureEnd(graph), "graph capture end");

    internal static void Replay(IntPtr graph) => Check(_replay(graph), "graph replay");

    /// <summary>
    /// Makes CUDA device <paramref name="index"/> current for this thread (<c>cudaSetDevice</c>): graphs are created,
    /// captured and replayed on the current device, so a pipeline shard selects its GPU before its graph runs.
    /// </summary>
    public static void SetDevice(int index)
    {
        Require();
        Check(_setDevice(index), "set device");
    }

    /// <summary><paramref name="output"/> = weight · norm(x (+ residual)); the sum goes to <paramref name="residualOut"/> when given.</summary>
    public static void RmsNorm(Tensor x, Tensor? residual, Tensor weight, double eps, Tensor? residualOut, Tensor output)
    {
        Require();
        Check(_rmsNorm(x.Handle, residual?.Handle ?? IntPtr.Zero, weight.Handle, eps, residualOut?.Handle ?? IntPtr.Zero, output.Handle), "rmsnorm");
    }

    /// <summary>Rotate-half RoPE of <paramref name="input"/> <c>[rows, heads·d]</c> (unit inner stride) into contiguous <paramref name="output"/>.</summary>
    public static void Rope(Tensor input, int heads, Tensor cos, Tensor sin, Tensor output)
    {
        Require();
        Check(_rope(input.Handle, heads, cos.Handle, sin.Handle, output.Handle), "rope");
    }

    /// <summary><paramref name="output"/> <c>[rows, I]</c> = SiLU(gate)·up of <paramref name="gateUp"/> <c>[rows, 2I]</c>.</summary>
    public static void SiluMul(Tensor gateUp, Tensor output)
    {
        Require();
        Check(_siluMul(gateUp.Handle, output.Handle), "silu_mul");
    }

    /// <summary><paramref name="output"/> <c>[B, N]</c> = x <c>[B, K]</c> · Wᵀ for B ≤ 16.</summary>
    public static void Gemv(Tensor x, Tensor weight, Tensor output)
    {
        Require();
        Check(_gemv(x.Handle, weight.Handle, output.Handle), "gemv");
    }

    /// <summary><paramref name="output"/> <c>[B, N]</c> = x · dequant(packed, scales, zeros)ᵀ for B ≤ 16.</summary>
    public static void Int4Linear(Tensor x, Tensor packed, Tensor scales, Tensor zeros, int groupSize, Tensor output)
    {
        Require();
        Check(_int4(x.Handle, packed.Handle, scales.Handle, zeros.Handle, groupSize, output.Handle), "int4 linear");
    }
}
