using Lowbit.Engine.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Training;

/// <summary>
/// AdamW (decoupled weight decay, PyTorch's update rule) over named float32 parameters, with its moments held as
/// plain tensors so a checkpoint stores them exactly (<c>optimizer.safetensors</c>). Gradient clipping by the global
/// norm stays on the device (no host synchronisation).
/// </summary>
public sealed class AdamW : IDisposable
{
    private readonly IReadOnlyList<(string Name, Tensor Parameter)> _parameters;
    private readonly Dictionary<string, (Tensor M, Tensor V)> _state = new(StringComparer.Ordinal);

    public AdamW(IReadOnlyList<(string Name, Tensor Parameter)> parameters, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0)
    {
        _parameters = parameters;
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
        foreach (var (name, p) in parameters)
        {
            _state[name] = (zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope());
        }
    }

    public double Beta1 { get; }

    public double Beta2 { get; }

    public double Eps { get; }

    public double WeightDecay { get; }

    /// <summary>Optimizer steps taken.</summary>
    public long Steps { get; private set; }

    /// <summary>Scales all gradients so their global L2 norm is at most <paramref name="maxNorm"/>; returns the norm (a device tensor).</summary>
    public Tensor ClipGradNorm(double maxNorm)
    {
        using var scope = NewDisposeScope();
        var grads = _parameters.Select(p => p.Parameter.grad).OfType<Tensor>().ToList();
        if (grads.Count == 0)
        {
            return zeros(1).MoveToOuterDisposeScope();
        }
        var norm = stack(grads.Select(g => g.to(ScalarType.Float32).norm()).ToArray()).norm();
        if (maxNorm > 0)
        {
            using var epsilon = 1e-6.ToScalar();   // held: see Step
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
        // Explicit scalars held to the end of the step: an implicit double→Scalar temporary can be finalized by the
        // GC while the native call still reads it (seen as libtorch "Scalar.h" assertions under parallel tests).
        using var decay = (1 - learningRate * WeightDecay).ToScalar();
        using var beta1 = Beta1.ToScalar();
        using var oneMinusBeta1 = (1 - Beta1).ToScalar();
        using var beta2 = Beta2.ToScalar();
        using var oneMinusBeta2 = (1 - Beta2).ToScalar();
        using var sqrtBias2 = Math.Sqrt(bias2).ToScalar();
        using var eps = Eps.ToScalar();
        using var stepSize = (-learningRate / bias1).ToScalar();
        foreach (var (name, p) in _parameters)
        {
            if (p.grad is not { } g)
            {
                continue;
            }
            using var scope = NewDisposeScope();
            var (m, v) = _state[name];
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
        foreach (var (_, p) in _parameters)
        {
            if (p.grad is { } g)
            {
                g.zero_();
            }
        }
    }

    public void Save(string path)
    {
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (name, (m, v)) in _state)
        {
            tensors.Add(new(name + ".exp_avg", m.cpu()));
            tensors.Add(new(name + ".exp_avg_sq", v.cpu()));
        }
        SafetensorsWriter.Write(path, tensors, new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["optimizer"] = "adamw",
            ["step"] = Steps.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["betas"] = FormattableString.Invariant($"{Beta1},{Beta2}"),
            ["eps"] = Eps.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            ["weight_decay"] = WeightDecay.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        });
    }

    public void Load(string path)
    {
        using var file = SafetensorsFile.Open(path);
        using var noGrad = no_grad();
        foreach (var (name, (m, v)) in _state)
        {
            if (!file.Tensors.ContainsKey(name + ".exp_avg") || !file.Tensors.ContainsKey(name + ".exp_avg_sq"))
            {
                throw new EngineInputException($"--resume-from: optimizer state lacks '{name}' (the checkpoint is of a different adapter layout)");
            }
            using var lm = file.Load(name + ".exp_avg", m.dtype, m.device);
            using var lv = file.Load(name + ".exp_avg_sq", v.dtype, v.device);
            m.copy_(lm);
            v.copy_(lv);
        }
        Steps = long.Parse(file.Metadata["step"], System.Globalization.CultureInfo.InvariantCulture);
    }

    public void Dispose()
    {
        foreach (var (m, v) in _state.Values)
        {
            m.Dispose();
            v.Dispose();
        }
    }
}

/// <summary>The learning rate at an optimizer step: linear warm-up, then linear / cosine decay to 0, or constant.</summary>
public static class LrSchedule
{
    public static double At(Protocol.LrScheduler scheduler, double peak, int warmup, int total, int step)
    {
        // transformers' get_*_schedule_with_warmup, evaluated at the step about to be taken (0-based `step - 1`).
        var current = step - 1;
        if (current < warmup)
        {
            return peak * (current + 1) / (warmup + 1.0);
        }
        var progress = total <= warmup ? 1.0 : (double)(current - warmup) / Math.Max(1, total - warmup);
        return scheduler switch
        {
            Protocol.LrScheduler.Constant => peak,
            Protocol.LrScheduler.Cosine => peak * 0.5 * (1 + Math.Cos(Math.PI * progress)),
            _ => peak * Math.Max(0, 1 - progress),
        };
    }
}
