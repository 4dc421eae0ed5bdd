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
/// Dropout masks come from a generator seeded by <see cref="DropoutSeed"/> and this module's index, so a recomputed
/// forward (gradient checkpointing) and a resumed run draw the same masks.
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

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var output = Base.forward(input);
        var x = training && Settings.Dropout > 0 ? Dropout(input) : input;
        output = output.add(LoraMath.Delta(x, _a, _b, Scaling));
        return output.MoveToOuterDisposeScope();
    }

    private Tensor Dropout(Tensor input)
    {
        var keep = 1.0 - Settings.Dropout;
        // TorchSharp 0.107 creates CPU generators only (a CUDA tensor's bernoulli_ rejects them), so on a GPU the mask
        // comes from the device's default generator: reproducible per process seed, but not replayed by --resume-from.
        if (DropoutSeed is not { } seed || input.device.type != DeviceType.CPU)
        {
            return nn.functional.dropout(input, Settings.Dropout, true);
        }
        using var generator = new Generator(unchecked((ulong)(seed * 1_000_003 + Index)), input.device);
        var mask = empty_like(input).bernoulli_(keep, generator);
        using var divisor = keep.ToScalar();   // held: an implicit Scalar temporary may be finalized mid-call
        return input.mul(mask).div(divisor);
    }

    /// <summary>The dense merged weight <c>W + scaling·B·A</c> in <paramref name="dtype"/>.</summary>
    public override Tensor DenseWeight(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var merged = Base.DenseWeight(ScalarType.Float32).add(LoraMath.MergedDelta(_a.detach(), _b.detach(), Scaling, ScalarType.Float32)).to(dtype);
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
