using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Quantization;

/// <summary>Mixed-precision allocation options: meet <see cref="TargetBitsPerWeight"/> on average, counting scale/zero overhead.</summary>
public sealed record MixedPrecisionOptions
{
    public required double TargetBitsPerWeight { get; init; }

    /// <summary>Widths a layer may get.</summary>
    public IReadOnlyList<int> Candidates { get; init; } = [2, 3, 4, 8];

    /// <summary>Inputs per group (0 = per output row); sets the overhead of an fp16 scale and zero per group.</summary>
    public int GroupSize { get; init; } = 64;
}

/// <summary>One layer's sensitivity: its size and the reconstruction error it would have at each candidate width.</summary>
public sealed record LayerSensitivity(string Name, long OutFeatures, long InFeatures, IReadOnlyDictionary<int, double> ErrorAtBits)
{
    public long Parameters => OutFeatures * InFeatures;
}

/// <summary>The chosen width per layer and the resulting average bits per weight.</summary>
public sealed record BitAllocation(IReadOnlyDictionary<string, int> BitsByLayer, double BitsPerWeight, double TotalError)
{
    /// <summary>A compact layout string, e.g. <c>2:12,3:4,4:8</c> (width: number of layers).</summary>
    public string Layout => string.Join(",", BitsByLayer.Values.GroupBy(b => b).OrderBy(g => g.Key).Select(g => $"{g.Key}:{g.Count()}"));
}

/// <summary>
/// Allocates widths to layers to minimise the summed error under a bit budget: everyone starts at the narrowest
/// width, then the upgrade with the largest error reduction per extra bit that still fits is applied, repeatedly
/// (a greedy knapsack on the convex hull of each layer's error curve).
/// </summary>
public static class BitAllocator
{
    /// <summary>Storage bits per weight of a width with fp16 scale and zero per group.</summary>
    public static double BitsPerWeight(int bits, int groupSize, long inFeatures) =>
        bits + 32.0 / (groupSize == 0 ? inFeatures : groupSize);

    public static BitAllocation Allocate(IReadOnlyList<LayerSensitivity> layers, MixedPrecisionOptions options)
    {
        var candidates = options.Candidates.Order().ToArray();
        var total = layers.Sum(l => (double)l.Parameters);
        var budget = options.TargetBitsPerWeight * total;
        double Cost(LayerSensitivity l, int bits) => BitsPerWeight(bits, options.GroupSize, l.InFeatures) * l.Parameters;

        var chosen = layers.ToDictionary(l => l.Name, _ => candidates[0], StringComparer.Ordinal);
        var used = layers.Sum(l => Cost(l, candidates[0]));
        if (used > budget * (1 + 1e-12))
        {
            var minimum = used / total;
            throw new ArgumentOutOfRangeException(nameof(options), options.TargetBitsPerWeight,
                $"--target-bpw {options.TargetBitsPerWeight} is below the minimum {minimum:F3} for {candidates[0]}-bit with group size {options.GroupSize}");
        }
        while (true)
        {
            LayerSensitivity? bestLayer = null;
            var bestBits = 0;
            var bestRatio = 0.0;
            foreach (var layer in layers)
            {
                var current = chosen[layer.Name];
                foreach (var bits in candidates.Where(b => b > current))
                {
                    var extra = Cost(layer, bits) - Cost(layer, current);
                    if (used + extra > budget * (1 + 1e-12))
                    {
                        continue;
                    }
                    var gain = layer.ErrorAtBits[current] - layer.ErrorAtBits[bits];
                    var ratio = gain / extra;
                    if (ratio > bestRatio)
                    {
                        (bestLayer, bestBits, bestRatio) = (layer, bits, ratio);
                    }
                }
            }
            if (bestLayer is null)
            {
                break;
            }
            used += Cost(bestLayer, bestBits) - Cost(bestLayer, chosen[bestLayer.Name]);
            chosen[bestLayer.Name] = bestBits;
        }
        var error = layers.Sum(l => l.ErrorAtBits[chosen[l.Name]]);
        return new BitAllocation(chosen, used / total, error);
    }

    /// <summary>
    /// Measures a layer's error at each width with <paramref name="quantize"/>: the output-error proxy
    /// Σₖ H_kk·‖W[:,k] − Ŵ[:,k]‖² when the Hessian diagonal (mean input energy per channel) is known, else ‖W − Ŵ‖².
    /// </summary>
    public static LayerSensitivity Measure(string name, Tensor weight, Tensor? hessianDiagonal, IEnumerable<int> candidates, Func<Tensor, int, QuantizedTensor> quantize)
    {
        var errors = new Dictionary<int, double>();
        foreach (var bits in candidates)
        {
            using var scope = torch.NewDisposeScope();
            using var q = quantize(weight, bits);
            var diff = weight.to(ScalarType.Float32).sub(q.Dequantize()).pow(Scalars.Of(2));   // not square(): see ModelQuantizer
            var perColumn = diff.sum([0]);
            errors[bits] = (hessianDiagonal is null ? perColumn.sum() : perColumn.mul(hessianDiagonal.to(perColumn.device)).sum()).to(ScalarType.Float64).item<double>();
        }
        return new LayerSensitivity(name, weight.shape[0], weight.shape[1], errors);
    }
}
