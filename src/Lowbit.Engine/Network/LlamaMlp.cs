using Lowbit.Engine.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Network;

/// <summary>SwiGLU feed-forward: <c>down(SiLU(gate(x)) · up(x))</c>.</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    private LinearLayer gate_proj;
    private LinearLayer up_proj;
    private LinearLayer down_proj;

    public LlamaMlp(LlamaConfig config, ScalarType dtype, Device device)
        : base("LlamaMlp")
    {
        gate_proj = new DenseLinear(config.HiddenSize, config.IntermediateSize, config.MlpBias, dtype, device);
        up_proj = new DenseLinear(config.HiddenSize, config.IntermediateSize, config.MlpBias, dtype, device);
        down_proj = new DenseLinear(config.IntermediateSize, config.HiddenSize, config.MlpBias, dtype, device);
        RegisterComponents();
    }

    public IEnumerable<(string Name, LinearLayer Layer)> Projections() =>
        [("gate_proj", gate_proj), ("up_proj", up_proj), ("down_proj", down_proj)];

    public void ReplaceProjection(string name, LinearLayer layer)
    {
        register_module(name, null!);
        register_module(name, layer);
        switch (name)
        {
            case "gate_proj": gate_proj = layer; break;
            case "up_proj": up_proj = layer; break;
            case "down_proj": down_proj = layer; break;
            default: throw new ArgumentException($"no projection '{name}'", nameof(name));
        }
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var hidden = nn.functional.silu(gate_proj.forward(input)) * up_proj.forward(input);
        return down_proj.forward(hidden).MoveToOuterDisposeScope();
    }
}
