using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lowbit.Engine.Network;

/// <summary>
/// A linear projection <c>y = x·Wᵀ + b</c> of the model (q/k/v/o, gate/up/down, lm_head). The model holds its
/// projections as this type, so a quantized layer (which stores packed codes, scales and zeros and dequantizes on
/// the fly in <c>forward</c>) replaces a <see cref="DenseLinear"/> through
/// <see cref="LlamaForCausalLM.ReplaceLinears"/> without the model knowing the storage.
/// </summary>
public abstract class LinearLayer : nn.Module<Tensor, Tensor>
{
    protected LinearLayer(string name, long inFeatures, long outFeatures)
        : base(name)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
    }

    public long InFeatures { get; }

    public long OutFeatures { get; }

    /// <summary>The weight as a dense <c>[out, in]</c> tensor of <paramref name="dtype"/> (a dequantized copy for quantized layers).</summary>
    public abstract Tensor DenseWeight(ScalarType dtype);

    /// <summary>The bias, or null.</summary>
    public abstract Tensor? DenseBias(ScalarType dtype);

    /// <summary>
    /// Output rows <c>[start, start + length)</c> of the weight as a dense <c>[length, in]</c> tensor (a chunk of the
    /// vocabulary for <c>lm_head</c>); layers that can produce a slice without the whole dense weight override it.
    /// </summary>
    public virtual Tensor DenseRows(long start, long length, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return DenseWeight(dtype).narrow(0, start, length).contiguous().MoveToOuterDisposeScope();
    }
}

/// <summary>An ordinary floating-point linear layer; its parameters are the checkpoint's <c>weight</c> and <c>bias</c>.</summary>
public sealed class DenseLinear : LinearLayer
{
    private readonly Parameter weight;
    private readonly Parameter? bias;

    public DenseLinear(long inFeatures, long outFeatures, bool hasBias, ScalarType dtype, Device device)
        : base("DenseLinear", inFeatures, outFeatures)
    {
        weight = new Parameter(empty([outFeatures, inFeatures], dtype, device));
        bias = hasBias ? new Parameter(empty([outFeatures], dtype, device)) : null;
        RegisterComponents();
    }

    public Parameter Weight => weight;

    public Parameter? Bias => bias;

    public override Tensor forward(Tensor input) => nn.functional.linear(input, weight, bias);

    public override Tensor DenseWeight(ScalarType dtype) => weight.to(dtype);

    /// <summary>A view of the rows when the dtype matches (no copy), else a converted slice.</summary>
    public override Tensor DenseRows(long start, long length, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return weight.narrow(0, start, length).to(dtype).MoveToOuterDisposeScope();
    }

    public override Tensor? DenseBias(ScalarType dtype) => bias?.to(dtype);
}
