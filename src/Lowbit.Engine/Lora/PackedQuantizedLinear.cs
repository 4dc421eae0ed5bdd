using Lowbit.Engine.Network;
using Lowbit.Engine.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Lora;

/// <summary>
/// A frozen quantized projection for QLoRA that keeps its codes bit-packed on the device (2-, 4- or 8-bit codes,
/// 8/bits per byte along the input dimension, first code in the low bits) and dequantizes them per call with
/// broadcast group scales and zeros: a 4-bit 7B base holds ~3.4 GB of codes instead of 6.7 GB unpacked bytes.
/// Layers it cannot pack (3-bit, act-order, axis 0) stay <see cref="QuantizedLinear"/>.
/// </summary>
public sealed class PackedQuantizedLinear : LinearLayer
{
    private readonly Tensor _packed;
    private readonly Tensor _scales;
    private readonly Tensor _zeros;
    private readonly Tensor _shifts;
    private readonly Tensor? _bias;
    private readonly int _bits;
    private readonly int _groupSize;

    private PackedQuantizedLinear(QuantizedTensor q, Tensor? bias)
        : base("PackedQuantizedLinear", q.InFeatures, q.OutFeatures)
    {
        using var scope = NewDisposeScope();
        _bits = q.Bits;
        _groupSize = q.GroupSize;
        var perByte = 8 / q.Bits;
        var shifts = arange(0, 8, q.Bits, ScalarType.Int32, q.Codes.device);
        var codes = q.Codes.to(ScalarType.Int32).view(q.OutFeatures, q.InFeatures / perByte, perByte);
        _packed = codes.bitwise_left_shift(shifts).sum(-1).to(ScalarType.Byte).contiguous().DetachFromDisposeScope();
        _shifts = shifts.to(ScalarType.Byte).DetachFromDisposeScope();
        _scales = q.Scales.to(ScalarType.Float32).contiguous().DetachFromDisposeScope();
        _zeros = q.Zeros.to(ScalarType.Float32).contiguous().DetachFromDisposeScope();
        _bias = bias?.detach().DetachFromDisposeScope();
    }

    /// <summary>A packed layer when <paramref name="q"/> allows it, otherwise an ordinary <see cref="QuantizedLinear"/>.</summary>
    public static LinearLayer Create(QuantizedTensor q, Tensor? bias)
    {
        var packable = q.Bits is 2 or 4 or 8 && q.Axis == 1 && q.GroupIndex is null && q.GroupSize > 0
            && q.InFeatures % q.GroupSize == 0 && q.InFeatures % (8 / q.Bits) == 0 && q.Scales.shape.Length == 2;
        if (!packable)
        {
            return new QuantizedLinear(q, bias);
        }
        var layer = new PackedQuantizedLinear(q, bias);
        q.Dispose();
        return layer;
    }

    /// <summary>Bytes held on the device (codes, scales, zeros).</summary>
    public long StorageBytes => _packed.NumberOfElements + 4 * (_scales.NumberOfElements + _zeros.NumberOfElements);

    /// <summary>
    /// Dequantizes in the input's dtype and frees the dense weight when the call returns. Under gradient checkpointing
    /// the forward runs without autograd (nothing keeps the weight) and the backward's recompute dequantizes again;
    /// there autograd keeps the weight for the input gradient until that layer's backward is done.
    /// </summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var output = nn.functional.linear(input, DenseWeight(input.dtype), _bias?.to(input.dtype));
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>(code − zero) · scale</c> computed in <paramref name="dtype"/> when it is a float type (bf16 on CUDA: the codes
    /// stay one byte per weight and the arithmetic runs in place on one bf16 buffer, 3 bytes per weight of transient
    /// memory instead of ~22 for an int32/float32 pipeline), float32 otherwise. In float32 the result is bit-identical
    /// to <see cref="QuantizedTensor.Dequantize"/>; in bf16 the zero, the scale, the difference and the product are each
    /// rounded once, so |w_bf16 − w_fp32| ≤ |scale|·(3|code − zero| + |zero|)·2⁻⁸ (tested).
    /// </summary>
    public override Tensor DenseWeight(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var compute = dtype is ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float32 or ScalarType.Float64 ? dtype : ScalarType.Float32;
        var mask = (1 << _bits) - 1;
        var codes = _packed.unsqueeze(-1).bitwise_right_shift(_shifts).bitwise_and(mask);
        var groups = InFeatures / _groupSize;
        var weight = codes.view(OutFeatures, groups, _groupSize).to(compute);
        weight.sub_(_zeros.view(OutFeatures, groups, 1).to(compute)).mul_(_scales.view(OutFeatures, groups, 1).to(compute));
        return weight.view(OutFeatures, InFeatures).to(dtype).MoveToOuterDisposeScope();
    }

    public override Tensor? DenseBias(ScalarType dtype) => _bias?.to(dtype);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _packed.Dispose();
            _scales.Dispose();
            _zeros.Dispose();
            _shifts.Dispose();
            _bias?.Dispose();
        }
        base.Dispose(disposing);
    }
}
