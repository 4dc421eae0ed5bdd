using Lowbit.Engine.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Network;

/// <summary>One pre-norm block: <c>h = x + attn(norm(x))</c>, <c>out = h + mlp(norm(h))</c>.</summary>
public sealed class LlamaDecoderLayer : nn.Module<Tensor, AttentionContext, Tensor>
{
    private readonly LlamaAttention self_attn;
    private readonly LlamaMlp mlp;
    private readonly RmsNorm input_layernorm;
    private readonly RmsNorm post_attention_layernorm;

    /// <param name="projectionDevice">Where the q/k/v/o and gate/up/down projections are created (default <paramref name="device"/>);
    /// <c>meta</c> allocates nothing, for loaders that replace every projection (quantized checkpoints).</param>
    public LlamaDecoderLayer(LlamaConfig config, ScalarType dtype, Device device, Device? projectionDevice = null)
        : base("LlamaDecoderLayer")
    {
        self_attn = new LlamaAttention(config, dtype, projectionDevice ?? device);
        mlp = new LlamaMlp(config, dtype, projectionDevice ?? device);
        input_layernorm = new RmsNorm(config.HiddenSize, config.RmsNormEps, dtype, device);
        post_attention_layernorm = new RmsNorm(config.HiddenSize, config.RmsNormEps, dtype, device);
        RegisterComponents();
    }

    public LlamaAttention SelfAttention => self_attn;

    public LlamaMlp Mlp => mlp;

    public RmsNorm InputLayerNorm => input_layernorm;

    public RmsNorm PostAttentionLayerNorm => post_attention_layernorm;

    /// <summary>The seven projections with their names inside the layer (<c>self_attn.q_proj</c>, <c>mlp.down_proj</c>).</summary>
    public IEnumerable<(string Name, LinearLayer Layer)> Projections() =>
        self_attn.Projections().Select(p => ("self_attn." + p.Name, p.Layer))
            .Concat(mlp.Projections().Select(p => ("mlp." + p.Name, p.Layer)));

    /// <summary>Swaps a projection by its name inside the layer.</summary>
    public void ReplaceProjection(string name, LinearLayer layer)
    {
        if (name.StartsWith("self_attn.", StringComparison.Ordinal))
        {
            self_attn.ReplaceProjection(name["self_attn.".Length..], layer);
        }
        else if (name.StartsWith("mlp.", StringComparison.Ordinal))
        {
            mlp.ReplaceProjection(name["mlp.".Length..], layer);
        }
        else
        {
            throw new ArgumentException($"no projection '{name}'", nameof(name));
        }
    }

    public override Tensor forward(Tensor input, AttentionContext context)
    {
        using var scope = NewDisposeScope();
        var h = input.add(self_attn.forward(input_layernorm.forward(input), context), Scalars.One);
        var output = h.add(mlp.forward(post_attention_layernorm.forward(h)), Scalars.One);
        return output.MoveToOuterDisposeScope();
    }
}
