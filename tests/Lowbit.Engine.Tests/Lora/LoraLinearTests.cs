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

    private static void Randomize(LoraLinear lora, ulong seed)
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

        var expected = x.matmul(lora.Base.DenseWeight(ScalarType.Float32).t()) + Scalars.Of(2.0) * x.matmul(lora.A.t()).matmul(lora.B.t());
        Assert.True(y.allclose(expected, 1e-5, 1e-5));
        Assert.True(LoraMath.Delta(x, lora.A, lora.B, 2.0).allclose(expected - lora.Base.forward(x), 1e-5, 1e-5));
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

        var expected = x.matmul(q.Dequantize().t()) + x.matmul(lora.A.t()).matmul(lora.B.t());
        Assert.True(y.allclose(expected, 1e-4, 1e-4));
        y.sum().backward();
        Assert.NotNull(lora.A.grad);
        Assert.NotNull(lora.B.grad);
    }
}
