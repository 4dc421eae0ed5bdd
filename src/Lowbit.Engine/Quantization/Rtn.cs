using Lowbit.Engine.Protocol;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Quantization;

/// <summary>Round-to-nearest options: asymmetric group-wise min-max, or symmetric (zero fixed at the code midpoint).</summary>
public sealed record RtnOptions
{
    public int Bits { get; init; } = 4;

    /// <summary>Inputs per group; 0 means one group per output row (per-channel).</summary>
    public int GroupSize { get; init; } = 64;

    /// <summary>Symmetric: range ±max|w|, zero = 2^(bits−1); the int8 per-channel scheme uses this.</summary>
    public bool Symmetric { get; init; }

    /// <summary>Asymmetric zero-points stay within 1..2^bits−1, the range GPTQ v1 <c>qzeros</c> (which store zero−1)
    /// hold so that every GPTQ reader agrees; a group with no negative weight gets zero 1 and a scale widened to fit.</summary>
    public bool RepresentableZeros { get; init; }

    /// <summary>The symmetric int8 per-channel scheme.</summary>
    public static RtnOptions Int8PerChannel { get; } = new() { Bits = 8, GroupSize = 0, Symmetric = true };
}

/// <summary>Round-to-nearest quantization: scale and zero from each group's min and max, codes by rounding.</summary>
public static class Rtn
{
    /// <summary>Quantizes a Linear weight <c>[out, in]</c>.</summary>
    public static QuantizedTensor Quantize(Tensor weight, RtnOptions options)
    {
        QuantizationChecks.Validate(weight, options.Bits, options.GroupSize);
        // Weights may be parameters that require grad: no autograd graph may be recorded (it would pin every intermediate).
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var groupSize = options.GroupSize == 0 ? (int)weight.shape[1] : options.GroupSize;
        var w = weight.to(ScalarType.Float32).reshape(-1, groupSize);
        var maxq = (1 << options.Bits) - 1;
        Tensor scale;
        Tensor zero;
        if (options.Symmetric)
        {
            var amax = w.abs().amax([1], keepdim: true).clamp_min(Scalars.Of(1e-8));
            scale = amax.mul(Scalars.Of(2.0 / maxq));
            zero = torch.full_like(scale, Scalars.Of((maxq + 1) / 2.0));
        }
        else
        {
            // The range includes 0, so the integer zero-point lies within the codes (an all-positive group would
            // otherwise get zero 0 and its largest weights clipped).
            var min = w.amin([1], keepdim: true).clamp_max(Scalars.Of(0));
            var max = w.amax([1], keepdim: true).clamp_min(Scalars.Of(0));
            scale = max.sub(min).div(Scalars.Of(maxq)).clamp_min(Scalars.Of(1e-8));
            zero = min.neg().div(scale).round().clamp(Scalars.Of(0), Scalars.Of(maxq));
            if (options.RepresentableZeros)
            {
                (scale, zero) = ZeroPoints.FromOne(scale, zero, max, maxq);
            }
        }
        // Scales/zeros are stored as fp16: quantize against the stored values.
        scale = scale.to(ScalarType.Float16).to(ScalarType.Float32);
        var codes = w.div(scale).round().add(zero, Scalars.One).clamp(Scalars.Of(0), Scalars.Of(maxq));
        var rows = weight.shape[0];
        var q = QuantizedTensor.Create(QuantizationMethod.Rtn, options.Bits, groupSize, codes.reshape(weight.shape), scale.reshape(rows, -1), zero.reshape(rows, -1));
        return q.MoveToOuterDisposeScope();
    }
}

internal static class ZeroPoints
{
    /// <summary>Groups whose zero-point rounds below 1 (no weight below −scale/2) get zero 1 and a scale that
    /// still reaches their maximum: max / (maxq − 1). Others are unchanged.</summary>
    public static (Tensor Scale, Tensor Zero) FromOne(Tensor scale, Tensor zero, Tensor max, int maxq)
    {
        var low = zero.lt(Scalars.Of(1));
        var widened = max.div(Scalars.Of(maxq - 1)).clamp_min(Scalars.Of(1e-8));
        return (torch.where(low, widened, scale), torch.where(low, torch.ones_like(zero), zero));
    }
}

internal static class QuantizationChecks
{
    public static void Validate(Tensor weight, int bits, int groupSize)
    {
        if (weight.dim() != 2)
        {
            throw new ArgumentException($"expected a 2-D Linear weight [out, in], got shape [{string.Join(", ", weight.shape)}]", nameof(weight));
        }
        if (bits is not (2 or 3 or 4 or 8))
        {
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "bits must be one of 2, 3, 4, 8");
        }
        if (groupSize < 0 || (groupSize > 0 && weight.shape[1] % groupSize != 0))
        {
            throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, $"group size must divide the input width {weight.shape[1]} (or be 0 for per-channel)");
        }
    }
}
