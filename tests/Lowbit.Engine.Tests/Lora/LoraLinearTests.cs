using Lowbit.Engine.Lora;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Tests.Quantization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

public sealed class LoraLinearTests
{
    private static DenseLinear Dense(long inF, long outF, ulong seed)
    {
        var dense = new DenseLinear(inF, outF, false, ScalarType.Float32, CPU);
        using var noGrad = no_grad();
        dense.Weight.copy_(randn([outF, inF], generator: new Generator(seed)));
        return dense;
    }

    internal static void Randomize(LoraLinear lora, ulong seed)
    {
        using var noGrad = no_grad();
        var g = new Generator(seed);
        lora.A.copy_(randn(lora.A.shape, generator: g));
        lora.B.copy_(randn(lora.B.shape, generator: g));
    }

    [Fact]
    public void Does_add_scaled_b_a_x_to_the_base_output()
    {
        var settings = new LoraSettings { R = 4, Alpha = 8, TargetModules = ["q_proj"] };
        using var lora = new LoraLinear(Dense(16, 12, 1), settings, 0, CPU);
        Randomize(lora, 2);
        lora.eval();
        var x = randn([3, 5, 16], generator: new Generator(3));

        var y = lora.forward(x);

        var expected = x.matmul(lora.Base.DenseWeight(ScalarType.Float32).t()).add(Scalars.Of(2.0) * x.matmul(lora.A.t()).matmul(lora.B.t()), Scalars.One);
        Assert.True(y.allclose(expected, 1e-5, 1e-5));
        Assert.True(LoraMath.Delta(x, lora.A, lora.B, 2.0).allclose(expected - lora.Base.forward(x), 1e-5, 1e-5));
    }

    /// <summary>
    /// Training runs the LoRA branch as <see cref="LoraDelta"/> (keeps the bool dropout mask, recomputes the dropped
    /// input in the backward): output and the gradients of x, A and B equal plain autograd through
    /// <c>base(x) + scaling·(x·mask/keep·Aᵀ)·Bᵀ</c> with the same seeded mask.
    /// </summary>
    [Theory]
    [InlineData(0.0)]
    [InlineData(0.25)]
    public void Does_train_the_lora_branch_with_the_gradients_of_plain_autograd(double dropout)
    {
        var settings = new LoraSettings { R = 4, Alpha = 12, Dropout = dropout, TargetModules = ["q_proj"] };
        using var lora = new LoraLinear(Dense(16, 12, 1), settings, 5, CPU);
        Randomize(lora, 2);
        lora.train();
        const long seed = 41;
        Tensor Input() => randn([3, 5, 16], generator: new Generator(3)).requires_grad_(true);

        LoraLinear.DropoutSeed = seed;
        var x = Input();
        var y = lora.forward(x);
        LoraLinear.DropoutSeed = null;
        using (var weights = randn(y.shape, generator: new Generator(9)))
        {
            y.mul(weights).sum().backward();
        }
        var (gx, ga, gb) = (x.grad!.clone(), lora.A.grad!.clone(), lora.B.grad!.clone());
        lora.A.grad!.zero_();
        lora.B.grad!.zero_();

        var xr = Input();
        var keep = 1.0 - dropout;
        var dropped = xr;
        if (dropout > 0)
        {
            using var generator = new Generator(unchecked((ulong)(seed * 1_000_003 + 5)), CPU);
            var mask = empty_like(xr).bernoulli_(keep, generator);
            dropped = xr.mul(mask).div(Scalars.Of(keep));
        }
        var expected = lora.Base.forward(xr).add(dropped.matmul(lora.A.t()).matmul(lora.B.t()).mul(Scalars.Of(settings.Scaling)), Scalars.One);
        using (var weights = randn(y.shape, generator: new Generator(9)))
        {
            expected.mul(weights).sum().backward();
        }

        Assert.True(y.allclose(expected, 1e-5, 1e-6));
        Assert.True(gx.allclose(xr.grad!, 1e-5, 1e-6));
        Assert.True(ga.allclose(lora.A.grad!, 1e-5, 1e-6));
        Assert.True(gb.allclose(lora.B.grad!, 1e-5, 1e-6));
        Assert.True(ga.abs().max().item<float>() > 0 && gb.abs().max().item<float>() > 0);
        if (dropout > 0)
        {
            // The mask is applied: without it the output differs.
            var undropped = lora.Base.forward(xr).add(xr.matmul(lora.A.t()).matmul(lora.B.t()).mul(Scalars.Of(settings.Scaling)), Scalars.One);
            Assert.False(y.allclose(undropped, 1e-3, 1e-3));
        }
    }

    [Fact]
    public void Does_start_as_a_no_op_with_peft_initialisation()
    {
        var settings = new LoraSettings { R = 8, Alpha = 16, TargetModules = ["q_proj"] };
        using var lora = new LoraLinear(Dense(64, 32, 1), settings, 0, CPU);
        lora.Initialize(new Generator(7));
        var x = randn([2, 64], generator: new Generator(3));

        Assert.True(lora.forward(x).allclose(lora.Base.forward(x)));
        Assert.Equal(0, lora.B.abs().max().item<float>());
        Assert.InRange(lora.A.abs().max().item<float>(), 0.05, 1.0 / 8);   // U(−1/√64, 1/√64)
    }

    [Fact]
    public void Does_match_the_unmerged_forward_when_merged_and_train_only_a_and_b()
    {
        using var dir = new TempDir();
        TinyModels.Save(dir.Path);
        using var checkpoint = Checkpoint.Open(dir.Path);
        using var model = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        var settings = new LoraSettings { R = 4, Alpha = 8, TargetModules = LoraSettings.AllTargets, UseRslora = true };
        var modules = LoraModel.Wrap(model, settings, seed: 5, CPU);
        foreach (var (_, m) in modules)
        {
            Randomize(m, (ulong)(m.Index + 10));
        }
        var ids = TinyModels.Tokens(2, 9, 4);
        var adapted = model.forward(ids, null);

        Assert.Equal(2 * 7, modules.Count);
        Assert.Equal(2 * 7 * 2, model.parameters().Count(p => p.requires_grad));
        LoraModel.Merge(model, ScalarType.Float32);
        var merged = model.forward(ids, null);
        Assert.True(merged.allclose(adapted, 1e-4, 1e-4), $"max diff {(merged - adapted).abs().max().item<float>()}");
        Assert.DoesNotContain(model.modules(), m => m is LoraLinear);
    }

    [Fact]
    public void Does_apply_a_saved_adapter_to_a_fresh_model_with_the_same_output()
    {
        using var dir = new TempDir();
        TinyModels.Save(dir.File("base"));
        using var checkpoint = Checkpoint.Open(dir.File("base"));
        var ids = TinyModels.Tokens(1, 12, 4);
        var settings = new LoraSettings { R = 2, Alpha = 4, TargetModules = ["q_proj", "v_proj", "down_proj"] };
        Tensor trained;
        using (var model = ModelIo.Load(checkpoint, ScalarType.Float32, CPU))
        {
            var modules = LoraModel.Wrap(model, settings, seed: 1, CPU);
            foreach (var (_, m) in modules)
            {
                Randomize(m, (ulong)(m.Index + 20));
            }
            trained = model.forward(ids, null);
            using var adapter = LoraModel.Extract(modules, settings, dir.File("base"));
            adapter.Write(dir.File("adapter"));
        }

        using var fresh = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        var plain = fresh.forward(ids, null);
        using var read = PeftAdapter.Read(dir.File("adapter"));
        LoraModel.Apply(fresh, read, CPU);
        var applied = fresh.forward(ids, null);

        Assert.Equal(2 * 3, read.Modules.Count);
        Assert.True(applied.allclose(trained, 1e-5, 1e-5));
        Assert.False(plain.allclose(trained, 1e-3, 1e-3));
    }

    [Fact]
    public void Does_wrap_a_quantized_base_dequantized_per_call()
    {
        var weight = randn([24, 64], generator: new Generator(1));
        using var q = Rtn.Quantize(weight, new RtnOptions { Bits = 4, GroupSize = 32 });
        var settings = new LoraSettings { R = 4, Alpha = 4, TargetModules = ["q_proj"] };
        using var lora = new LoraLinear(new QuantizedLinear(q, null, ownsWeight: false), settings, 0, CPU);
        Randomize(lora, 9);
        var x = randn([5, 64], generator: new Generator(2));

        var y = lora.forward(x);

        var expected = x.matmul(q.Dequantize().t()).add(x.matmul(lora.A.t()).matmul(lora.B.t()), Scalars.One);
        Assert.True(y.allclose(expected, 1e-4, 1e-4));
        y.sum().backward();
        Assert.NotNull(lora.A.grad);
        Assert.NotNull(lora.B.grad);
    }
}
