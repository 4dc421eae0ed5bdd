using Lowbit.Engine.Network;
using static TorchSharp.torch;

namespace Lowbit.Engine.Checkpoints;

/// <summary>
/// Turns a resolved model folder into a runnable model. Loaders are tried in order; the first that returns a model
/// wins. The dense Hugging Face loader is last; the quantized formats (lowbit, GPTQ) register theirs in front with
/// <see cref="Loaders"/>.Insert(0, ...).
/// </summary>
public static class ModelLoading
{
    /// <summary>Given a folder, the compute dtype and device, a model, or null if the folder is not this loader's format.</summary>
    public static List<Func<string, ScalarType, Device, LlamaForCausalLM?>> Loaders { get; } =
    [
        (directory, dtype, device) => Formats.LowbitCheckpoint.IsLowbit(directory) ? Formats.LowbitCheckpoint.Load(directory, dtype, device) : null,
        (directory, dtype, device) =>
        {
            using var checkpoint = Checkpoint.Open(directory);
            return ModelIo.Load(checkpoint, dtype, device);
        },
    ];

    public static LlamaForCausalLM Load(string directory, ScalarType dtype, Device device)
    {
        foreach (var loader in Loaders)
        {
            if (loader(directory, dtype, device) is { } model)
            {
                return model;
            }
        }
        throw new EngineInputException($"--model: no loader understands {directory}");
    }

    /// <summary>The compute dtype for a device: the checkpoint's 16-bit type on CUDA, float32 on CPU (fast and exact there).</summary>
    public static ScalarType ComputeDtype(LlamaConfig config, Device device) =>
        device.type == TorchSharp.DeviceType.CUDA ? ModelIo.ParseDtype(config.TorchDtype ?? "bfloat16") switch
        {
            ScalarType.Float32 => ScalarType.Float32,
            var sixteen => sixteen,
        } : ScalarType.Float32;
}
