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
                return CuMemGetInfo(out var free, out var total) == 0 ? (long)(total - free) : 0;
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
            {
                return 0;
            }
        }
        return ProcessPeakBytes();
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

    [LibraryImport("libcuda.so.1", EntryPoint = "cuMemGetInfo_v2")]
    private static partial int CuMemGetInfo(out nuint free, out nuint total);
}
