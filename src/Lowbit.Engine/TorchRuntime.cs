using System.Runtime.InteropServices;
using Lowbit.Engine.Protocol;
using TorchSharp;

namespace Lowbit.Engine;

/// <summary>
/// Loads libtorch before the first TorchSharp call and picks the device. With <c>LOWBIT_TORCH_LIB</c> set (the GPU
/// bundle's launcher sets it to a PyTorch install's <c>torch/lib</c>, also on <c>LD_LIBRARY_PATH</c>), the engine
/// loads that install's libtorch (CUDA when present) and then the bundled <c>libLibTorchSharp.so</c> by full path,
/// so TorchSharp binds to PyTorch's libraries instead of a NuGet libtorch.
/// </summary>
public static class TorchRuntime
{
    private static readonly Lock Gate = new();
    private static bool _initialized;

    public static void Initialize()
    {
        lock (Gate)
        {
            if (_initialized)
            {
                return;
            }
            _initialized = true;
            if (Environment.GetEnvironmentVariable(EngineEnv.TorchLib) is { Length: > 0 } torchLib)
            {
                LoadFromPyTorch(torchLib);
            }
        }
    }

    private static void LoadFromPyTorch(string torchLib)
    {
        foreach (var name in new[] { "libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so" })
        {
            var path = Path.Combine(torchLib, name);
            if (File.Exists(path))
            {
                NativeLibrary.Load(path);
            }
        }
        var bundled = Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so");
        if (!File.Exists(bundled))
        {
            bundled = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        }
        NativeLibrary.Load(bundled);
        if (File.Exists(Path.Combine(torchLib, "libtorch_cuda.so")))
        {
            torch.TryInitializeDeviceType(DeviceType.CUDA);
        }
    }

    /// <summary>
    /// The device for a verb: <paramref name="requested"/>, else <c>$LOWBIT_DEVICE</c>, else CUDA when available, else CPU.
    /// Asking for CUDA where there is none is bad input.
    /// </summary>
    public static torch.Device ResolveDevice(ComputeDevice? requested)
    {
        Initialize();
        var fromEnv = Environment.GetEnvironmentVariable(EngineEnv.Device);
        var choice = requested ?? (fromEnv is { Length: > 0 } && ProtocolNames.TryParse<ComputeDevice>(fromEnv, out var parsed) ? parsed : null);
        var cudaAvailable = torch.cuda.is_available();
        return choice switch
        {
            ComputeDevice.Cpu => torch.CPU,
            ComputeDevice.Cuda when cudaAvailable => torch.CUDA,
            ComputeDevice.Cuda => throw new EngineInputException("--device: cuda was requested but no CUDA device is available; accepted here: cpu"),
            _ => cudaAvailable ? torch.CUDA : torch.CPU,
        };
    }
}
