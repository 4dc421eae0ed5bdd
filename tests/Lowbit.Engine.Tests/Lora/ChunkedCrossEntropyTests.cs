using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Training;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>
/// The chunked cross-entropy (frozen head, no full logits) against <c>cross_entropy(logits.float())</c> over the whole
/// logits, on the trained tiny-llama fixture (vocabulary 260, float32 on the CPU): the summed loss over counted targets
/// and the LoRA gradients after one backward, with prompt tokens masked out (alpaca-style response-only loss), a packed
/// block, and vocabulary chunks that do not divide the vocabulary (37: seven chunks of 37 and one of 1).
/// </summary>
public sealed class ChunkedCrossEntropyTests
{
    private static TrainingExample Example(Random random, int length, int promptLength, int vocab)
    {
        var ids = new int[length];
        ids[0] = 1;
        for (var i = 1; i < length; i++)
        {
            ids[i] = random.Next(3, vocab);
        }
        return new TrainingExample(ids, Enumerable.Range(0, length).Select(i => i >= promptLength).ToArray(), 1);
    }

    /// <summary>Two blocks of 48: a packed one (two prompt/response examples) and one response-only example.</summary>
    private static List<PackedBlock> Batch(int vocab)
    {
        var random = new Random(11);
        var packed = FineTuneDataset.Pack([Example(random, 20, 8, vocab), Example(random, 25, 10, vocab)], 48, DatasetFormat.Alpaca, pad: 0).Single();
        var single = FineTuneDataset.Pack([Example(random, 40, 15, vocab)], 48, DatasetFormat.Alpaca, pad: 0).Single();
        Assert.True(packed.IsPacked);
        return [packed, single];
    }

    private static (LlamaForCausalLM Model, IReadOnlyList<(string Path, LoraLinear Module)> Modules) Fixture()
    {
        var model = ModelLoading.Load(TokenizerTests.FixtureDirectory, ScalarType.Float32, CPU);
        var settings = new LoraSettings { R = 4, Alpha = 8, Dropout = 0.1, TargetModules = LoraSettings.AllTargets };
        var modules = LoraModel.Wrap(model, settings, 3, CPU);
        using (no_grad())
        {
            // B = 0 after PEFT's init would make every A gradient zero; give B values so both A and B are compared.
            foreach (var (_, m) in modules)
            {
                m.B.normal_(0, 0.02);
            }
        }
        model.train();
        return (model, modules);
    }

    /// <summary>The summed loss and every A/B gradient of one backward (then zeroed).</summary>
    private static (double Loss, List<Tensor> Grads) Step(LlamaForCausalLM model, IReadOnlyList<(string Path, LoraLinear Module)> modules,
        IReadOnlyList<PackedBlock> batch, Func<Tensor> loss)
    {
        double value;
        LoraLinear.DropoutSeed = 17;   // the same dropout masks for both paths
        using (var scope = NewDisposeScope())
        {
            var l = loss();
            value = l.to(ScalarType.Float64).item<double>();
            l.backward();
        }
        LoraLinear.DropoutSeed = null;
        GradientCheckpoint.Release(model.Model);
        var grads = new List<Tensor>();
        foreach (var (_, m) in modules)
        {
            grads.Add(m.A.grad!.clone());
            grads.Add(m.B.grad!.clone());
            m.A.grad!.zero_();
            m.B.grad!.zero_();
        }
        return (value, grads);
    }

    private static void AssertClose(List<Tensor> expected, List<Tensor> actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (var i = 0; i < expected.Count; i++)
        {
            var scale = expected[i].abs().max().item<float>();
            Assert.True(scale > 0, $"gradient {i} is zero: the comparison would be vacuous");
            var error = (expected[i] - actual[i]).abs().max().item<float>();
            Assert.True(error <= 1e-5 * scale + 1e-7, $"gradient {i}: max |difference| {error:E3} against max |value| {scale:E3}");
        }
    }

    [Fact]
    public void Does_give_the_loss_and_LoRA_gradients_of_the_full_logits_with_response_only_targets()
    {
        var (model, modules) = Fixture();
        using var owned = model;
        var batch = Batch((int)model.VocabSize);
        var counted = batch.Sum(b => b.TrainedTargets);
        Assert.True(counted < batch.Sum(b => b.Ids.Length - 1), "the batch must hold masked (prompt) positions");

        var (fullLoss, fullGrads) = Step(model, modules, batch, () => FineTuner.LossSum(model, batch, CPU, out _, fullLogits: true));
        // The training path (frozen head: chunked, one chunk of the 260-row vocabulary here).
        var (defaultLoss, defaultGrads) = Step(model, modules, batch, () => FineTuner.LossSum(model, batch, CPU, out _));
        // Chunks of 37 rows, through gradient checkpointing (the chunk backward then hands its gradient to a
        // checkpointed layer's recompute).
        model.Model.GradientCheckpointing = true;
        var (chunkedLoss, chunkedGrads) = Step(model, modules, batch, () =>
        {
            var (input, target) = FineTuner.Tensors(batch, CPU);
            var layout = PackedLayout.Of(batch.Select(b => b.Documents ?? new int[b.Ids.Length]).ToList(), (int)input.shape[1], CPU);
            var hidden = model.Hidden(input, layout);
            return ChunkedCrossEntropy.Sum(model, hidden.reshape(-1, hidden.shape[^1]), target.reshape(-1), model.Model, chunk: 37);
        });
        model.Model.GradientCheckpointing = false;

        Assert.True(fullLoss > 0);
        Assert.Equal(1.0, defaultLoss / fullLoss, 6);
        Assert.Equal(1.0, chunkedLoss / fullLoss, 6);
        AssertClose(fullGrads, defaultGrads);
        AssertClose(fullGrads, chunkedGrads);

        // The mask matters: counting every position gives another loss (so the equality above is not trivial).
        var all = batch.Select(b => new PackedBlock(b.Ids, Enumerable.Repeat(true, b.Ids.Length).ToArray(), b.Documents)).ToList();
        using (no_grad())
        {
            var unmasked = FineTuner.LossSum(model, all, CPU, out _).to(ScalarType.Float64).item<double>();
            Assert.True(Math.Abs(unmasked / fullLoss - 1) > 0.05, $"unmasked {unmasked}, masked {fullLoss}");
        }
    }

    [Fact]
    public void Does_match_the_full_logits_through_a_quantized_head_dequantized_a_chunk_at_a_time()
    {
        var (model, modules) = Fixture();
        using var owned = model;
        // A 4-bit packed lm_head (QLoRA-style base): each vocabulary chunk dequantizes only its own rows.
        model.ReplaceLinears((name, current) =>
        {
            if (name != "lm_head")
            {
                return null;
            }
            using var weight = current.DenseWeight(ScalarType.Float32);
            var q = Hqq.Quantize(weight, new HqqOptions { Bits = 4, GroupSize = 32 });
            return PackedQuantizedLinear.Create(q, null);
        }, includeLmHead: true);
        var head = Assert.IsType<PackedQuantizedLinear>(model.LmHead);
        using (var dense = head.DenseWeight(ScalarType.Float32))
        using (var rows = head.DenseRows(37, 74, ScalarType.Float32))
        {
            Assert.True(rows.equal(dense.narrow(0, 37, 74)).all().item<bool>());
        }
        var batch = Batch((int)model.VocabSize);

        var (fullLoss, fullGrads) = Step(model, modules, batch, () => FineTuner.LossSum(model, batch, CPU, out _, fullLogits: true));
        var (chunkedLoss, chunkedGrads) = Step(model, modules, batch, () =>
        {
            var (input, target) = FineTuner.Tensors(batch, CPU);
            var layout = PackedLayout.Of(batch.Select(b => b.Documents ?? new int[b.Ids.Length]).ToList(), (int)input.shape[1], CPU);
            var hidden = model.Hidden(input, layout);
            return ChunkedCrossEntropy.Sum(model, hidden.reshape(-1, hidden.shape[^1]), target.reshape(-1), model.Model, chunk: 64);
        });

        Assert.Equal(1.0, chunkedLoss / fullLoss, 6);
        AssertClose(fullGrads, chunkedGrads);
    }

    [Fact]
    public void Does_score_the_eval_split_as_the_full_logits_do()
    {
        var (model, _) = Fixture();
        using var owned = model;
        model.eval();
        var batch = Batch((int)model.VocabSize);
        double full, chunked;
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            full = FineTuner.LossSum(model, batch, CPU, out _, fullLogits: true).to(ScalarType.Float64).item<double>();
            chunked = FineTuner.LossSum(model, batch, CPU, out _).to(ScalarType.Float64).item<double>();
        }
        Assert.Equal(1.0, chunked / full, 6);
        Assert.Equal(chunked / batch.Sum(b => b.TrainedTargets), FineTuner.Evaluate(model, batch, 2, CPU), 9);
    }
}
