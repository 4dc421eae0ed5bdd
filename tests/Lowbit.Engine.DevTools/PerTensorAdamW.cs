using Lowbit.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.DevTools;

/// <summary>
/// The reference AdamW: the engine's update before the flat buffers (main until 2026-12-05), one tensor at a time,
/// PyTorch's rule (decoupled weight decay; m, v; bias-corrected step; clipping by the global norm of the per-tensor
/// norms). Kept outside the engine for the equivalence tests (<c>FlatAdamWTests</c>) and for <c>bench-finetune
/// --optimizer-only</c>, which times both on the same shapes.
/// </summary>
public sealed class PerTensorAdamW : IDisposable
{
    private readonly IReadOnlyList<Tensor> _parameters;
    private readonly List<(Tensor M, Tensor V)> _state = [];

    public PerTensorAdamW(IReadOnlyList<Tensor> parameters, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0)
    {
        _parameters = parameters;
        (Beta1, Beta2, Eps, WeightDecay) = (beta1, beta2, eps, weightDecay);
        foreach (var p in parameters)
        {
            _state.Add((zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope()));
        }
    }

    public double Beta1 { get; }

    public double Beta2 { get; }

    public double Eps { get; }

    public double WeightDecay { get; }

    public long Steps { get; private set; }

    /// <summary>The first and second moments of parameter <paramref name="index"/>.</summary>
    public (Tensor M, Tensor V) State(int index) => _state[index];

    public Tensor ClipGradNorm(double maxNorm)
    {
        using var scope = NewDisposeScope();
        var grads = _parameters.Select(p => p.grad).OfType<Tensor>().ToList();
        if (grads.Count == 0)
        {
            return zeros(1).MoveToOuterDisposeScope();
        }
        var norm = stack(grads.Select(g => g.to(ScalarType.Float32).norm()).ToArray()).norm();
        if (maxNorm > 0)
        {
            using var epsilon = 1e-6.ToScalar();
            using var max = maxNorm.ToScalar();
            using var one = 1.0.ToScalar();
            var coefficient = norm.add(epsilon, Scalars.One).reciprocal().mul(max).clamp_max(one);
            using var noGrad = no_grad();
            foreach (var g in grads)
            {
                g.mul_(coefficient.to(g.dtype));
            }
        }
        return norm.MoveToOuterDisposeScope();
    }

    public void Step(double learningRate)
    {
        Steps++;
        var bias1 = 1 - Math.Pow(Beta1, Steps);
        var bias2 = 1 - Math.Pow(Beta2, Steps);
        using var noGrad = no_grad();
        using var decay = (1 - learningRate * WeightDecay).ToScalar();
        using var beta1 = Beta1.ToScalar();
        using var oneMinusBeta1 = (1 - Beta1).ToScalar();
        using var beta2 = Beta2.ToScalar();
        using var oneMinusBeta2 = (1 - Beta2).ToScalar();
        using var sqrtBias2 = Math.Sqrt(bias2).ToScalar();
        using var eps = Eps.ToScalar();
        using var stepSize = (-learningRate / bias1).ToScalar();
        for (var i = 0; i < _parameters.Count; i++)
        {
            var p = _parameters[i];
            if (p.grad is not { } g)
            {
                continue;
            }
            using var scope = NewDisposeScope();
            var (m, v) = _state[i];
            if (WeightDecay > 0)
            {
                p.mul_(decay);
            }
            m.mul_(beta1).add_(g, alpha: oneMinusBeta1);
            v.mul_(beta2).addcmul_(g, g, value: oneMinusBeta2);
            var denom = v.sqrt().div_(sqrtBias2).add_(eps, Scalars.One);
            p.addcdiv_(m, denom, value: stepSize);
        }
    }

    public void ZeroGrad()
    {
        foreach (var p in _parameters)
        {
            if (p.grad is { } g)
            {
                g.zero_();
            }
        }
    }

    public void Dispose()
    {
        foreach (var (m, v) in _state)
        {
            m.Dispose();
            v.Dispose();
        }
    }
}
