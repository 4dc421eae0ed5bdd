using Lowbit.Engine.Protocol;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Quantization;

/// <summary>
/// A group-wise affine quantized Linear weight <c>[out, in]</c>: <c>W[n, k] ≈ (codes[n, k] − zeros[n, g]) · scales[n, g]</c>
/// with <c>g = groupIndex[k]</c> (or <c>k / groupSize</c> when no group index is given). Codes are unpacked
/// uint8 in <c>[0, 2^bits − 1]</c>; scales and zeros are float32 holding fp16-representable values, so the
/// tensor survives a round trip through any of our fp16 file layouts exactly.
/// </summary>
public sealed record QuantizedTensor : IDisposable
{
    public required QuantizationMethod Method { get; init; }

    public required int Bits { get; init; }

    /// <summary>Inputs per group; equals the input width for per-channel quantization.</summary>
    public required int GroupSize { get; init; }

    /// <summary>1: a group is <see cref="GroupSize"/> consecutive inputs of one output row (scales <c>[out, in/g]</c>);
    /// 0 (HQQ only): a group is <see cref="GroupSize"/> consecutive output rows of one input column (scales <c>[out/g, in]</c>).</summary>
    public int Axis { get; init; } = 1;

    /// <summary>uint8 <c>[out, in]</c>.</summary>
    public required Tensor Codes { get; init; }

    /// <summary>float32 <c>[out, groups]</c> (axis 1) or <c>[groups, in]</c> (axis 0).</summary>
    public required Tensor Scales { get; init; }

    /// <summary>float32 <c>[out, groups]</c>, possibly fractional (HQQ).</summary>
    public required Tensor Zeros { get; init; }

    /// <summary>int64 <c>[in]</c>: group of each input column (GPTQ act-order); null means <c>k / GroupSize</c>.</summary>
    public Tensor? GroupIndex { get; init; }

    public long OutFeatures => Codes.shape[0];

    public long InFeatures => Codes.shape[1];

    /// <summary>Number of (scale, zero) pairs.</summary>
    public long GroupCount => Scales.NumberOfElements;

    /// <summary>Storage bits per weight: the codes plus an fp16 scale and an fp16 zero per group (and the g_idx if any).</summary>
    public double BitsPerWeight => (double)StorageBytes * 8 / (OutFeatures * InFeatures);

    /// <summary>Bytes the packed representation occupies (codes bit-packed, fp16 scales and zeros, int32 g_idx).</summary>
    public long StorageBytes => (OutFeatures * InFeatures * Bits + 7) / 8 + 4 * GroupCount + (GroupIndex is null ? 0 : 4 * InFeatures);

    /// <summary>The column → group map, materialised (int64 <c>[in]</c>) on the codes' device.</summary>
    public Tensor GroupMap()
    {
        if (GroupIndex is not null)
        {
            return GroupIndex.alias();
        }
        return torch.arange(Scalars.Of(0), Scalars.Of(InFeatures), Scalars.One, dtype: ScalarType.Int64, device: Codes.device).div(Scalars.Of(GroupSize), rounding_mode: RoundingMode.floor);
    }

    /// <summary>The dequantized weight <c>[out, in]</c> in <paramref name="dtype"/> (float32 by default).</summary>
    public Tensor Dequantize(ScalarType dtype = ScalarType.Float32)
    {
        using var scope = torch.NewDisposeScope();
        if (Axis == 0)
        {
            var s0 = Scales.repeat_interleave(GroupSize, 0);
            var z0 = Zeros.repeat_interleave(GroupSize, 0);
            return Codes.to(ScalarType.Float32).sub(z0).mul(s0).to(dtype).MoveToOuterDisposeScope();
        }
        using var map = GroupMap();
        var scales = Scales.index_select(1, map);
        var zeros = Zeros.index_select(1, map);
        var w = Codes.to(ScalarType.Float32).sub(zeros).mul(scales).to(dtype);
        return w.MoveToOuterDisposeScope();
    }

    /// <summary>Builds a tensor, rounding scales and zeros to fp16 precision (they are stored as fp16).</summary>
    public static QuantizedTensor Create(QuantizationMethod method, int bits, int groupSize, Tensor codes, Tensor scales, Tensor zeros, Tensor? groupIndex = null, int axis = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bits, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, 8);
        return new QuantizedTensor
        {
            Method = method,
            Bits = bits,
            GroupSize = groupSize,
            Axis = axis,
            Codes = codes.detach().to(ScalarType.Byte).contiguous(),
            Scales = RoundToHalf(scales),
            Zeros = RoundToHalf(zeros),
            GroupIndex = groupIndex?.detach().to(ScalarType.Int64).contiguous(),
        };
    }

    /// <summary>Moves all tensors out of the current dispose scope.</summary>
    public QuantizedTensor MoveToOuterDisposeScope()
    {
        Codes.MoveToOuterDisposeScope();
        Scales.MoveToOuterDisposeScope();
        Zeros.MoveToOuterDisposeScope();
        GroupIndex?.MoveToOuterDisposeScope();
        return this;
    }

    /// <summary>Detaches all tensors from every dispose scope: the caller owns them (dispose this record).</summary>
    public QuantizedTensor DetachFromDisposeScope()
    {
        Codes.DetachFromDisposeScope();
        Scales.DetachFromDisposeScope();
        Zeros.DetachFromDisposeScope();
        GroupIndex?.DetachFromDisposeScope();
        return this;
    }

    /// <summary>A copy of this tensor on <paramref name="device"/>.</summary>
    public QuantizedTensor To(Device device) => this with
    {
        Codes = Codes.to(device),
        Scales = Scales.to(device),
        Zeros = Zeros.to(device),
        GroupIndex = GroupIndex?.to(device),
    };

    public void Dispose()
    {
        Codes.Dispose();
        Scales.Dispose();
        Zeros.Dispose();
        GroupIndex?.Dispose();
    }

    private static Tensor RoundToHalf(Tensor t) => t.detach().to(ScalarType.Float16).to(ScalarType.Float32).contiguous();
}
