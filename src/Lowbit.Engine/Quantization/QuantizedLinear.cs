using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Quantization;

/// <summary>
/// A quantized projection that plugs into the model through <see cref="LlamaForCausalLM.ReplaceLinears"/>: it keeps
/// the codes, scales and zeros and dequantizes on the fly in <c>forward</c> (or once, with
/// <c>cacheDense</c>, trading memory for speed). With <c>ownsWeight</c> false the quantized tensor outlives the module.
/// </summary>
public sealed class QuantizedLinear : LinearLayer
{
    private readonly Tensor? _bias;
    private readonly bool _cacheDense;
    private readonly bool _ownsWeight;
    private Tensor? _dense;

    public QuantizedLinear(QuantizedTensor weight, Tensor? bias, bool cacheDense = false, bool ownsWeight = true)
        : base("QuantizedLinear", weight.InFeatures, weight.OutFeatures)
    {
        Weight = weight;
        _bias = bias?.detach();
        _cacheDense = cacheDense;
        _ownsWeight = ownsWeight;
    }

    public QuantizedTensor Weight { get; }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var weight = DenseFor(input.dtype);
        var output = nn.functional.linear(input, weight, _bias?.to(input.dtype));
        return output.MoveToOuterDisposeScope();
    }

    public override Tensor DenseWeight(ScalarType dtype) => Weight.Dequantize(dtype);

    public override Tensor? DenseBias(ScalarType dtype) => _bias?.to(dtype);

    private Tensor DenseFor(ScalarType dtype)
    {
        if (!_cacheDense)
        {
            return Weight.Dequantize(dtype);
        }
        if (_dense is null || _dense.dtype != dtype)
        {
            _dense?.Dispose();
            _dense = Weight.Dequantize(dtype).DetachFromDisposeScope();
        }
        return _dense.alias();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            if (_ownsWeight)
            {
                Weight.Dispose();
            }
            _bias?.Dispose();
            _dense?.Dispose();
        }
        base.Dispose(disposing);
    }
}
