using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Lora;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Network;

/// <summary>SwiGLU feed-forward: <c>down(SiLU(gate(x)) · up(x))</c>.</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    private LinearLayer gate_proj;
    private LinearLayer up_proj;
    private LinearLayer down_proj;
    private readonly LoraProjectionGroup _gateUp = new();
    private readonly LoraProjectionGroup _down = new();

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
        _gateUp.Dispose();   // its fused weight would otherwise keep the replaced layers' storage alive
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
        LinearLayer[] gateUp = [gate_proj, up_proj];
        Tensor hidden;
        if (LoraProjectionGroup.Applies(gateUp))
        {
            // LoRA training: gate and up from one fused projection.
            var fused = _gateUp.Forward(gateUp, input);
            var width = gate_proj.OutFeatures;
            var gateAndUp = fused.split([width, width], -1);   // one split: its backward is one cat
            hidden = nn.functional.silu(gateAndUp[0]).mul(gateAndUp[1]);
        }
        else
        {
            hidden = nn.functional.silu(gate_proj.forward(input)) * up_proj.forward(input);
        }
        LinearLayer[] down = [down_proj];
        var output = LoraProjectionGroup.Applies(down) ? _down.Forward(down, hidden) : down_proj.forward(hidden);
        return output.MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _gateUp.Dispose();
            _down.Dispose();
        }
        base.Dispose(disposing);
    }
}
