using Lowbit.Engine.Lora;
using Lowbit.Engine.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Decoding;

/// <summary>
/// A 4-bit group-wise weight <c>[out, in]</c> in our <c>lowbit</c> packing (BitPacking.PackBits: code 2j in the low
/// nibble of byte j, 2j+1 in the high nibble, row-major), with fp16 scales and zeros <c>[out, in/group]</c>:
/// <c>W[n, k] = (q[n, k] − zeros[n, k/group]) · scales[n, k/group]</c>, as <see cref="QuantizedTensor.Dequantize"/>.
/// </summary>
public sealed record Int4Weight : IDisposable
{
    /// <summary>uint8 <c>[out, in/2]</c>.</summary>
    public required Tensor Packed { get; init; }

    /// <summary>float16 <c>[out, in/group]</c>.</summary>
    public required Tensor Scales { get; init; }

    /// <summary>float16 <c>[out, in/group]</c>.</summary>
    public required Tensor Zeros { get; init; }

    public required int GroupSize { get; init; }

    public long OutFeatures => Packed.shape[0];

    public long InFeatures => Packed.shape[1] * 2;

    /// <summary>4-bit, groups along the input (axis 1) without act-order, group a multiple of 32 dividing the input width.</summary>
    public static bool IsEligible(QuantizedTensor q) =>
        q.Bits == 4 && q.Axis == 1 && q.GroupIndex is null && q.GroupSize % 32 == 0 && q.InFeatures % q.GroupSize == 0;

    public static Int4Weight From(QuantizedTensor q)
    {
        if (!IsEligible(q))
        {
            throw new ArgumentException($"not a packable 4-bit weight (bits {q.Bits}, axis {q.Axis}, group {q.GroupSize}, act-order {q.GroupIndex is not null})", nameof(q));
        }
        using var scope = NewDisposeScope();
        var pairs = q.Codes.view(q.OutFeatures, q.InFeatures / 2, 2).to(ScalarType.Int32);
        var packed = pairs.select(2, 0).bitwise_or(pairs.select(2, 1).bitwise_left_shift(4)).to(ScalarType.Byte).contiguous();
        var groups = q.InFeatures / q.GroupSize;
        return new Int4Weight
        {
            Packed = packed.MoveToOuterDisposeScope(),
            Scales = q.Scales.reshape(q.OutFeatures, groups).to(ScalarType.Float16).contiguous().MoveToOuterDisposeScope(),
            Zeros = q.Zeros.reshape(q.OutFeatures, groups).to(ScalarType.Float16).contiguous().MoveToOuterDisposeScope(),
            GroupSize = q.GroupSize,
        };
    }

    /// <summary>A 4-bit packed layer whose groups the int4 GEMV takes (a multiple of 32 dividing the input width).</summary>
    public static bool IsEligible(PackedQuantizedLinear layer) =>
        layer.Bits == 4 && layer.GroupSize % 32 == 0 && layer.InFeatures % layer.GroupSize == 0;

    /// <summary>
    /// The rows of <paramref name="layers"/> (4-bit <see cref="PackedQuantizedLinear"/>s, whose packing is this one) as one
    /// weight, without a second copy: several layers are concatenated once and each layer then keeps views of the
    /// concatenation (<see cref="PackedQuantizedLinear.ShareStorage"/>), its own storage released; one layer is aliased.
    /// </summary>
    public static Int4Weight Share(IReadOnlyList<PackedQuantizedLinear> layers)
    {
        if (layers.Count == 0 || layers.Any(l => !IsEligible(l) || l.GroupSize != layers[0].GroupSize || l.InFeatures != layers[0].InFeatures))
        {
            throw new ArgumentException("int4 parts need 4-bit codes, one input width and one group size (a multiple of 32)", nameof(layers));
        }
        using var scope = NewDisposeScope();
        static Tensor Half(Tensor t) => t.dtype == ScalarType.Float16 ? t.alias() : t.to(ScalarType.Float16);
        if (layers.Count == 1)
        {
            var only = layers[0];
            return new Int4Weight
            {
                Packed = only.Packed.alias().MoveToOuterDisposeScope(),
                Scales = Half(only.Scales).MoveToOuterDisposeScope(),
                Zeros = Half(only.Zeros).MoveToOuterDisposeScope(),
                GroupSize = only.GroupSize,
            };
        }
        var result = new Int4Weight
        {
            Packed = cat(layers.Select(l => l.Packed).ToArray(), 0).MoveToOuterDisposeScope(),
            Scales = cat(layers.Select(l => Half(l.Scales)).ToArray(), 0).MoveToOuterDisposeScope(),
            Zeros = cat(layers.Select(l => Half(l.Zeros)).ToArray(), 0).MoveToOuterDisposeScope(),
            GroupSize = layers[0].GroupSize,
        };
        var row = 0L;
        foreach (var layer in layers)
        {
            var rows = layer.OutFeatures;
            if (layer.Scales.dtype == ScalarType.Float16 && layer.Zeros.dtype == ScalarType.Float16)
            {
                layer.ShareStorage(result.Packed.narrow(0, row, rows), result.Scales.narrow(0, row, rows), result.Zeros.narrow(0, row, rows));
            }
            row += rows;
        }
        return result;
    }

    /// <summary>Rows of <paramref name="parts"/> stacked (same input width and group); the parts are disposed.</summary>
    public static Int4Weight Concat(IReadOnlyList<Int4Weight> parts)
    {
        if (parts.Count == 1)
        {
            return parts[0];
        }
        if (parts.Any(p => p.GroupSize != parts[0].GroupSize || p.InFeatures != parts[0].InFeatures))
        {
            throw new ArgumentException("fused int4 parts need one input width and one group size", nameof(parts));
        }
        var result = new Int4Weight
        {
            Packed = cat(parts.Select(p => p.Packed).ToArray(), 0),
            Scales = cat(parts.Select(p => p.Scales).ToArray(), 0),
            Zeros = cat(parts.Select(p => p.Zeros).ToArray(), 0),
            GroupSize = parts[0].GroupSize,
        };
        foreach (var p in parts)
        {
            p.Dispose();
        }
        return result;
    }

    /// <summary>The unpacked codes, uint8 <c>[out, in]</c>.</summary>
    public Tensor Codes()
    {
        using var scope = NewDisposeScope();
        var low = Packed.bitwise_and(15);
        var high = Packed.bitwise_right_shift(4);
        return stack([low, high], 2).reshape(OutFeatures, InFeatures).MoveToOuterDisposeScope();
    }

    /// <summary>The dense weight with <see cref="QuantizedTensor.Dequantize"/>'s arithmetic (fp32, then <paramref name="dtype"/>).</summary>
    public Tensor Dequantize(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var scales = Scales.to(ScalarType.Float32).repeat_interleave(GroupSize, 1);
        var zeros = Zeros.to(ScalarType.Float32).repeat_interleave(GroupSize, 1);
        return Codes().to(ScalarType.Float32).sub(zeros).mul(scales).to(dtype).MoveToOuterDisposeScope();
    }

    public Int4Weight MoveToOuterDisposeScope()
    {
        Packed.MoveToOuterDisposeScope();
        Scales.MoveToOuterDisposeScope();
        Zeros.MoveToOuterDisposeScope();
        return this;
    }

    public void Dispose()
    {
        Packed.Dispose();
        Scales.Dispose();
        Zeros.Dispose();
    }
}
