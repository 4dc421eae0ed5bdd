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

    /// <summary>Rows <c>[first, first + count)</c> as views of this weight's storage (disposing them leaves this weight intact).</summary>
    public Int4Weight Rows(long first, long count) => new()
    {
        Packed = Packed.narrow(0, first, count),
        Scales = Scales.narrow(0, first, count),
        Zeros = Zeros.narrow(0, first, count),
        GroupSize = GroupSize,
    };

    /// <summary>The unpacked codes, uint8 <c>[out, in]</c>.</summary>
    public Tensor Codes()
    {
        using var scope = NewDisposeScope();
        var low = Packed.bitwise_and(15);
        var high = Packed.bitwise_right_shift(4);
        return stack([low, high], 2).reshape(OutFeatures, InFeatures).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The dense weight with <see cref="QuantizedTensor.Dequantize"/>'s arithmetic (fp32, then <paramref name="dtype"/>),
    /// written into one <paramref name="dtype"/> tensor a slice of rows at a time: the fp32 codes, zeros and scales of at
    /// most <paramref name="sliceBytes"/> exist at once, and zeros and scales broadcast over their group instead of
    /// being repeated to the full width. Taken over a whole 7B gate/up weight at once (22,016 × 4,096) the fp32
    /// pipeline held ~1.8 GB per prefill projection, which the caching allocator then kept reserved (docs/planner.md).
    /// </summary>
    public Tensor Dequantize(ScalarType dtype, long sliceBytes = DequantizeSliceBytes)
    {
        var rows = OutFeatures;
        var width = InFeatures;
        var groups = width / GroupSize;
        var dense = empty([rows, width], dtype, Packed.device);
        if (Packed.device_type == DeviceType.CUDA && dtype is ScalarType.BFloat16 or ScalarType.Float16 && GroupSize % 8 == 0
            && NativeKernelsV2.Available)
        {
            // One kernel, the same arithmetic and no fp32 temporaries (lowbit_kernels_v2.cu, int4_dequantize).
            NativeKernelsV2.Int4Dequantize(Packed, Scales, Zeros, GroupSize, dense);
            return dense;
        }
        var slice = Math.Max(1, Math.Min(rows, sliceBytes / (width * 4)));
        for (var first = 0L; first < rows; first += slice)
        {
            using var scope = NewDisposeScope();
            var count = Math.Min(slice, rows - first);
            var packed = Packed.narrow(0, first, count);
            var codes = stack([packed.bitwise_and(15), packed.bitwise_right_shift(4)], 2).view(count, groups, GroupSize).to(ScalarType.Float32);
            var zeros = Zeros.narrow(0, first, count).to(ScalarType.Float32).view(count, groups, 1);
            var scales = Scales.narrow(0, first, count).to(ScalarType.Float32).view(count, groups, 1);
            dense.narrow(0, first, count).copy_(codes.sub_(zeros).mul_(scales).view(count, width));
        }
        return dense;
    }

    /// <summary>The fp32 working set of one <see cref="Dequantize"/> slice (64 MiB: 4,096 rows of a 4,096-wide weight).</summary>
    public const long DequantizeSliceBytes = 64L << 20;

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
