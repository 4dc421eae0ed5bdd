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

    [LibraryImport("libcuda.so.1", EntryPoint = "cuMemGetInfo_v2")]
    private static partial int CuMemGetInfo(out nuint free, out nuint total);
}
