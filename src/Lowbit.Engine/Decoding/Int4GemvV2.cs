using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Lowbit.Engine.Decoding;

/// <summary>
/// The optional <c>liblowbit_kernels_v2.so</c> next to the native decode library (src/Lowbit.Engine/native/
/// lowbit_kernels_v2.cu): the second int4 dequantize-GEMV, for 1 or 2 rows (K ≤ 16,384) and 3 or 4 rows (K ≤ 4,096). Built apart from the decode library, so a
/// compile failure there only removes this kernel; <see cref="KernelSelector"/> measures it against the first int4 GEMV
/// and dequantize + <c>linear</c> and uses it only where it is both right and fastest.
/// </summary>
public static unsafe class Int4GemvV2
{
    /// <summary>The file name, looked up in the folder of <see cref="NativeKernels.LibraryEnv"/>.</summary>
    public const string LibraryName = "liblowbit_kernels_v2.so";

    private static readonly Lock Gate = new();
    private static bool _tried;
    private static string _status = "not loaded";
    private static delegate* unmanaged<int, int, int> _supports;
    private static delegate* unmanaged<IntPtr> _lastError;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, int, IntPtr, int> _linear;

    /// <summary>True when the library is loaded.</summary>
    public static bool Available
    {
        get
        {
            EnsureLoaded();
            return _linear != null;
        }
    }

    /// <summary>Why the kernel is or is not available (for logs and the self-check).</summary>
    public static string Status
    {
        get
        {
            EnsureLoaded();
            return _status;
        }
    }

    /// <summary>True when the kernel takes <paramref name="rows"/> activation rows of width <paramref name="inFeatures"/>.</summary>
    public static bool Supports(long rows, long inFeatures)
    {
        EnsureLoaded();
        return _linear != null && rows is >= 1 and <= 16 && inFeatures is > 0 and <= int.MaxValue && _supports((int)rows, (int)inFeatures) == 1;
    }

    /// <summary><paramref name="output"/> <c>[B, N]</c> = x · dequant(packed, scales, zeros)ᵀ (see <see cref="Supports"/>).</summary>
    public static void Linear(Tensor x, Tensor packed, Tensor scales, Tensor zeros, int groupSize, Tensor output)
    {
        if (!Available)
        {
            throw new InvalidOperationException($"int4 GEMV v2 unavailable: {_status}");
        }
        if (_linear(x.Handle, packed.Handle, scales.Handle, zeros.Handle, groupSize, output.Handle) != 0)
        {
            throw new InvalidOperationException($"native int4 v2 linear failed: {Marshal.PtrToStringUTF8(_lastError()) ?? "unknown"}");
        }
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
            if (string.IsNullOrEmpty(native) || Path.GetDirectoryName(native) is not { } folder)
            {
                _status = $"{NativeKernels.LibraryEnv} is not set";
                return;
            }
            var path = Path.Combine(folder, LibraryName);
            if (!NativeLibrary.TryLoad(path, out var handle))
            {
                _status = $"cannot load {path} (see the native build.log next to it)";
                return;
            }
            if (NativeLibrary.TryGetExport(handle, "lowbit_v2_int4_linear", out var linear)
                && NativeLibrary.TryGetExport(handle, "lowbit_v2_last_error", out var lastError)
                && NativeLibrary.TryGetExport(handle, "lowbit_v2_supports", out var supports))
            {
                _supports = (delegate* unmanaged<int, int, int>)supports;
                _lastError = (delegate* unmanaged<IntPtr>)lastError;
                _linear = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, int, IntPtr, int>)linear;
                _status = $"loaded {path}";
            }
            else
            {
                _status = $"{path} lacks an export";
            }
        }
    }
}
