using Lowbit.Engine.Protocol;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Quantization;

/// <summary>
/// Half-Quadratic Quantization options (Badri &amp; Shaji 2023; defaults from mobiusml/hqq).
/// <see cref="KappaUpdatesBeta"/>: true multiplies β by κ after every iteration as the blog and hqq v0.1.0 do;
/// false is the current hqq "legacy" solver, which reads κ but never applies it. We follow the blog (true).
/// </summary>
public sealed record HqqOptions
{
    public int Bits { get; init; } = 4;

    public int GroupSize { get; init; } = 64;

    /// <summary>1: groups of contiguous inputs of one output row (fused-kernel friendly); 0: groups of contiguous output rows of one input column.</summary>
    public int Axis { get; init; } = 1;

    /// <summary>The lp "norm" of the error model (p &lt; 1 promotes sparse outlier errors).</summary>
    public double P { get; init; } = 0.7;

    public double Beta { get; init; } = 10.0;

    public double Kappa { get; init; } = 1.01;

    public int Iterations { get; init; } = 20;

    public bool KappaUpdatesBeta { get; init; } = true;

    /// <summary>Round the initial zero-point to an integer before optimizing it (hqq does this for 4-bit).</summary>
    public bool RoundInitialZero { get; init; }

    /// <summary>The scale variant: also try a small grid of shrunken ranges per tensor and keep the lowest L1 error.</summary>
    public bool SearchScale { get; init; }
}

/// <summary>The outcome of the zero-point solver on a grouped matrix.</summary>
public sealed record HqqSolution(Tensor Zero, int Iterations, double Error);

/// <summary>HQQ: calibration-free optimisation of the zero-point by alternating closed-form updates.</summary>
public static class Hqq
{
    /// <summary>Quantizes a Linear weight <c>[out, in]</c>.</summary>
    public static QuantizedTensor Quantize(Tensor weight, HqqOptions options)
    {
        QuantizationChecks.Validate(weight, options.Bits, options.Axis == 1 ? options.GroupSize : 0);
        if (options.Axis is not (0 or 1))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.Axis, "HQQ axis must be 0 or 1");
        }
        // Weights may be parameters that require grad: no autograd graph may be recorded (it would pin every intermediate).
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        // Axis 0 groups run down the output dimension: quantize the transpose (groups along its rows).
        var source = options.Axis == 1 ? weight : weight.t();
        var groupSize = options.GroupSize == 0 ? (int)source.shape[1] : options.GroupSize;
        if (source.shape[1] % groupSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), groupSize, $"group size must divide {source.shape[1]}");
        }
        var w = source.to(ScalarType.Float32).reshape(-1, groupSize);
        var maxq = (1 << options.Bits) - 1;
        var shrinks = options.SearchScale ? new[] { 1.0, 0.95, 0.9, 0.85 } : new[] { 1.0 };
        Tensor? bestCodes = null;
        Tensor? bestScale = null;
        Tensor? bestZero = null;
        var bestError = double.PositiveInfinity;
        foreach (var shrink in shrinks)
        {
            var (sInv, zero0) = InitialScaleAndZero(w, maxq, shrink, options.RoundInitialZero);
            var solution = OptimizeZero(w, sInv, zero0, options);
            // Stored form: scale = 1/s_inv in fp16, zero in fp16; the codes are the rounding under the solved zero.
            var scale = sInv.reciprocal().to(ScalarType.Float16).to(ScalarType.Float32);
            var zero = solution.Zero.to(ScalarType.Float16).to(ScalarType.Float32);
            var codes = w.div(scale).add(zero, Scalars.One).round().clamp(Scalars.Of(0), Scalars.Of(maxq));
            var error = codes.sub(zero).mul(scale).sub(w).abs().mean().item<float>();
            if (error < bestError)
            {
                (bestCodes, bestScale, bestZero, bestError) = (codes, scale, zero, error);
            }
        }
        var rows = source.shape[0];
        var codesMatrix = bestCodes!.reshape(source.shape);
        var scales = bestScale!.reshape(rows, -1);
        var zeros = bestZero!.reshape(rows, -1);
        var q = options.Axis == 1
            ? QuantizedTensor.Create(QuantizationMethod.Hqq, options.Bits, groupSize, codesMatrix, scales, zeros)
            : QuantizedTensor.Create(QuantizationMethod.Hqq, options.Bits, groupSize, codesMatrix.t(), scales.t(), zeros.t(), axis: 0);
        return q.MoveToOuterDisposeScope();
    }

    /// <summary>Inverse scale and zero from each group's range, as hqq computes them.</summary>
    public static (Tensor InverseScale, Tensor Zero) InitialScaleAndZero(Tensor grouped, int maxq, double shrink = 1.0, bool roundZero = false)
    {
        using var scope = torch.NewDisposeScope();
        var min = grouped.amin([1], keepdim: true).mul(Scalars.Of(shrink));
        var max = grouped.amax([1], keepdim: true).mul(Scalars.Of(shrink));
        var range = max.sub(min);
        var sInv = torch.where(range.le(Scalars.Of(1e-4)), torch.ones_like(range), range.reciprocal().mul(Scalars.Of(maxq))).clamp_max(Scalars.Of(2e4));
        var zero = min.neg().mul(sInv);
        if (roundZero)
        {
            zero = zero.round();
        }
        return (sInv.MoveToOuterDisposeScope(), zero.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The half-quadratic zero-point solver on a grouped matrix <c>[groups, groupSize]</c> with inverse scales
    /// and initial zeros <c>[groups, 1]</c>; computes in the input's dtype. Each iteration: quantize, shrink the
    /// error with the generalized lp soft-threshold, re-solve the zero in closed form, optionally β ← κβ; stops as
    /// soon as the mean absolute reconstruction error (over the whole matrix, measured before that iteration's
    /// update) stops decreasing, keeping the zero of that last update (as hqq does).
    /// </summary>
    public static HqqSolution OptimizeZero(Tensor grouped, Tensor inverseScale, Tensor zero, HqqOptions options)
    {
        using var scope = torch.NewDisposeScope();
        var maxq = (1 << options.Bits) - 1;
        var beta = options.Beta;
        var z = zero.alias();
        var best = double.PositiveInfinity;
        var iterations = 0;
        for (var i = 0; i < options.Iterations; i++)
        {
            using var step = torch.NewDisposeScope();
            var wq = grouped.mul(inverseScale).add(z, Scalars.One).round().clamp(Scalars.Of(0), Scalars.Of(maxq));
            var wr = wq.sub(z).div(inverseScale);
            var residual = grouped.sub(wr);
            var we = Shrink(residual, beta, options.P);
            var newZero = wq.sub(grouped.sub(we).mul(inverseScale)).mean([1], keepdim: true);
            if (options.KappaUpdatesBeta)
            {
                beta *= options.Kappa;
            }
            var error = residual.abs().mean().to(ScalarType.Float64).item<double>();
            z = newZero.MoveToOuterDisposeScope();
            iterations = i + 1;
            if (error < best)
            {
                best = error;
            }
            else
            {
                break;
            }
        }
        return new HqqSolution(z.MoveToOuterDisposeScope(), iterations, best);
    }

    /// <summary>Generalized soft-threshold for the lp penalty: sign(x)·max(|x| − |x|^(p−1)/β, 0).</summary>
    private static Tensor Shrink(Tensor x, double beta, double p)
    {
        var ax = x.abs();
        return x.sign().mul(ax.sub(ax.pow(Scalars.Of(p - 1)).div(Scalars.Of(beta))).relu());
    }
}
