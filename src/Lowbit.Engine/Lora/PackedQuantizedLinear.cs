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

    private PackedQuantizedLinear(int bits, int groupSize, long inFeatures, long outFeatures, Tensor packed, Tensor scales, Tensor zeros, Tensor? bias)
        : base("PackedQuantizedLinear", inFeatures, outFeatures)
    {
        _bits = bits;
        _groupSize = groupSize;
        _packed = packed;
        _scales = scales;
        _zeros = zeros;
        using var scope = NewDisposeScope();
        _shifts = arange(Scalars.Of(0), Scalars.Of(8), Scalars.Of(bits), ScalarType.Int32, packed.device).to(ScalarType.Byte).DetachFromDisposeScope();
        _bias = bias?.detach().DetachFromDisposeScope();
    }

    /// <summary>A packed layer when <paramref name="q"/> allows it, otherwise an ordinary <see cref="QuantizedLinear"/>.</summary>
    public static LinearLayer Create(QuantizedTensor q, Tensor? bias)
    {
        var packable = IsPackable(q.Bits, q.GroupSize, q.InFeatures) && q.Axis == 1 && q.GroupIndex is null && q.Scales.shape.Length == 2;
        if (!packable)
        {
            return new QuantizedLinear(q, bias);
        }
        PackedQuantizedLinear layer;
        using (var scope = NewDisposeScope())
        {
            var perByte = 8 / q.Bits;
            var shifts = arange(Scalars.Of(0), Scalars.Of(8), Scalars.Of(q.Bits), ScalarType.Int32, q.Codes.device);
            var codes = q.Codes.to(ScalarType.Int32).view(q.OutFeatures, q.InFeatures / perByte, perByte);
            var packed = codes.bitwise_left_shift(shifts).sum(-1).to(ScalarType.Byte).contiguous().DetachFromDisposeScope();
            layer = new PackedQuantizedLinear(q.Bits, q.GroupSize, q.InFeatures, q.OutFeatures, packed,
                Compact(q.Scales).DetachFromDisposeScope(), Compact(q.Zeros).DetachFromDisposeScope(), bias);
        }
        q.Dispose();
        return layer;
    }

    /// <summary>
    /// A layer over codes already packed as this layer keeps them: our <c>lowbit</c> export's <c>qweight</c> (BitPacking.PackBits,
    /// LSB first) is that layout for 2-, 4- and 8-bit codes, so a loader moves the file's bytes to the device as they are
    /// and never holds one byte per weight. <paramref name="packed"/> uint8 <c>[out, in·bits/8]</c>, <paramref name="scales"/>
    /// and <paramref name="zeros"/> <c>[out, in/group]</c> (float16 or float32), each its own tensor, not a view (a view
    /// would keep its base's storage alive after <see cref="ShareStorage"/>); the layer owns all three.
    /// </summary>
    public static PackedQuantizedLinear FromPacked(int bits, int groupSize, long outFeatures, long inFeatures, Tensor packed, Tensor scales, Tensor zeros, Tensor? bias)
    {
        if (!IsPackable(bits, groupSize, inFeatures))
        {
            throw new ArgumentException($"{bits}-bit codes in groups of {groupSize} over {inFeatures} inputs are not byte-packable", nameof(bits));
        }
        long[] codes = [outFeatures, inFeatures * bits / 8], groups = [outFeatures, inFeatures / groupSize];
        if (!packed.shape.SequenceEqual(codes) || !scales.shape.SequenceEqual(groups) || !zeros.shape.SequenceEqual(groups) || packed.dtype != ScalarType.Byte)
        {
            throw new ArgumentException($"packed [{string.Join(", ", packed.shape)}] {packed.dtype}, scales [{string.Join(", ", scales.shape)}] and zeros [{string.Join(", ", zeros.shape)}] do not fit [{outFeatures}, {inFeatures}] at {bits} bits, group {groupSize}", nameof(packed));
        }
        return new PackedQuantizedLinear(bits, groupSize, inFeatures, outFeatures, packed.DetachFromDisposeScope(),
            scales.DetachFromDisposeScope(), zeros.DetachFromDisposeScope(), bias);
    }

    /// <summary>Widths this layer packs whole codes per byte for, with groups along the input that tile it.</summary>
    public static bool IsPackable(int bits, int groupSize, long inFeatures) =>
        bits is 2 or 4 or 8 && groupSize > 0 && inFeatures % groupSize == 0 && inFeatures % (8 / bits) == 0;

    public int Bits => _bits;

    public int GroupSize => _groupSize;

    /// <summary>The codes, uint8 <c>[out, in·bits/8]</c> (first code of a byte in its low bits).</summary>
    public Tensor Packed => _packed;

    /// <summary>Scales <c>[out, in/group]</c>.</summary>
    public Tensor Scales => _scales;

    /// <summary>Zeros <c>[out, in/group]</c>.</summary>
    public Tensor Zeros => _zeros;

    /// <summary>
    /// Makes this layer's codes, scales and zeros views of <paramref name="packed"/>, <paramref name="scales"/> and
    /// <paramref name="zeros"/> (same shapes and values: rows of a fused weight), releasing its own storage, so a fused
    /// copy is the only copy.
    /// </summary>
    public void ShareStorage(Tensor packed, Tensor scales, Tensor zeros)
    {
        if (!packed.shape.SequenceEqual(_packed.shape) || !scales.shape.SequenceEqual(_scales.shape) || !zeros.shape.SequenceEqual(_zeros.shape)
            || scales.dtype != _scales.dtype || zeros.dtype != _zeros.dtype || packed.dtype != ScalarType.Byte)
        {
            throw new ArgumentException("shared storage must match this layer's shapes and dtypes", nameof(packed));
        }
        using var noGrad = no_grad();
        _packed.set_(packed);
        _scales.set_(scales);
        _zeros.set_(zeros);
    }

    /// <summary>Bytes held on the device (codes, scales, zeros).</summary>
    public long StorageBytes => _packed.NumberOfElements + _scales.ElementSize * _scales.NumberOfElements + _zeros.ElementSize * _zeros.NumberOfElements;

    /// <summary>
    /// Scales and zeros as float16 when that holds them exactly (the lowbit format stores them as fp16, and
    /// <see cref="QuantizedTensor.Create"/> rounds to fp16), else float32: 2 bytes per group instead of 4 (0.4 GB less
    /// for a 4-bit g64 7B base). fp16 → float32/bf16 conversions are exact/round once, so every dequantization
    /// is bit-identical to the float32 copy.
    /// </summary>
    private static Tensor Compact(Tensor values)
    {
        using var scope = NewDisposeScope();
        var f32 = values.to(ScalarType.Float32).contiguous();
        var half = f32.to(ScalarType.Float16);
        var exact = half.to(ScalarType.Float32).eq(f32).all().item<bool>();
        return (exact ? half : f32).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The model whose training loop releases what this layer's backward hands to autograd
    /// (<see cref="Training.GradientCheckpoint.Release"/>); set by the fine-tuner. Null: left to the enclosing scope.
    /// </summary>
    public object? Owner { get; set; }

    /// <summary>
    /// Dequantizes in the input's dtype and frees the dense weight when the call returns. When the input needs a
    /// gradient the product runs as <see cref="DequantizedLinear"/>: autograd keeps only this layer (its packed codes),
    /// and the backward dequantizes again for <c>grad·W</c> (as bitsandbytes' 4-bit matmul does), so no dense weight
    /// outlives its call, with or without gradient checkpointing.
    /// </summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var output = input.requires_grad && is_grad_enabled()
            ? DequantizedLinear.apply(input, this)
            : Linear(input);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary><c>x·Wᵀ + b</c> with a transient dense W (no autograd needed through W: it is frozen).</summary>
    internal Tensor Linear(Tensor input)
    {
        using var scope = NewDisposeScope();
        return nn.functional.linear(input, DenseWeight(input.dtype), _bias?.to(input.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary><c>grad·W</c>, the input gradient, with a transient dense W.</summary>
    internal Tensor InputGradient(Tensor grad)
    {
        using var scope = NewDisposeScope();
        return grad.matmul(DenseWeight(grad.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>(code − zero) · scale</c> computed in <paramref name="dtype"/> when it is a float type (bf16 on CUDA: the codes
    /// stay one byte per weight and the arithmetic runs in place on one bf16 buffer, 3 bytes per weight of transient
    /// memory instead of ~22 for an int32/float32 pipeline), float32 otherwise. In float32 the result is bit-identical
    /// to <see cref="QuantizedTensor.Dequantize"/>; in bf16 the zero, the scale, the difference and the product are each
    /// rounded once, so |w_bf16 − w_fp32| ≤ |scale|·(3|code − zero| + |zero|)·2⁻⁸ (tested).
    /// </summary>
    public override Tensor DenseWeight(ScalarType dtype) => Dequantize(_packed, _scales, _zeros, OutFeatures, dtype);

    /// <summary>Rows <c>[start, start + length)</c> dequantized from their packed codes only (a vocabulary chunk of a quantized head).</summary>
    public override Tensor DenseRows(long start, long length, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return Dequantize(_packed.narrow(0, start, length), _scales.narrow(0, start, length), _zeros.narrow(0, start, length), length, dtype)
            .MoveToOuterDisposeScope();
    }

    private Tensor Dequantize(Tensor packed, Tensor scales, Tensor zeros, long rows, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var compute = dtype is ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float32 or ScalarType.Float64 ? dtype : ScalarType.Float32;
        var mask = (1 << _bits) - 1;
        // One byte per weight while unpacking (the mask in place), freed as soon as the codes are in the compute dtype.
        var codes = packed.unsqueeze(-1).bitwise_right_shift(_shifts).bitwise_and_(mask);
        var groups = InFeatures / _groupSize;
        var weight = codes.view(rows, groups, _groupSize).to(compute);
        codes.Dispose();   // weight is a new tensor (or holds its own reference to the storage)
        weight.sub_(zeros.view(rows, groups, 1).to(compute)).mul_(scales.view(rows, groups, 1).to(compute));
        return weight.view(rows, InFeatures).to(dtype).MoveToOuterDisposeScope();
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

/// <summary>
/// <c>y = x·Wᵀ + b</c> for a frozen <see cref="PackedQuantizedLinear"/> whose backward dequantizes W again instead of
/// autograd keeping the dense weight between forward and backward.
/// </summary>
public sealed class DequantizedLinear : autograd.SingleTensorFunction<DequantizedLinear>
{
    public override string Name => "LowbitDequantizedLinear";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var layer = (PackedQuantizedLinear)vars[1];
        ctx.save_data("layer", layer);
        return layer.Linear((Tensor)vars[0]);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        Training.GradientCheckpoint.ReleaseReturned();
        var layer = (PackedQuantizedLinear)ctx.get_data("layer");
        var grad = layer.InputGradient(grad_output);
        // On CUDA this runs on the autograd device thread, outside any dispose scope: the incoming gradient's wrapper
        // is disposed here, the returned one by the training loop after backward() (see GradientCheckpoint).
        grad_output.Dispose();
        if (layer.Owner is { } owner)
        {
            Training.GradientCheckpoint.Returned(owner, grad);
        }
        return [grad, null!];
    }
}
