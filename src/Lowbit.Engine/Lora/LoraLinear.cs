using Lowbit.Engine.Network;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lowbit.Engine.Lora;

/// <summary>
/// A frozen projection plus a trainable low-rank update (PEFT <c>lora.Linear</c>):
/// <c>y = base(x) + B·A·dropout(x) · scaling</c>. The base is any <see cref="LinearLayer"/>: a 16-bit
/// <see cref="DenseLinear"/> or a quantized layer that dequantizes its packed weight per call (never the whole model).
/// A and B are float32 master weights; they are cast to the activation dtype (bf16 on CUDA) for the matmuls.
/// Dropout masks come from a generator seeded by <see cref="DropoutSeed"/> and this module's index (on CUDA the device's
/// default generator, re-seeded per module), so a recomputed forward (gradient checkpointing) and a resumed run draw
/// the same masks.
/// </summary>
public sealed class LoraLinear : LinearLayer
{
    private readonly Parameter _a;
    private readonly Parameter _b;

    public LoraLinear(LinearLayer baseLayer, LoraSettings settings, int index, Device device)
        : base("LoraLinear", baseLayer.InFeatures, baseLayer.OutFeatures)
    {
        Base = baseLayer;
        Settings = settings;
        Index = index;
        // Parameter takes its own handle on the storage; the temporaries are released here, not by a later GC.
        using var a = zeros([settings.R, baseLayer.InFeatures], ScalarType.Float32, device);
        using var b = zeros([baseLayer.OutFeatures, settings.R], ScalarType.Float32, device);
        _a = new Parameter(a);
        _b = new Parameter(b);
        register_module("base_layer", baseLayer);
        register_parameter("lora_A", _a);
        register_parameter("lora_B", _b);
    }

    public LinearLayer Base { get; }

    public LoraSettings Settings { get; }

    /// <summary>Position of this module in the model (seeds its dropout masks).</summary>
    public int Index { get; }

    public Parameter A => _a;

    public Parameter B => _b;

    public double Scaling => Settings.Scaling;

    [ThreadStatic]
    private static long? _dropoutSeed;

    /// <summary>
    /// Set by the trainer per micro-step; null uses no dropout mask seed (dropout only applies while training).
    /// Per thread: the checkpointed backward sets it again on whichever thread autograd runs it, and two trainings in
    /// one process (tests) do not draw each other's masks.
    /// </summary>
    public static long? DropoutSeed
    {
        get => _dropoutSeed;
        set => _dropoutSeed = value;
    }

    [ThreadStatic]
    private static bool _noDeviceSeeding;

    /// <summary>
    /// Whether a CUDA mask re-seeds the device generator from <see cref="DropoutSeed"/> (true unless a CUDA graph is
    /// being captured on this thread, where re-seeding is not allowed).
    /// </summary>
    public static bool SeedDeviceGenerator
    {
        get => !_noDeviceSeeding;
        set => _noDeviceSeeding = !value;
    }

    /// <summary>Initializes like PEFT's <c>init_lora_weights=True</c>: A ~ U(−1/√in, 1/√in) (kaiming_uniform, a=√5), B = 0.</summary>
    public void Initialize(Generator generator)
    {
        using var noGrad = no_grad();
        var bound = 1.0 / Math.Sqrt(InFeatures);
        using var values = empty(_a.shape, ScalarType.Float32, CPU);
        using var drawn = values.uniform_(-bound, bound, generator);
        _a.copy_(drawn);
        _b.zero_();
    }

    /// <summary>Copies trained weights in.</summary>
    public void Load(LoraWeights weights)
    {
        if (!weights.A.shape.SequenceEqual(_a.shape) || !weights.B.shape.SequenceEqual(_b.shape))
        {
            throw new EngineInputException($"--adapter: lora_A [{string.Join(",", weights.A.shape)}] / lora_B [{string.Join(",", weights.B.shape)}] do not fit a {InFeatures}→{OutFeatures} projection at rank {Settings.R}");
        }
        using var noGrad = no_grad();
        _a.copy_(weights.A);
        _b.copy_(weights.B);
    }

    /// <summary>
    /// The model whose training loop releases what this module's backward hands to autograd
    /// (<see cref="Training.GradientCheckpoint.Release"/>); set by the fine-tuner. Null: the next backward on the thread.
    /// </summary>
    public object? Owner { get; set; }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var output = Base.forward(input);
        var mask = training && Settings.Dropout > 0 ? DropoutMask(input) : null;
        Tensor delta;
        if (is_grad_enabled() && (input.requires_grad || _a.requires_grad || _b.requires_grad))
        {
            // Autograd would keep the dropped-out input (2 bytes per element in bf16) for A's gradient on top of its
            // mask; LoraDelta keeps the mask as bools and the [.., r] down-projection, and recomputes the dropped input.
            delta = LoraDelta.apply(input, _a, _b, this, mask!);
        }
        else
        {
            delta = LoraMath.Delta(mask is null ? input : Dropped(input, mask, 1.0 - Settings.Dropout), _a, _b, Scaling);
        }
        output = output.add(delta, Scalars.One);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary><c>x · mask / keep</c> (inverted dropout with a bool keep-mask).</summary>
    internal static Tensor Dropped(Tensor input, Tensor mask, double keep)
    {
        using var scope = NewDisposeScope();
        using var divisor = keep.ToScalar();   // held: an implicit Scalar temporary may be finalized mid-call
        return input.mul(mask).div(divisor).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The keep-mask (bool, true with probability 1 − dropout) of this module for <paramref name="input"/>: seeded by
    /// <see cref="DropoutSeed"/> and the module index on the CPU (the same draws a recompute or a resumed run makes).
    /// </summary>
    private Tensor DropoutMask(Tensor input)
    {
        using var scope = NewDisposeScope();
        var keep = 1.0 - Settings.Dropout;
        var draws = SeededBernoulli(empty_like(input), keep, Index);
        return draws.to(ScalarType.Bool).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Fills <paramref name="draws"/> in place with Bernoulli(<paramref name="keep"/>) samples drawn from the seed of module
    /// <paramref name="index"/> in this micro-batch (<see cref="DropoutSeed"/> × 1,000,003 + index), so a recompute
    /// (gradient checkpointing) and a resumed run draw the same; unseeded when no <see cref="DropoutSeed"/> is set.
    /// TorchSharp 0.107 creates CPU generators only (a CUDA tensor's bernoulli_ rejects them), so on a GPU the device's
    /// default generator is re-seeded first (the recompute used to draw fresh masks); inside a CUDA graph capture
    /// re-seeding is not allowed (<see cref="SeedDeviceGenerator"/>) and the captured step draws from the graph's
    /// Philox stream instead.
    /// </summary>
    internal static Tensor SeededBernoulli(Tensor draws, double keep, int index)
    {
        if (DropoutSeed is not { } seed)
        {
            return draws.bernoulli_(keep);
        }
        var drawSeed = unchecked(seed * 1_000_003 + index);
        if (draws.device.type != DeviceType.CPU)
        {
            if (SeedDeviceGenerator)
            {
                cuda.manual_seed_all(drawSeed);   // every GPU: a pipeline split draws on several
            }
            return draws.bernoulli_(keep);
        }
        using var generator = new Generator(unchecked((ulong)drawSeed), draws.device);
        return draws.bernoulli_(keep, generator);
    }

    /// <summary>The dense merged weight <c>W + scaling·B·A</c> in <paramref name="dtype"/>.</summary>
    public override Tensor DenseWeight(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var merged = Base.DenseWeight(ScalarType.Float32).add(LoraMath.MergedDelta(_a.detach(), _b.detach(), Scaling, ScalarType.Float32), Scalars.One).to(dtype);
        return merged.MoveToOuterDisposeScope();
    }

    public override Tensor? DenseBias(ScalarType dtype) => Base.DenseBias(dtype);

    /// <summary>A detached copy of A and B (for saving).</summary>
    public LoraWeights Weights()
    {
        using var a = _a.detach();
        using var b = _b.detach();
        return new(a.clone(), b.clone());
    }
}

/// <summary>
/// The LoRA branch <c>scaling · (dropout(x)·Aᵀ)·Bᵀ</c> (A, B float32 masters cast to x's dtype) as one autograd node
/// that saves x (which the frozen base projection keeps anyway), the bool keep-mask and the <c>[.., r]</c>
/// down-projection, instead of autograd also keeping <c>dropout(x)</c>: 2 bytes per input element less in bf16
/// (146 MB per Llama-7B layer at sequence 2048 with all seven projections adapted). The backward recomputes
/// <c>dropout(x)</c> for A's gradient; each gradient is the product plain autograd forms (tested to 1e-5).
/// </summary>
public sealed class LoraDelta : autograd.SingleTensorFunction<LoraDelta>
{
    public override string Name => "LowbitLoraDelta";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var input = (Tensor)vars[0];
        var module = (LoraLinear)vars[3];
        var mask = vars[4] as Tensor;
        using var scope = NewDisposeScope();
        var keep = 1.0 - module.Settings.Dropout;
        var x = mask is null ? input : LoraLinear.Dropped(input, mask, keep);
        var a = ((Tensor)vars[1]).to(input.dtype);
        var b = ((Tensor)vars[2]).to(input.dtype);
        var down = nn.functional.linear(x, a);
        var up = nn.functional.linear(down, b);
        using var factor = module.Scaling.ToScalar();   // held: an implicit Scalar temporary may be finalized mid-call
        var output = module.Scaling == 1.0 ? up : up.mul(factor);
        ctx.save_for_backward([input, down.MoveToOuterDisposeScope(), mask!]);
        ctx.save_data("module", module);
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        Training.GradientCheckpoint.ReleaseReturned();
        var module = (LoraLinear)ctx.get_data("module");
        Tensor gradInput, gradA, gradB;
        using (var scope = NewDisposeScope())
        {
            var saved = ctx.get_saved_variables();
            var (input, down, mask) = (saved[0], saved[1], saved.Count > 2 ? saved[2] : null);
            var dtype = input.dtype;
            var keep = 1.0 - module.Settings.Dropout;
            var a = module.A.detach().to(dtype);
            var b = module.B.detach().to(dtype);
            using var factor = module.Scaling.ToScalar();
            var g = module.Scaling == 1.0 ? grad_output : grad_output.mul(factor);
            long rank = a.shape[0], inFeatures = a.shape[1], outFeatures = b.shape[0];
            var g2 = g.reshape(-1, outFeatures);
            var down2 = down.reshape(-1, rank);
            gradB = g2.t().matmul(down2).to(module.B.dtype).MoveToOuterDisposeScope();
            var gradDown = g2.matmul(b);
            var x = mask is null || mask.IsInvalid ? input : LoraLinear.Dropped(input, mask, keep);
            gradA = gradDown.t().matmul(x.reshape(-1, inFeatures)).to(module.A.dtype).MoveToOuterDisposeScope();
            var gradX = gradDown.matmul(a);
            if (mask is not null && !mask.IsInvalid)
            {
                gradX = LoraLinear.Dropped(gradX.view(input.shape), mask, keep);
            }
            gradInput = gradX.reshape(input.shape).MoveToOuterDisposeScope();
        }
        // On CUDA this runs on the autograd device thread outside any dispose scope (see GradientCheckpoint.backward).
        grad_output.Dispose();
        foreach (var t in new[] { gradInput, gradA, gradB })
        {
            if (module.Owner is { } owner)
            {
                Training.GradientCheckpoint.Returned(owner, t);
            }
            else
            {
                Training.GradientCheckpoint.Returned(t);
            }
        }
        return [gradInput, gradA, gradB, null!, null!];
    }
}
