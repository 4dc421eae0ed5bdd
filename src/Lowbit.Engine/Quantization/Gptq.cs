using Lowbit.Engine.Protocol;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Quantization;

/// <summary>GPTQ options (defaults from AutoGPTQ except <see cref="Symmetric"/>, which is off: asymmetric is more accurate).</summary>
public sealed record GptqOptions
{
    public int Bits { get; init; } = 4;

    /// <summary>Inputs per group; 0 means one group per output row.</summary>
    public int GroupSize { get; init; } = 128;

    /// <summary>λ = DampPercent · mean(diag H) added to the Hessian diagonal.</summary>
    public double DampPercent { get; init; } = 0.01;

    /// <summary>Columns per lazy batch update.</summary>
    public int BlockSize { get; init; } = 128;

    /// <summary>Quantize columns in order of decreasing Hessian diagonal (AutoGPTQ desc_act); records g_idx.</summary>
    public bool ActOrder { get; init; }

    public bool Symmetric { get; init; }

    /// <summary>Asymmetric zero-points within 1..2^bits−1 (GPTQ v1 qzeros store zero−1); see <see cref="RtnOptions.RepresentableZeros"/>.</summary>
    public bool RepresentableZeros { get; init; }
}

/// <summary>
/// The running mean of 2·X·Xᵀ over calibration inputs of one Linear layer (AutoGPTQ add_batch): with m new samples,
/// H ← H·n/(n+m), n ← n+m, H ← H + (2/n)·XᵀX. A sample is one row of the leading dimension of what is added.
/// </summary>
public sealed class HessianAccumulator : IDisposable
{
    private Tensor _hessian;

    public HessianAccumulator(long inFeatures, Device? device = null)
    {
        _hessian = torch.zeros(inFeatures, inFeatures, dtype: ScalarType.Float32, device: device);
    }

    public long Samples { get; private set; }

    public Tensor Hessian => _hessian;

    /// <summary>Adds inputs <c>[batch, in]</c> or <c>[batch, tokens, in]</c>.</summary>
    public void Add(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        var m = input.dim() == 2 ? 1 : input.shape[0];
        var x = input.reshape(-1, input.shape[^1]).to(ScalarType.Float32).to(_hessian.device);
        _hessian.mul_(Scalars.Of((double)Samples / (Samples + m)));
        Samples += m;
        x = x.mul(Scalars.Of(Math.Sqrt(2.0 / Samples)));
        _hessian.add_(x.t().matmul(x), Scalars.One);
    }

    public void Dispose() => _hessian.Dispose();
}

/// <summary>
/// GPTQ (Frantar et al. 2023) as AutoGPTQ implements it: column-by-column quantization with the quantization error
/// of each column pushed onto the not-yet-quantized columns through the upper Cholesky factor of H⁻¹, in blocks
/// with lazy batch updates.
/// </summary>
public static class Gptq
{
    public static QuantizedTensor Quantize(Tensor weight, Tensor hessian, GptqOptions options)
    {
        QuantizationChecks.Validate(weight, options.Bits, options.GroupSize);
        // Weights may be parameters that require grad: no autograd graph may be recorded (it would pin every intermediate).
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var columns = weight.shape[1];
        var rows = weight.shape[0];
        var groupSize = options.GroupSize == 0 ? (int)columns : options.GroupSize;
        var maxq = (1 << options.Bits) - 1;
        var w = weight.to(ScalarType.Float32).clone();
        var h = hessian.to(ScalarType.Float32).to(w.device).clone();

        var dead = h.diagonal().eq(Scalars.Of(0));
        h.diagonal().masked_fill_(dead, Scalars.Of(1));
        w.masked_fill_(dead.unsqueeze(0), Scalars.Of(0));

        Tensor? perm = null;
        if (options.ActOrder)
        {
            perm = h.diagonal().argsort(descending: true);
            w = w.index_select(1, perm);
            h = h.index_select(0, perm).index_select(1, perm);
        }

        var damp = options.DampPercent * h.diagonal().mean().item<float>();
        h.diagonal().add_(Scalars.Of(damp), Scalars.One);
        var hinv = CholeskyOfInverseUpper(h);

        var codes = torch.zeros(rows, columns, dtype: ScalarType.Float32, device: w.device);
        var scales = new List<Tensor>();
        var zeros = new List<Tensor>();
        Tensor scale;
        Tensor zero;
        Tensor scaleColumn = null!;
        Tensor zeroColumn = null!;
        for (long i1 = 0; i1 < columns; i1 += options.BlockSize)
        {
            using var block = torch.NewDisposeScope();
            var i2 = Math.Min(i1 + options.BlockSize, columns);
            var count = i2 - i1;
            var w1 = w[.., (int)i1..(int)i2].clone();
            var err1 = torch.zeros_like(w1);
            var hinv1 = hinv[(int)i1..(int)i2, (int)i1..(int)i2];
            var diagonal = hinv1.diagonal().to(ScalarType.Float64).cpu().data<double>().ToArray();
            for (long i = 0; i < count; i++)
            {
                var column = i1 + i;
                if (column % groupSize == 0)
                {
                    // Group parameters from the current, error-corrected weights of this group.
                    var end = column + groupSize;
                    var group = end <= i2
                        ? w1[.., (int)i..(int)(i + groupSize)]
                        : torch.cat([w1[.., (int)i..], w[.., (int)i2..(int)end]], 1);
                    (scale, zero) = GroupParameters(group, maxq, options.Symmetric, options.RepresentableZeros);
                    // Keep them past this block: a group may straddle blocks, and the scales are collected at the end.
                    scales.Add(scale.MoveToOuterDisposeScope());
                    zeros.Add(zero.MoveToOuterDisposeScope());
                    scaleColumn = scale.squeeze(1).MoveToOuterDisposeScope();
                    zeroColumn = zero.squeeze(1).MoveToOuterDisposeScope();
                }
                using var step = torch.NewDisposeScope();
                var wi = w1[.., (int)i];
                var qi = wi.div(scaleColumn).round_().add_(zeroColumn, Scalars.One).clamp_(Scalars.Of(0), Scalars.Of(maxq));
                codes[.., (int)column].copy_(qi);
                // err = (w − dequant(q)) / Hinv_ii, then W1[:, i:] −= err ⊗ Hinv[i, i:]
                var err = wi.sub(qi.sub_(zeroColumn).mul_(scaleColumn)).div_(Scalars.Of(diagonal[i]));
                w1[.., (int)i..].addr_(err, hinv1[(int)i, (int)i..], beta: 1, alpha: -1);
                err1[.., (int)i].copy_(err);
            }
            if (i2 < columns)
            {
                w[.., (int)i2..].sub_(err1.matmul(hinv[(int)i1..(int)i2, (int)i2..]));
            }
        }

        var scaleMatrix = torch.cat(scales, 1);
        var zeroMatrix = torch.cat(zeros, 1);
        Tensor? groupIndex = null;
        if (perm is not null)
        {
            var inverse = perm.argsort();
            codes = codes.index_select(1, inverse);
            // Group of input column perm[j] is j / groupSize (processing order).
            var processingGroup = torch.arange(Scalars.Of(0), Scalars.Of(columns), Scalars.One, dtype: ScalarType.Int64, device: w.device).div(Scalars.Of(groupSize), rounding_mode: RoundingMode.floor);
            groupIndex = processingGroup.index_select(0, inverse);
        }
        var q = QuantizedTensor.Create(QuantizationMethod.Gptq, options.Bits, groupSize, codes, scaleMatrix, zeroMatrix, groupIndex);
        return q.MoveToOuterDisposeScope();
    }

    /// <summary>Upper-triangular U with H⁻¹ = Uᵀ·U: Cholesky of H, inverse from the factor, Cholesky (upper) of that.</summary>
    internal static Tensor CholeskyOfInverseUpper(Tensor h)
    {
        using var scope = torch.NewDisposeScope();
        var l = torch.linalg.cholesky(h);
        var inverse = torch.cholesky_inverse(l);
        var upper = torch.linalg.cholesky(inverse).t().contiguous();
        return upper.MoveToOuterDisposeScope();
    }

    /// <summary>AutoGPTQ's min-max quantizer parameters: range widened to include 0; symmetric zero at the midpoint.
    /// The scale is rounded to fp16 (how it is stored) before codes are formed.</summary>
    internal static (Tensor Scale, Tensor Zero) GroupParameters(Tensor group, int maxq, bool symmetric, bool representableZeros = false)
    {
        using var scope = torch.NewDisposeScope();
        var xmin = group.amin([1], keepdim: true).clamp_max(Scalars.Of(0));
        var xmax = group.amax([1], keepdim: true).clamp_min(Scalars.Of(0));
        Tensor scale;
        Tensor zero;
        if (symmetric)
        {
            xmax = torch.maximum(xmin.abs(), xmax);
            var both = xmax.eq(Scalars.Of(0));
            xmax = xmax.masked_fill(both, Scalars.Of(1));
            scale = xmax.mul(Scalars.Of(2.0 / maxq));
            zero = torch.full_like(scale, Scalars.Of((maxq + 1) / 2));
        }
        else
        {
            var both = xmin.eq(Scalars.Of(0)).logical_and(xmax.eq(Scalars.Of(0)));
            xmin = xmin.masked_fill(both, Scalars.Of(-1));
            xmax = xmax.masked_fill(both, Scalars.Of(1));
            scale = xmax.sub(xmin).div(Scalars.Of(maxq));
            zero = xmin.neg().div(scale).round();
            if (representableZeros)
            {
                (scale, zero) = ZeroPoints.FromOne(scale, zero, xmax, maxq);
            }
        }
        scale = scale.to(ScalarType.Float16).to(ScalarType.Float32);
        return (scale.MoveToOuterDisposeScope(), zero.MoveToOuterDisposeScope());
    }
}
