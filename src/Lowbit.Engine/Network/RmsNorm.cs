using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lowbit.Engine.Network;

/// <summary>RMSNorm with Hugging Face semantics: normalize in fp32, cast back to the input dtype, then scale by <c>weight</c>.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly double _eps;

    public RmsNorm(long size, double eps, ScalarType dtype, Device device)
        : base("RmsNorm")
    {
        weight = new Parameter(ones([size], dtype, device));
        _eps = eps;
        RegisterComponents();
    }

    public Parameter Weight => weight;

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = input.to(input.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32);
        var variance = x.pow(Scalars.Of(2)).mean([-1], keepdim: true);
        var normalized = (x * rsqrt(variance.add(Scalars.Of(_eps), Scalars.One))).to(input.dtype);
        return (weight * normalized).MoveToOuterDisposeScope();
    }
}
