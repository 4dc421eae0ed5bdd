using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Tests.Quantization;
using Lowbit.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>Sequence packing without cross-contamination: a packed block trains exactly as its examples one by one.</summary>
public sealed class PackingTests
{
    private static TrainingExample Example(Random random, int length, int promptLength)
    {
        var ids = new int[length];
        ids[0] = TinyModels.Config.BosTokenId!.Value;
        for (var i = 1; i < length; i++)
        {
            ids[i] = random.Next(3, TinyModels.Config.VocabSize);
        }
        return new TrainingExample(ids, Enumerable.Range(0, length).Select(i => i >= promptLength).ToArray(), 1);
    }

    private static double Loss(LlamaForCausalLM model, IReadOnlyList<PackedBlock> batch)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return FineTuner.LossSum(model, batch, CPU, out _).to(ScalarType.Float64).item<double>();
    }

    [Fact]
    public void Does_give_a_packed_block_the_loss_of_its_examples_run_separately()
    {
        using var model = new LlamaForCausalLM(TinyModels.Config, ScalarType.Float32, CPU);
        ModelIo.InitializeRandom(model, 3, std: 0.1);
        model.eval();
        var random = new Random(5);
        // Prompt/response examples, the last trained from its BOS on (its first token is no target of the previous one).
        var examples = new[] { Example(random, 11, 5), Example(random, 17, 9), Example(random, 23, 0) };

        var packed = FineTuneDataset.Pack(examples, 64, DatasetFormat.Alpaca, pad: 0);
        var alone = examples.Select(e => FineTuneDataset.Pack([e], 64, DatasetFormat.Alpaca, pad: 0).Single()).ToList();

        var block = Assert.Single(packed);
        Assert.True(block.IsPacked);
        Assert.Equal(alone.Sum(b => b.TrainedTargets), block.TrainedTargets);
        var separate = alone.Sum(b => Loss(model, [b]));
        var together = Loss(model, [block]);
        Assert.Equal(1.0, together / separate, 5);
        // In a micro-batch with an unpacked block (the one-document fast path mixed with a packed row).
        Assert.Equal(1.0, Loss(model, [block, alone[2]]) / (separate + Loss(model, [alone[2]])), 5);
        // Without the layout (plain causal attention over the block, positions running on) the loss differs: the
        // equality above is the masking's doing.
        var naive = Loss(model, [new PackedBlock(block.Ids, block.Trained)]);
        Assert.True(Math.Abs(naive / separate - 1) > 1e-3, $"naive {naive}, separate {separate}");
    }

    [Fact]
    public void Does_train_packed_blocks_through_gradient_checkpointing_as_without_it()
    {
        using var model = new LlamaForCausalLM(TinyModels.Config, ScalarType.Float32, CPU);
        ModelIo.InitializeRandom(model, 3, std: 0.1);
        var settings = new Lowbit.Engine.Lora.LoraSettings { R = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj"] };
        var modules = Lowbit.Engine.Lora.LoraModel.Wrap(model, settings, 1, CPU);
        using (no_grad())
        {
            foreach (var (_, m) in modules)
            {
                m.B.normal_(0, 0.05);
            }
        }
        model.train();
        var random = new Random(6);
        var block = FineTuneDataset.Pack([Example(random, 20, 4), Example(random, 30, 6)], 64, DatasetFormat.Alpaca, pad: 0).Single();
        Tensor Grad(bool checkpointing)
        {
            model.Model.GradientCheckpointing = checkpointing;
            using (var scope = NewDisposeScope())
            {
                FineTuner.LossSum(model, [block], CPU, out _).backward();
            }
            GradientCheckpoint.Release(model.Model);
            var grad = modules[0].Module.A.grad!.clone();
            modules[0].Module.A.grad!.zero_();
            return grad;
        }

        using var plain = Grad(false);
        using var recomputed = Grad(true);

        Assert.True(plain.abs().max().item<float>() > 0);
        Assert.True(plain.allclose(recomputed, 1e-5, 1e-6));
    }
}
