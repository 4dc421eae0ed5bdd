using System.Runtime.CompilerServices;
using TorchSharp;

namespace Lowbit.Engine.Tests.Quantization;

/// <summary>
/// One intra-op thread for the whole test assembly: on a shared 2-core box OpenMP's spinning worker threads make
/// small tensor ops 10–30× slower under load (measured: a 1-layer RTN/HQQ/GPTQ run 30 s → 3 s).
/// </summary>
internal static class TorchThreads
{
    [ModuleInitializer]
    internal static void UseOneThread() => torch.set_num_threads(1);
}
