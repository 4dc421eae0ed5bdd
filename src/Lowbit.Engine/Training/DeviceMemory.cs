using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Lowbit.Engine.Training;

/// <summary>
/// Memory in use, for progress and results: on CUDA the device's used bytes (total − free from the driver's
/// <c>cuMemGetInfo</c>: the allocator's reserved pool, the context, and anything else on the device); on the CPU
/// the process's peak resident set (<c>VmHWM</c>).
/// </summary>
public static partial class DeviceMemory
{
    public static long Used(Device device)
    {
        if (device.type == TorchSharp.DeviceType.CUDA)
        {
            try
            {
                return device.index <= 0 ? CurrentContextUsed() : DeviceUsed(device.index);
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
            {
                return 0;
            }
        }
        return ProcessPeakBytes();
    }

    /// <summary>Raises each <paramref name="peaks"/>[i] to what <paramref name="devices"/>[i] uses now.</summary>
    public static void Sample(IReadOnlyList<Device> devices, long[] peaks)
    {
        for (var i = 0; i < devices.Count; i++)
        {
            peaks[i] = Math.Max(peaks[i], Used(devices[i]));
        }
    }

    private static long ProcessPeakBytes()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                {
                    var kb = line["VmHWM:".Length..].Trim().Split(' ')[0];
                    return long.Parse(kb, System.Globalization.CultureInfo.InvariantCulture) * 1024;
                }
            }
        }
        catch (IOException)
        {
        }
        return Environment.WorkingSet;
    }

    /// <summary>The allocator setting <see cref="PreferExpandableSegments"/> applies.</summary>
    public const string AllocatorConfigVariable = "PYTORCH_CUDA_ALLOC_CONF";

    /// <summary>
    /// Asks libtorch's CUDA caching allocator for expandable segments (<c>PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True</c>,
    /// PyTorch's documented setting against fragmentation: one growing virtual segment per stream instead of many fixed
    /// blocks, so the pool stays close to the bytes in use) unless the user set <c>PYTORCH_CUDA_ALLOC_CONF</c> or
    /// <c>PYTORCH_ALLOC_CONF</c>. c10 reads the variable with <c>getenv</c> when the allocator initialises (the first CUDA
    /// allocation), so this sets the process environment through libc (.NET's <c>Environment</c> does not) and must run
    /// before that. Returns the setting in effect (null: none).
    /// </summary>
    public static string? PreferExpandableSegments()
    {
        if (Environment.GetEnvironmentVariable(AllocatorConfigVariable) is { Length: > 0 } user)
        {
            return user;
        }
        if (Environment.GetEnvironmentVariable("PYTORCH_ALLOC_CONF") is { Length: > 0 } general)
        {
            return general;
        }
        const string value = "expandable_segments:True";
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }
        try
        {
            if (SetEnv(AllocatorConfigVariable, value, 0) != 0)
            {
                return null;
            }
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
        Environment.SetEnvironmentVariable(AllocatorConfigVariable, value);
        return value;
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);

    private static long CurrentContextUsed() => CuMemGetInfo(out var free, out var total) == 0 ? (long)(total - free) : 0;

    /// <summary>
    /// Bytes in use on GPU <paramref name="ordinal"/> (a pipeline shard other than the first): its primary context (the
    /// one libtorch uses) is made current for the query and popped again, so the calling thread's device is unchanged.
    /// </summary>
    private static long DeviceUsed(int ordinal)
    {
        if (CuDeviceGet(out var device, ordinal) != 0 || CuDevicePrimaryCtxRetain(out var context, device) != 0)
        {
            return 0;
        }
        try
        {
            if (CuCtxPushCurrent(context) != 0)
            {
                return 0;
            }
            try
            {
                return CurrentContextUsed();
            }
            finally
            {
                _ = CuCtxPopCurrent(out _);
            }
        }
        finally
        {
            _ = CuDevicePrimaryCtxRelease(device);
        }
    }

    [LibraryImport("libcuda.so.1", EntryPoint = "cuDeviceGet")]
    private static partial int CuDeviceGet(out int device, int ordinal);

    [LibraryImport("libcuda.so.1", EntryPoint = "cuDevicePrimaryCtxRetain")]
    private static partial int CuDevicePrimaryCtxRetain(out nint context, int device);

    [LibraryImport("libcuda.so.1", EntryPoint = "cuDevicePrimaryCtxRelease_v2")]
    private static partial int CuDevicePrimaryCtxRelease(int device);

    [LibraryImport("libcuda.so.1", EntryPoint = "cuCtxPushCurrent_v2")]
    private static partial int CuCtxPushCurrent(nint context);

    [LibraryImport("libcuda.so.1", EntryPoint = "cuCtxPopCurrent_v2")]
    private static partial int CuCtxPopCurrent(out nint context);

    [LibraryImport("libcuda.so.1", EntryPoint = "cuMemGetInfo_v2")]
    private static partial int CuMemGetInfo(out nuint free, out nuint total);
}
