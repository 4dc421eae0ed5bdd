using Lowbit.Engine.Decoding;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Generation;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests;

public class FastDecoderTests
{
    private static LlamaForCausalLM Fixture()
    {
        using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
        return ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
    }

    private static readonly int[] Prompt = [ByteTokenizer.Bos, 'A', 'n', 'd', ' ', 't', 'h', 'e'];

    [Fact]
    public void Does_decode_the_same_greedy_tokens_as_the_eager_generator()
    {
        using var model = Fixture();
        var eager = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 20 }, CPU).ToArray();
        using var decoder = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 1, MaxLength = 40 }, CPU);

        var fast = FastGeneration.Generate(decoder, [Prompt], 20);

        Assert.False(decoder.UsesGraphs);
        Assert.Equal(eager, fast[0]);
    }

    [Fact]
    public void Does_prefill_many_prompts_in_passes_of_the_batched_token_limit_as_one_prompt_at_a_time_would()
    {
        // Three prompts of 200-260 tokens: 512 tokens per pass on the CPU puts the first two in one pass and the third
        // in its own. Each slot's next token, logits row and position must be what prefilling it alone gives.
        using var model = Fixture();
        var prompts = new[] { 200, 230, 260 }.Select(n => (IReadOnlyList<int>)Enumerable.Range(0, n).Select(i => Prompt[i % Prompt.Length]).Prepend(ByteTokenizer.Bos).ToArray()).ToList();
        using var together = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 4, MaxLength = 300 }, CPU);
        using var alone = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 4, MaxLength = 300 }, CPU);

        together.Prefill(prompts);
        var expected = prompts.Select((p, b) => alone.Prefill(b, p)).ToArray();

        Assert.Equal(512, together.PrefillTokensPerForward);
        Assert.Equal(expected, together.NextTokens(3).Select(t => (int)t).ToArray());
        Assert.Equal(prompts.Select(p => (long)p.Count), Enumerable.Range(0, 3).Select(together.Position));
        Assert.True(together.Logits.narrow(0, 0, 3).allclose(alone.Logits.narrow(0, 0, 3), rtol: 1e-4, atol: 1e-4));
        Assert.Equal(FastGeneration.Generate(alone, prompts, 6), FastGeneration.Generate(together, prompts, 6));
    }

    [Fact]
    public void Does_keep_one_copy_of_the_fused_weights_and_the_model_unchanged()
    {
        using var model = Fixture();
        var before = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 12 }, CPU).ToArray();
        var q = (DenseLinear)model.Model.Layers[0].SelfAttention.Projections().First(p => p.Name == "q_proj").Layer;
        var k = (DenseLinear)model.Model.Layers[0].SelfAttention.Projections().First(p => p.Name == "k_proj").Layer;
        using var qBefore = q.Weight.detach().clone();

        using var decoder = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 1, MaxLength = 32 }, CPU);

        // k is now a view of the fused QKV weight right after q's rows (not a copy); q keeps its values.
        Assert.Equal(q.Weight.NumberOfElements, k.Weight.storage_offset());
        Assert.True(q.Weight.equal(qBefore).all().item<bool>());
        Assert.Equal(before, TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 12 }, CPU).ToArray());
    }

    [Fact]
    public void Does_decode_the_same_tokens_through_the_fused_step_in_any_mix_of_fused_layers_and_stages()
    {
        // The fused decode step (norms inside the following projection, residual adds inside the preceding one, RoPE and
        // the cache write together) with its variants emulated by the separate kernels' torch forms: every mix of fused
        // and unfused layers, and a two-stage split, must give the eager generator's tokens for each slot.
        using var model = Fixture();
        int[] other = [ByteTokenizer.Bos, 'I', 'n', ' '];
        var first = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 14 }, CPU).ToArray();
        var second = TextGenerator.Generate(model, other, new GenerationOptions { MaxNewTokens = 14 }, CPU).ToArray();
        var layers = model.Model.Layers.Count;
        Assert.True(layers >= 4, "the fixture needs layers to mix");
        var mixes = new (string Name, Func<int, bool> Fused, IReadOnlyList<DecoderShard>? Shards)[]
        {
            ("all fused", _ => true, null),
            ("all fused, SiLU·mul in the down projection's prologue (one row)", _ => true, null),
            ("all fused, no gate/up epilogue: SiLU·mul as its own kernel (two rows)", _ => true, null),
            ("even layers fused", i => i % 2 == 0, null),
            ("odd layers fused", i => i % 2 == 1, null),
            ("none fused", _ => false, null),
            ("all fused, two stages", _ => true, [new DecoderShard { Device = CPU, FirstLayer = 0, LayerCount = 2 }, new DecoderShard { Device = CPU, FirstLayer = 2, LayerCount = layers - 2 }]),
            ("last of stage one unfused, two stages", i => i != 1, [new DecoderShard { Device = CPU, FirstLayer = 0, LayerCount = 2 }, new DecoderShard { Device = CPU, FirstLayer = 2, LayerCount = layers - 2 }]),
        };
        foreach (var (name, fused, shards) in mixes)
        {
            // The gate/up projection writes SiLU(gate)·up itself (RmsNormSiluMul) unless the mix says otherwise; without
            // it, SiLU·mul runs in the down projection's prologue at one row and as its own kernel at more.
            var epilogue = !name.Contains("prologue", StringComparison.Ordinal) && !name.Contains("no gate/up epilogue", StringComparison.Ordinal);
            var oneRow = name.Contains("(one row)", StringComparison.Ordinal);
            using var decoder = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 2, MaxLength = 40, EmulatedFusion = fused, Shards = shards, GateUpEpilogue = epilogue }, CPU);

            var output = FastGeneration.Generate(decoder, oneRow ? [Prompt] : [Prompt, other], 14);

            Assert.True(decoder.UsesDecodeFusion, name);
            Assert.True(first.SequenceEqual(output[0]), $"{name}: slot 0 differs");
            Assert.True(oneRow || second.SequenceEqual(output[1]), $"{name}: slot 1 differs");
        }
    }

    [Fact]
    public void Does_give_the_unfused_logits_when_the_head_normalizes_the_last_layer_output()
    {
        // The fused step leaves the final RMSNorm to the head's GEMV prologue when the last layer is fused (its residual
        // stream is not normalized yet) and not when it is unfused (its own RMSNorm already took the final norm): either
        // way the logits must be the unfused step's, not normalized twice or not at all. The final norm's weight is made
        // uneven so that a missing or doubled norm moves the logits, not only their scale.
        using var model = Fixture();
        using (no_grad())
        {
            var finalNorm = model.Model.Norm.parameters().First();
            finalNorm.copy_(linspace(0.5, 1.5, finalNorm.shape[0], finalNorm.dtype));
        }
        var layers = model.Model.Layers.Count;
        float[] Logits(FastDecoderOptions options)
        {
            using var decoder = FastDecoder.Create(model, options, CPU);
            decoder.Prefill(0, Prompt);
            using var logits = decoder.StepLogits([Prompt[^1]], [Prompt.Length], [0], Prompt.Length + 1).to(ScalarType.Float32);
            return logits.reshape(-1).data<float>().ToArray();
        }
        var reference = Logits(new FastDecoderOptions { MaxBatch = 1, MaxLength = 32 });
        foreach (var (name, fused) in new (string, Func<int, bool>)[] { ("last layer fused", _ => true), ("last layer unfused", i => i != layers - 1) })
        {
            var logits = Logits(new FastDecoderOptions { MaxBatch = 1, MaxLength = 32, EmulatedFusion = fused });
            var worst = reference.Zip(logits, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(worst < 1e-4, $"{name}: logits differ by {worst}");
        }
    }

    [Fact]
    public void Does_decode_each_slot_of_a_batch_as_if_alone()
    {
        using var model = Fixture();
        int[] other = [ByteTokenizer.Bos, 'I', 'n', ' '];
        var alone = TextGenerator.Generate(model, other, new GenerationOptions { MaxNewTokens = 12 }, CPU).ToArray();
        var first = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 12 }, CPU).ToArray();
        using var decoder = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 4, MaxLength = 32 }, CPU);

        // Prompts of different lengths: each slot attends only to its own positions.
        var output = FastGeneration.Generate(decoder, [Prompt, other, other], 12);

        Assert.Equal(first, output[0]);
        Assert.Equal(alone, output[1]);
        Assert.Equal(alone, output[2]);
    }

    [Fact]
    public void Does_stream_until_a_stop_token()
    {
        using var model = Fixture();
        var greedy = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 10 }, CPU).ToArray();
        using var decoder = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 1, MaxLength = 32 }, CPU);

        var streamed = FastGeneration.Stream(decoder, Prompt, 10, [greedy[3]]).ToArray();

        Assert.Equal(greedy.Take(streamed.Length), streamed);
        Assert.True(streamed.Length <= 4);
    }

    [Fact]
    public void Does_decode_a_4_bit_model_like_its_quantized_layers()
    {
        using var model = Fixture();
        const int group = 32;
        model.ReplaceLinears((_, layer) => layer is DenseLinear dense && dense.InFeatures % group == 0
            ? new QuantizedLinear(Rtn.Quantize(dense.Weight, new RtnOptions { Bits = 4, GroupSize = group }), null)
            : null);
        var eager = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 16 }, CPU).ToArray();
        using var decoder = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 1, MaxLength = 32 }, CPU);

        var fast = FastGeneration.Generate(decoder, [Prompt], 16);

        Assert.Equal(eager, fast[0]);
    }

    [Fact]
    public void Does_fuse_a_loaded_4_bit_export_into_views_of_its_packed_codes()
    {
        var root = Directory.CreateTempSubdirectory("fast-int4").FullName;
        try
        {
            var directory = Int4Export(root);
            using var model = LowbitCheckpoint.Load(directory, ScalarType.Float32, CPU);
            var eager = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 16 }, CPU).ToArray();
            var layer = model.Model.Layers[0];
            PackedQuantizedLinear Part(string name) => (PackedQuantizedLinear)layer.Projections().First(p => p.Name == name).Layer;
            var (q, k, v) = (Part("self_attn.q_proj"), Part("self_attn.k_proj"), Part("self_attn.v_proj"));
            using var kBefore = k.Packed.clone();

            using var decoder = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 1, MaxLength = 32 }, CPU);

            // k's codes, scales and zeros are now views of the fused QKV weight right after q's rows: one copy of the
            // packed model, not the layers' bytes plus a fused concatenation.
            Assert.Equal(q.Packed.NumberOfElements, k.Packed.storage_offset());
            Assert.Equal(q.Packed.NumberOfElements + k.Packed.NumberOfElements, v.Packed.storage_offset());
            Assert.Equal(q.Scales.NumberOfElements, k.Scales.storage_offset());
            Assert.True(k.Packed.equal(kBefore).all().item<bool>());
            Assert.Equal(eager, FastGeneration.Generate(decoder, [Prompt], 16)[0]);
            Assert.Equal(eager, TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 16 }, CPU).ToArray());
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Does_decode_an_export_with_a_4_bit_head_as_the_eager_generator_does()
    {
        // quantize --quantize-head: the head loads packed, and the fast step (plain, and fused with the final RMSNorm in
        // the head's GEMV prologue) gives the eager generator's tokens.
        var root = Directory.CreateTempSubdirectory("fast-int4-head").FullName;
        try
        {
            using var model = LowbitCheckpoint.Load(Int4Export(root, head: true), ScalarType.Float32, CPU);
            Assert.IsType<PackedQuantizedLinear>(model.LmHead);
            var eager = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 16 }, CPU).ToArray();
            foreach (var fused in new Func<int, bool>?[] { null, _ => true })
            {
                using var decoder = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 1, MaxLength = 32, EmulatedFusion = fused }, CPU);
                Assert.Equal(eager, FastGeneration.Generate(decoder, [Prompt], 16)[0]);
            }
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    internal static string Int4Export(string root, bool head = false)
    {
        using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
        using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions { Method = QuantizationMethod.Rtn, Bits = 4, GroupSize = 32, QuantizeHead = head });
        var directory = Path.Combine(root, head ? "int4-head" : "int4");
        LowbitCheckpoint.Write(directory, checkpoint, quantized);
        return directory;
    }

    [Fact]
    public void Does_pack_4_bit_codes_as_the_lowbit_format_does()
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        var weight = randn(6, 128);
        using var q = Rtn.Quantize(weight, new RtnOptions { Bits = 4, GroupSize = 64 });
        using var packed = Int4Weight.From(q);

        var expected = BitPacking.PackBits(q.Codes.contiguous().data<byte>().ToArray(), 4);

        Assert.Equal(expected, packed.Packed.contiguous().data<byte>().ToArray());
        Assert.Equal(q.Dequantize().data<float>().ToArray(), packed.Dequantize(ScalarType.Float32).data<float>().ToArray());
    }

    [Fact]
    public void Does_dequantize_4_bit_weights_slice_by_slice_to_the_same_values()
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var weight = randn(37, 256);
        using var q = Rtn.Quantize(weight, new RtnOptions { Bits = 4, GroupSize = 64 });
        using var packed = Int4Weight.From(q);
        var expected = q.Dequantize();

        // 5 rows per slice (5 × 256 × 4 bytes): eight slices, the last one of 2 rows.
        var sliced = packed.Dequantize(ScalarType.Float32, sliceBytes: 5 * 256 * 4);
        var bf16 = packed.Dequantize(ScalarType.BFloat16, sliceBytes: 5 * 256 * 4);

        Assert.Equal(expected.data<float>().ToArray(), sliced.data<float>().ToArray());
        Assert.Equal(expected.to(ScalarType.BFloat16).to(ScalarType.Float32).data<float>().ToArray(), bf16.to(ScalarType.Float32).data<float>().ToArray());
    }

    [Fact]
    public void Does_multiply_by_a_4_bit_weight_a_slice_of_rows_at_a_time_as_by_the_whole_dense_weight()
    {
        using var scope = NewDisposeScope();
        manual_seed(12);
        using var q = Rtn.Quantize(randn(45, 128), new RtnOptions { Bits = 4, GroupSize = 32 });
        using var packed = Int4Weight.From(q);
        var x = randn(6, 128);
        var bias = randn(45);
        var whole = nn.functional.linear(x, q.Dequantize(), bias);

        // 10 rows of 16-bit weight per slice (10 × 128 × 2 bytes): five slices, the last of 5 rows.
        var sliced = Int4Projection.DequantizedLinear(x, packed, bias, sliceBytes: 10 * 128 * 2);

        Assert.Equal(new long[] { 6, 45 }, sliced.shape);
        // fp32 summation order differs between a [6, 10] and a [6, 45] matmul (the CPU kernels block them differently,
        // and with the thread count): ~1e-5 on outputs of magnitude ~10; a wrong slice would be off by O(1).
        Assert.True(sliced.allclose(whole, rtol: 1e-5, atol: 1e-4), $"max difference {(sliced - whole).abs().max().item<float>()}");
    }
}
