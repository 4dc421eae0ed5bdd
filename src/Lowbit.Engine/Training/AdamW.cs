using Lowbit.Engine.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Training;

/// <summary>
/// AdamW (decoupled weight decay, PyTorch's update rule) over named parameters, on flat buffers: the parameters of each
/// (dtype, device) become views into one contiguous buffer (<c>set_</c>: the registered <see cref="TorchSharp.Modules.Parameter"/>
/// objects stay, only their storage moves), their gradients are preallocated views into one flat gradient buffer
/// (autograd's AccumulateGrad adds into a defined <c>.grad</c> in place), and the moments are flat too. A step, the
/// clipping and the zeroing are then a handful of kernels per buffer instead of ~8 per tensor (448 tensors for LoRA on
/// all seven projections of a 32-layer model: ~5,800 calls per step before), like PyTorch's multi-tensor (foreach)
/// AdamW. The moments are named views too, so a checkpoint stores them per parameter exactly
/// (<c>optimizer.safetensors</c>: <c>NAME.exp_avg</c>, <c>NAME.exp_avg_sq</c>). Clipping stays on the device (no host
/// synchronisation).
/// </summary>
/// <remarks>
/// Every parameter takes part in every update: one that received no gradient has a zero gradient, so weight decay
/// still shrinks it (the per-tensor update skipped it; the trainer's parameters all receive gradients). The
/// parameters' own version counters do not move when the flat buffer is updated: nothing may cache a derived tensor
/// keyed on them. Code that reads or copies into the parameters (checkpoints, resume, merge, export) is unaffected;
/// code that replaced a parameter's tensor would detach it from the optimizer.
/// </remarks>
public sealed class AdamW : IDisposable
{
    private readonly List<FlatGroup> _groups = [];
    private readonly List<(string Name, Tensor M, Tensor V)> _state = [];

    public AdamW(IReadOnlyList<(string Name, Tensor Parameter)> parameters, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0)
    {
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, _) in parameters)
        {
            if (!names.Add(name))
            {
                throw new ArgumentException($"parameter '{name}' appears twice", nameof(parameters));
            }
        }
        var views = new Dictionary<string, (Tensor M, Tensor V)>(StringComparer.Ordinal);
        foreach (var members in parameters.GroupBy(p => (p.Parameter.dtype, p.Parameter.device.type, p.Parameter.device.index)))
        {
            var group = new FlatGroup(members.ToList());
            _groups.Add(group);
            foreach (var (name, m, v) in group.Moments)
            {
                views[name] = (m, v);
            }
        }
        foreach (var (name, _) in parameters)
        {
            var (m, v) = views[name];
            _state.Add((name, m, v));
        }
    }

    public double Beta1 { get; }

    public double Beta2 { get; }

    public double Eps { get; }

    public double WeightDecay { get; }

    /// <summary>Optimizer steps taken.</summary>
    public long Steps { get; private set; }

    /// <summary>The flat gradient buffers (one per dtype and device), whose views are the parameters' <c>.grad</c>s.</summary>
    public IReadOnlyList<Tensor> GradientBuffers => _groups.Select(g => g.Grads).ToList();

    /// <summary>The first and second moments of parameter <paramref name="name"/> (views of the flat moment buffers).</summary>
    internal (Tensor M, Tensor V) State(string name)
    {
        var (_, m, v) = _state.Single(s => s.Name == name);
        return (m, v);
    }

    /// <summary>The flat parameter buffers, whose views the parameters are.</summary>
    public IReadOnlyList<Tensor> ParameterBuffers => _groups.Select(g => g.Values).ToList();

    /// <summary>Scales all gradients so their global L2 norm is at most <paramref name="maxNorm"/>; returns the norm (a device tensor).</summary>
    public Tensor ClipGradNorm(double maxNorm)
    {
        using var scope = NewDisposeScope();
        if (_groups.Count == 0)
        {
            return zeros(1).MoveToOuterDisposeScope();
        }
        // Each group's norm on its own device; with groups on several devices (a pipeline split) they meet on the first.
        var home = _groups[0].Grads.device;
        Tensor Norm(Tensor g) => (g.dtype == ScalarType.Float32 ? g : g.to(ScalarType.Float32)).norm().to(home);
        var norm = _groups.Count == 1 ? Norm(_groups[0].Grads) : stack(_groups.Select(g => Norm(g.Grads)).ToArray()).norm();
        if (maxNorm > 0)
        {
            using var epsilon = 1e-6.ToScalar();   // held: see Step
            using var max = maxNorm.ToScalar();
            using var one = 1.0.ToScalar();
            var coefficient = norm.add(epsilon, Scalars.One).reciprocal().mul(max).clamp_max(one);
            using var noGrad = no_grad();
            foreach (var group in _groups)
            {
                group.Grads.mul_(coefficient.to(group.Grads.dtype).to(group.Grads.device));
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
        foreach (var group in _groups)
        {
            // On the CPU the buffer goes in cache-sized chunks, so the nine operations of a chunk run on data still in
            // cache (whole-buffer passes over the 160 MB of a 7B LoRA stream every operation from memory: 5x slower
            // than the per-tensor loop there). On a GPU the chunks are large (5 for a 7B LoRA): few launches, and the
            // denominator's transient is 32 MiB, not the whole buffer's size.
            var total = group.Values.NumberOfElements;
            var chunk = group.Values.device.type == DeviceType.CPU ? CpuChunkElements : DeviceChunkElements;
            for (long offset = 0; offset < total; offset += chunk)
            {
                using var scope = NewDisposeScope();
                var count = Math.Min(chunk, total - offset);
                var (p, g, m, v) = count == total
                    ? (group.Values, group.Grads, group.M, group.V)
                    : (group.Values.narrow(0, offset, count), group.Grads.narrow(0, offset, count), group.M.narrow(0, offset, count), group.V.narrow(0, offset, count));
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
    }

    /// <summary>
    /// Elements per chunk of a step on the CPU (working set: five arrays of this length). 2¹⁸ was fastest for the 7B
    /// LoRA shapes on a 2-core EPYC (<c>bench-finetune --optimizer-only true --device cpu --cpu-chunk N</c>): 2¹⁴ 230 ms,
    /// 2¹⁶ 163 ms, 2¹⁸ 114 ms, 2²⁰ 126 ms, the whole buffer 878 ms, the per-tensor loop 170 ms.
    /// </summary>
    internal long CpuChunkElements { get; init; } = 1 << 18;

    /// <summary>Elements per chunk of a step on a GPU (the denominator's transient buffer holds one chunk).</summary>
    internal long DeviceChunkElements { get; init; } = 1 << 23;

    /// <summary>Zeroes the gradients in place (they stay the same views of the flat gradient buffer).</summary>
    public void ZeroGrad()
    {
        foreach (var group in _groups)
        {
            group.Grads.zero_();
        }
    }

    public void Save(string path)
    {
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (name, m, v) in _state)
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
        foreach (var (name, m, v) in _state)
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
        foreach (var (_, m, v) in _state)
        {
            m.Dispose();
            v.Dispose();
        }
        foreach (var group in _groups)
        {
            group.Dispose();
        }
    }

    /// <summary>The parameters of one dtype and device, their gradients and moments as contiguous buffers.</summary>
    private sealed class FlatGroup : IDisposable
    {
        public FlatGroup(IReadOnlyList<(string Name, Tensor Parameter)> members)
        {
            var first = members[0].Parameter;
            var offsets = new List<long>();
            long total = 0;
            foreach (var (_, p) in members)
            {
                offsets.Add(total);
                total += Aligned(p.NumberOfElements);
            }
            Values = zeros(total, first.dtype, first.device).DetachFromDisposeScope();
            Grads = zeros(total, first.dtype, first.device).DetachFromDisposeScope();
            M = zeros(total, first.dtype, first.device).DetachFromDisposeScope();
            V = zeros(total, first.dtype, first.device).DetachFromDisposeScope();
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            // Each parameter starts on a 256-byte boundary (vectorized kernels and cuBLAS want aligned pointers); the
            // padding between them has zero gradients, so it stays zero and adds nothing to the norm.
            for (var i = 0; i < members.Count; i++)
            {
                var (name, p) = members[i];
                var (offset, count) = (offsets[i], p.NumberOfElements);
                var shape = p.shape;
                var values = Values.narrow(0, offset, count).view(shape);
                values.copy_(p);
                var grad = Grads.narrow(0, offset, count).view(shape);
                if (p.grad is { } existing)
                {
                    grad.copy_(existing);
                }
                // The parameter keeps its identity (module registration, autograd leaf, requires_grad) and now shares
                // the flat buffer's storage; its old storage is freed with its last reference.
                p.set_(values);
                p.grad = grad;
                Moments.Add((name, M.narrow(0, offset, count).view(shape).DetachFromDisposeScope(),
                    V.narrow(0, offset, count).view(shape).DetachFromDisposeScope()));
            }
        }

        /// <summary><paramref name="count"/> rounded up to a multiple of 64 elements (256 bytes for float32, 128 for 16-bit).</summary>
        private static long Aligned(long count) => (count + 63) / 64 * 64;

        public Tensor Values { get; }

        public Tensor Grads { get; }

        public Tensor M { get; }

        public Tensor V { get; }

        /// <summary>Per-parameter views of <see cref="M"/> and <see cref="V"/>, in member order (disposed by the optimizer).</summary>
        public List<(string Name, Tensor M, Tensor V)> Moments { get; } = [];

        public void Dispose()
        {
            Values.Dispose();
            Grads.Dispose();
            M.Dispose();
            V.Dispose();
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
