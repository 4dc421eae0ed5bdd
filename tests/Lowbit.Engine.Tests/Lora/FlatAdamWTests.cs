using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.DevTools;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Tests.Quantization;
using Lowbit.Engine.Training;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>
/// The flat-buffer AdamW against the per-tensor update it replaced (<see cref="PerTensorAdamW"/>, the old engine code
/// kept in the developer tools): same parameters, moments and checkpoint after several clipped, weight-decayed steps;
/// gradients that stay views of the flat buffer through autograd (the checkpointed layers' and LoraDelta's backward)
/// and zeroing.
/// </summary>
public sealed class FlatAdamWTests
{
    private const double Tolerance = 1e-6;

    private static (LlamaForCausalLM Model, List<(string Name, Tensor Parameter)> Trainable) WrappedModel(bool checkpointing, double dropout = 0)
    {
        var model = new LlamaForCausalLM(TinyModels.Config, ScalarType.Float32, CPU);
        ModelIo.InitializeRandom(model, 1, std: 0.1);
        var settings = new LoraSettings { R = 4, Alpha = 8, Dropout = dropout, TargetModules = LoraSettings.AllTargets };
        var modules = LoraModel.Wrap(model, settings, 1, CPU);
        model.Model.GradientCheckpointing = checkpointing;
        model.train();
        var trainable = modules.SelectMany(m => new[] { (m.Path + ".lora_A", (Tensor)m.Module.A), (m.Path + ".lora_B", (Tensor)m.Module.B) }).ToList();
        return (model, trainable);
    }

    private static void Backward(LlamaForCausalLM model, Tensor ids, long dropoutSeed)
    {
        LoraLinear.DropoutSeed = dropoutSeed;
        using (var scope = NewDisposeScope())
        {
            var loss = model.forward(ids, null).to(ScalarType.Float32).pow(Scalars.Of(2)).mean();
            loss.backward();
        }
        GradientCheckpoint.Release(model.Model);
        LoraLinear.DropoutSeed = null;
    }

    /// <summary>The address of <paramref name="t"/>'s first element.</summary>
    private static long Address(Tensor t)
    {
        using var storage = t.storage<float>();
        return (long)storage.data_ptr() + t.storage_offset() * t.ElementSize;
    }

    private static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        using var scope = NewDisposeScope();
        var difference = (expected - actual).abs().max().to(ScalarType.Float64).item<double>();
        Assert.True(difference <= Tolerance, $"{what}: max difference {difference}");
    }

    [Fact]
    public void Does_update_like_the_per_tensor_adamw_with_weight_decay_and_clipping()
    {
        var (flatModel, flatParameters) = WrappedModel(checkpointing: true);
        var (referenceModel, referenceParameters) = WrappedModel(checkpointing: true);
        using (flatModel)
        using (referenceModel)
        // Chunks of 1,000 elements (not a divisor of any tensor's size): the CPU path that splits the buffer.
        using (var flat = new AdamW(flatParameters, weightDecay: 0.1) { CpuChunkElements = 1000 })
        using (var reference = new PerTensorAdamW(referenceParameters.Select(p => p.Parameter).ToList(), weightDecay: 0.1))
        {
            var clipped = 0;
            for (var step = 1; step <= 4; step++)
            {
                using var ids = TinyModels.Tokens(2, 16, (ulong)step);
                Backward(flatModel, ids, step);
                Backward(referenceModel, ids, step);
                using var flatNorm = flat.ClipGradNorm(0.05);
                using var referenceNorm = reference.ClipGradNorm(0.05);
                Assert.Equal(referenceNorm.item<float>(), flatNorm.item<float>(), 5);
                clipped += referenceNorm.item<float>() > 0.05 ? 1 : 0;
                flat.Step(1e-2 * step);
                reference.Step(1e-2 * step);
                flat.ZeroGrad();
                reference.ZeroGrad();
            }
            Assert.True(clipped >= 2, $"clipping was active in {clipped} of 4 steps");
            for (var i = 0; i < flatParameters.Count; i++)
            {
                var name = flatParameters[i].Name;
                AssertClose(referenceParameters[i].Parameter, flatParameters[i].Parameter, name);
                var (m, v) = flat.State(name);
                AssertClose(reference.State(i).M, m, name + ".exp_avg");
                AssertClose(reference.State(i).V, v, name + ".exp_avg_sq");
                Assert.True(flatParameters[i].Parameter.grad!.abs().max().item<float>() == 0, $"{name}: gradient zeroed");
            }
            Assert.True(flatParameters.All(p => p.Parameter.abs().max().item<float>() > 0), "every A and B moved");
        }
    }

    [Fact]
    public void Does_group_parameters_of_different_dtypes_into_one_buffer_each()
    {
        static List<Tensor> Parameters() =>
        [
            new Parameter(linspace(-1, 1, 12).reshape(3, 4)),
            new Parameter(linspace(0.5, 2, 5, dtype: ScalarType.Float64)),
            new Parameter(linspace(2, -2, 6).reshape(2, 3)),
            new Parameter(linspace(-3, 3, 130).reshape(2, 65)),
        ];
        var flatParameters = Parameters();
        var referenceParameters = Parameters();
        using var flat = new AdamW(flatParameters.Select((p, i) => ($"p{i}", p)).ToList(), weightDecay: 0.05);
        using var reference = new PerTensorAdamW(referenceParameters, weightDecay: 0.05);
        Assert.Equal(2, flat.GradientBuffers.Count);
        for (var step = 1; step <= 3; step++)
        {
            foreach (var ps in new[] { flatParameters, referenceParameters })
            {
                using var scope = NewDisposeScope();
                ps.Select((p, i) => p.pow(Scalars.Of(2)).sum().mul(Scalars.Of(i + step)).to(ScalarType.Float64)).Aggregate((a, b) => a + b).backward();
            }
            using var n1 = flat.ClipGradNorm(1.0);
            using var n2 = reference.ClipGradNorm(1.0);
            Assert.Equal(n2.item<float>(), n1.item<float>(), 4);
            flat.Step(0.1);
            reference.Step(0.1);
            flat.ZeroGrad();
            reference.ZeroGrad();
        }
        for (var i = 0; i < flatParameters.Count; i++)
        {
            AssertClose(referenceParameters[i], flatParameters[i], $"p{i}");
        }
        Assert.Equal(ScalarType.Float64, flatParameters[1].dtype);
    }

    [Fact]
    public void Does_keep_gradients_as_views_of_the_flat_buffer_through_checkpointed_backward_and_zeroing()
    {
        var (model, parameters) = WrappedModel(checkpointing: true, dropout: 0.1);
        var (plainModel, plainParameters) = WrappedModel(checkpointing: true, dropout: 0.1);
        using (model)
        using (plainModel)
        using (var optimizer = new AdamW(parameters))
        {
            var buffer = optimizer.GradientBuffers.Single();
            var values = optimizer.ParameterBuffers.Single();
            var gradAddresses = parameters.Select(p => Address(p.Parameter.grad!)).ToList();
            var expectedOffset = 0L;
            for (var i = 0; i < parameters.Count; i++)
            {
                var p = parameters[i].Parameter;
                Assert.Equal(Address(buffer) + expectedOffset * 4, gradAddresses[i]);
                Assert.Equal(Address(values) + expectedOffset * 4, Address(p));
                expectedOffset += (p.NumberOfElements + 63) / 64 * 64;   // each view starts 256-byte aligned
            }
            // The module's registered parameters are the flat buffer's views (what checkpoints and exports read).
            var registered = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
            Assert.Equal(parameters.Count, registered.Count);
            Assert.All(registered, p => Assert.InRange(Address(p.parameter), Address(values), Address(values) + (values.NumberOfElements - 1) * 4));

            // Two micro-batches accumulate, as autograd does into gradients it created itself (the per-tensor path).
            for (var micro = 0; micro < 2; micro++)
            {
                using var ids = TinyModels.Tokens(2, 16, (ulong)(10 + micro));
                Backward(model, ids, 100 + micro);
                Backward(plainModel, ids, 100 + micro);
            }
            for (var i = 0; i < parameters.Count; i++)
            {
                AssertClose(plainParameters[i].Parameter.grad!, parameters[i].Parameter.grad!, parameters[i].Name + ".grad");
                Assert.Equal(gradAddresses[i], Address(parameters[i].Parameter.grad!));
            }
            Assert.True(buffer.abs().max().item<float>() > 0, "the backward wrote into the flat buffer");
            optimizer.Step(1e-2);
            optimizer.ZeroGrad();
            Assert.Equal(0f, buffer.abs().max().item<float>());
            using var again = TinyModels.Tokens(2, 16, 20);
            Backward(model, again, 200);
            Assert.Equal(gradAddresses, parameters.Select(p => Address(p.Parameter.grad!)));
            Assert.True(buffer.abs().max().item<float>() > 0, "the backward after zeroing wrote into the same buffer");
        }
    }

    [Fact]
    public void Does_save_and_load_the_moments_per_parameter_name()
    {
        using var dir = new TempDir();
        var (model, parameters) = WrappedModel(checkpointing: false);
        var (referenceModel, referenceParameters) = WrappedModel(checkpointing: false);
        using (model)
        using (referenceModel)
        using (var optimizer = new AdamW(parameters, weightDecay: 0.01))
        using (var reference = new PerTensorAdamW(referenceParameters.Select(p => p.Parameter).ToList(), weightDecay: 0.01))
        {
            for (var step = 1; step <= 2; step++)
            {
                using var ids = TinyModels.Tokens(2, 16, (ulong)step);
                Backward(model, ids, step);
                Backward(referenceModel, ids, step);
                optimizer.Step(1e-2);
                reference.Step(1e-2);
                optimizer.ZeroGrad();
                reference.ZeroGrad();
            }
            var path = dir.File(FineTuner.OptimizerFile);
            optimizer.Save(path);
            using (var file = SafetensorsFile.Open(path))
            {
                Assert.Equal(2 * parameters.Count, file.Tensors.Count);
                Assert.Equal("2", file.Metadata["step"]);
                for (var i = 0; i < parameters.Count; i++)
                {
                    using var m = file.Load(parameters[i].Name + ".exp_avg");
                    using var v = file.Load(parameters[i].Name + ".exp_avg_sq");
                    Assert.Equal(parameters[i].Parameter.shape, m.shape);
                    AssertClose(reference.State(i).M, m, parameters[i].Name + ".exp_avg");
                    AssertClose(reference.State(i).V, v, parameters[i].Name + ".exp_avg_sq");
                }
            }

            var (fresh, freshParameters) = WrappedModel(checkpointing: false);
            using (fresh)
            using (var loaded = new AdamW(freshParameters, weightDecay: 0.01))
            {
                loaded.Load(path);
                Assert.Equal(2, loaded.Steps);
                foreach (var (name, _) in parameters)
                {
                    Assert.True(loaded.State(name).M.allclose(optimizer.State(name).M, 0, 0), name + ".exp_avg loaded");
                    Assert.True(loaded.State(name).V.allclose(optimizer.State(name).V, 0, 0), name + ".exp_avg_sq loaded");
                }
            }
        }
    }
}
