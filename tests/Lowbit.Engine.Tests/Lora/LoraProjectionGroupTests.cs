using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Tests.Quantization;
using Lowbit.Engine.Training;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>
/// <see cref="LoraProjectionGroup"/> (the training path: fused frozen bases, one autograd node per group of projections)
/// against plain autograd of PEFT's per-projection formula <c>base(x) + scaling·(x·mask/keep·Aᵀ)·Bᵀ</c> with the same
/// masks, and against the per-projection path (<see cref="LoraLinear"/> + <see cref="LoraDelta"/>) on a whole model.
/// </summary>
public sealed class LoraProjectionGroupTests
{
    private const double Tolerance = 1e-5;

    private static LinearLayer Base(long outF, ulong seed, bool quantized)
    {
        var weight = randn([outF, 64], generator: new Generator(seed));
        if (quantized)
        {
            return PackedQuantizedLinear.Create(Rtn.Quantize(weight, new RtnOptions { Bits = 4, GroupSize = 32 }), null);
        }
        var dense = new DenseLinear(64, outF, false, ScalarType.Float32, CPU);
        dense.Weight.requires_grad_(false);   // frozen, as LoraModel.Wrap leaves every base
        using var noGrad = no_grad();
        dense.Weight.copy_(weight);
        return dense;
    }

    private static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        var scale = Math.Max(expected.abs().max().item<float>(), 1e-6f);
        var error = (expected - actual).abs().max().item<float>();
        Assert.True(error <= Tolerance * scale, $"{what}: max |Δ| {error:G3} against max |expected| {scale:G3}");
    }

    /// <summary>
    /// q/k/v-shaped parts (outputs 48, 16, 16: grouped-query widths), all adapted or only q and v (PEFT's default
    /// targets), or one projection alone (o, down), dense or 4-bit packed bases: output and the gradients of x and every A
    /// and B equal plain autograd.
    /// </summary>
    [Theory]
    [InlineData(0.0, true, false, 3)]
    [InlineData(0.2, true, false, 3)]
    [InlineData(0.2, false, false, 3)]
    [InlineData(0.2, true, true, 3)]
    [InlineData(0.0, false, true, 3)]
    [InlineData(0.2, true, false, 1)]
    [InlineData(0.0, true, false, 1)]
    [InlineData(0.2, true, true, 1)]
    public void Does_equal_plain_autograd_of_each_projection(double dropout, bool allAdapted, bool quantized, int count)
    {
        var settings = new LoraSettings { R = 4, Alpha = 12, Dropout = dropout, TargetModules = LoraSettings.AllTargets };
        var bases = new[] { Base(48, 1, quantized), Base(16, 2, quantized), Base(16, 3, quantized) }.Take(count).ToArray();
        var parts = bases.Select((b, i) => allAdapted || i != 1 ? new LoraLinear(b, settings, 10 + i, CPU) : b).ToArray();
        var adapters = parts.OfType<LoraLinear>().ToArray();
        for (var i = 0; i < adapters.Length; i++)
        {
            LoraLinearTests.Randomize(adapters[i], (ulong)(20 + i));
            adapters[i].train();
        }
        using var group = new LoraProjectionGroup();
        Assert.True(LoraProjectionGroup.Applies(parts));
        const long seed = 5;
        Tensor Input() => randn([2, 7, 64], generator: new Generator(4)).requires_grad_(true);
        using var weights = randn([2, 7, bases.Sum(b => b.OutFeatures)], generator: new Generator(9));

        LoraLinear.DropoutSeed = seed;
        var x = Input();
        var y = group.Forward(parts, x);
        var masks = dropout > 0 ? LoraProjectionGroup.DropoutMasks(adapters, x) : null;
        LoraLinear.DropoutSeed = null;
        y.mul(weights).sum().backward();
        var grads = adapters.SelectMany(a => new[] { a.A.grad!.clone(), a.B.grad!.clone() }).ToArray();
        foreach (var a in adapters)
        {
            a.A.grad!.zero_();
            a.B.grad!.zero_();
        }

        var xr = Input();
        var outputs = new List<Tensor>();
        var index = 0;
        foreach (var (part, baseLayer) in parts.Zip(bases))
        {
            var output = xr.matmul(baseLayer.DenseWeight(ScalarType.Float32).t());
            if (part is LoraLinear lora)
            {
                var mask = masks is null ? null : adapters.Length == 1 ? masks : masks[index];
                var dropped = mask is null ? xr : xr.mul(mask.view(xr.shape)).div(Scalars.Of(1.0 - dropout));
                output = output.add(dropped.matmul(lora.A.t()).matmul(lora.B.t()).mul(Scalars.Of(settings.Scaling)), Scalars.One);
                index++;
            }
            outputs.Add(output);
        }
        var expected = cat(outputs.ToArray(), -1);
        expected.mul(weights).sum().backward();

        AssertClose(expected, y, "output");
        AssertClose(xr.grad!, x.grad!, "x gradient");
        for (var i = 0; i < adapters.Length; i++)
        {
            AssertClose(adapters[i].A.grad!, grads[2 * i], $"A gradient of adapter {i}");
            AssertClose(adapters[i].B.grad!, grads[2 * i + 1], $"B gradient of adapter {i}");
            Assert.True(grads[2 * i].abs().max().item<float>() > 0);
        }
        if (masks is not null && adapters.Length > 1)
        {
            // The masks differ per adapter (PEFT draws one per module) and drop about the asked fraction.
            Assert.False(masks[0].eq(masks[1]).all().item<bool>());
            Assert.InRange(1 - masks.to(ScalarType.Float32).mean().item<float>(), dropout - 0.08, dropout + 0.08);
        }
    }

    [Fact]
    public void Does_not_apply_in_eval_mode_or_when_a_base_weight_trains()
    {
        var settings = new LoraSettings { R = 4, Alpha = 8, TargetModules = LoraSettings.AllTargets };
        var dense = (DenseLinear)Base(16, 1, quantized: false);
        var lora = new LoraLinear(dense, settings, 0, CPU);
        lora.train();
        Assert.True(LoraProjectionGroup.Applies([lora]));
        Assert.False(LoraProjectionGroup.Applies([dense]));   // nothing adapted: the model's own path
        dense.Weight.requires_grad_(true);                     // --method full trains the bases: autograd's path
        Assert.False(LoraProjectionGroup.Applies([lora]));
        dense.Weight.requires_grad_(false);
        lora.eval();                                           // eval and serve keep the per-projection path
        Assert.False(LoraProjectionGroup.Applies([lora]));
    }

    private static (float Loss, Dictionary<string, Tensor> Grads) Step(LlamaForCausalLM model, bool grouped, bool checkpointing)
    {
        model.train();
        model.Model.GradientCheckpointing = checkpointing;
        LoraProjectionGroup.Bypassed = !grouped;
        LoraLinear.DropoutSeed = 17;
        try
        {
            using var scope = NewDisposeScope();
            var ids = TinyModels.Tokens(2, 12, 3);
            var logits = model.forward(ids, null);
            var loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), TinyModels.Tokens(2, 12, 4).view(-1));
            loss.backward();
            GradientCheckpoint.Release(model.Model);
            var grads = model.named_parameters().Where(p => p.parameter.grad is not null)
                .ToDictionary(p => p.name, p => p.parameter.grad!.clone().DetachFromDisposeScope());
            foreach (var (_, p) in model.named_parameters())
            {
                p.grad?.zero_();
            }
            return (loss.item<float>(), grads);
        }
        finally
        {
            LoraProjectionGroup.Bypassed = false;
            LoraLinear.DropoutSeed = null;
        }
    }

    private static LlamaForCausalLM Model(double dropout, IReadOnlyList<string>? targets = null)
    {
        var model = new LlamaForCausalLM(TinyModels.Config, ScalarType.Float32, CPU);
        ModelIo.InitializeRandom(model, 1, std: 0.1);
        var settings = new LoraSettings { R = 4, Alpha = 8, Dropout = dropout, TargetModules = targets ?? LoraSettings.AllTargets };
        foreach (var (_, lora) in LoraModel.Wrap(model, settings, 7, CPU))
        {
            using var noGrad = no_grad();
            lora.B.normal_(0, 0.1);   // B = 0 at PEFT's init would leave A's gradient zero
        }
        return model;
    }

    /// <summary>
    /// A whole model (grouped-query attention, all seven projections adapted, no dropout): the loss and every LoRA
    /// gradient of the grouped path equal the per-projection path's, with and without gradient checkpointing.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Does_train_a_model_as_the_per_projection_path_does(bool checkpointing)
    {
        using var model = Model(dropout: 0);
        var (referenceLoss, reference) = Step(model, grouped: false, checkpointing);
        var (loss, grads) = Step(model, grouped: true, checkpointing);

        Assert.Equal(2 * 2 * 7, grads.Count);
        Assert.Equal(reference.Keys.Order(), grads.Keys.Order());
        Assert.True(Math.Abs(loss - referenceLoss) <= Tolerance * Math.Abs(referenceLoss), $"loss {loss} against {referenceLoss}");
        foreach (var (name, grad) in reference)
        {
            AssertClose(grad, grads[name], name);
        }
    }

    /// <summary>
    /// Some projections adapted (q, v and down: the q/k/v group mixes adapted and plain parts, gate/up has no adapter and
    /// keeps the per-projection path beside a grouped down): loss and gradients equal the per-projection path's.
    /// </summary>
    [Fact]
    public void Does_train_a_partly_adapted_model_as_the_per_projection_path_does()
    {
        using var model = Model(dropout: 0, ["q_proj", "v_proj", "down_proj"]);
        var (referenceLoss, reference) = Step(model, grouped: false, checkpointing: true);
        var (loss, grads) = Step(model, grouped: true, checkpointing: true);

        Assert.Equal(2 * 2 * 3, grads.Count);
        Assert.True(Math.Abs(loss - referenceLoss) <= Tolerance * Math.Abs(referenceLoss), $"loss {loss} against {referenceLoss}");
        foreach (var (name, grad) in reference)
        {
            AssertClose(grad, grads[name], name);
        }
    }

    /// <summary>With dropout, the checkpointed recompute draws the same masks: its gradients equal the unchecked pass's.</summary>
    [Fact]
    public void Does_replay_the_dropout_masks_in_the_checkpointed_recompute()
    {
        using var model = Model(dropout: 0.2);
        var (plainLoss, plain) = Step(model, grouped: true, checkpointing: false);
        var (loss, checkpointed) = Step(model, grouped: true, checkpointing: true);
        var (_, undropped) = Step(Model(dropout: 0), grouped: true, checkpointing: false);

        Assert.Equal(plainLoss, loss, 5);
        foreach (var (name, grad) in plain)
        {
            AssertClose(grad, checkpointed[name], name);
        }
        var name0 = plain.Keys.First(k => k.EndsWith("lora_A", StringComparison.Ordinal));
        Assert.False(plain[name0].allclose(undropped[name0], 1e-3, 1e-3));   // the masks were applied
    }

    /// <summary>
    /// The fused base is the parts' own storage: after a training pass the saved weights and the eval output are
    /// unchanged, and a weight written into a part afterwards (a load) is what the next grouped pass computes with.
    /// </summary>
    [Fact]
    public void Does_keep_one_copy_of_the_base_weights_that_the_model_still_owns()
    {
        using var model = Model(dropout: 0);
        var ids = TinyModels.Tokens(1, 9, 5);
        Tensor Eval()
        {
            model.eval();
            using var noGrad = no_grad();
            return model.forward(ids, null).DetachFromDisposeScope();
        }
        var before = Eval();
        var saved = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());

        Step(model, grouped: true, checkpointing: true);

        Assert.True(Eval().allclose(before, 0, 0));
        foreach (var (name, p) in model.named_parameters())
        {
            Assert.True(p.detach().allclose(saved[name], 0, 0), name);
        }
        var k = (DenseLinear)((LoraLinear)model.Model.Layers[0].SelfAttention.Projections().First(p => p.Name == "k_proj").Layer).Base;
        using (no_grad())
        {
            k.Weight.mul_(Scalars.Of(-2.0));
        }
        var (referenceLoss, _) = Step(model, grouped: false, checkpointing: false);
        var (loss, _) = Step(model, grouped: true, checkpointing: false);
        Assert.True(Math.Abs(loss - referenceLoss) <= Tolerance * Math.Abs(referenceLoss), $"loss {loss} against {referenceLoss}");
    }
}
