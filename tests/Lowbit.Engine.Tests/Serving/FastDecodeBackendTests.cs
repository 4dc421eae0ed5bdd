using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Network;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Serving;

/// <summary>
/// The server's fast backend (<see cref="FastDecodeBackend"/>: fused projections, static cache, LoRA stacks per
/// fused projection, batched prefill) against the unfused module-by-module <see cref="DecodeBatch"/> with per-module
/// adapter wrappers, on the trained fixture, driven like <see cref="ServeScheduler"/> drives them.
/// </summary>
public sealed class FastDecodeBackendTests
{
    private const int MaxContext = 96;
    private const int NewTokens = 16;

    private static readonly string[] Texts =
    [
        "And the LORD spake unto Moses, saying",
        "In the beginning",
        "Blessed are the",
        "And it came to pass, when the men of the city saw",
        "Thou shalt",
    ];

    /// <summary>Adapter per prompt: 1 = A, 2 = B, 0 = the base model.</summary>
    private static readonly int[] AdapterOf = [1, 2, 0, 1, 2];

    private static LlamaForCausalLM Fixture()
    {
        using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
        var model = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        model.eval();
        return model;
    }

    private static int[][] Prompts() => Texts.Select(t => (int[])[ByteTokenizer.Bos, .. new ByteTokenizer().Encode(t)]).ToArray();

    /// <summary>Two PEFT adapters on different modules with different ranks (A: q/v/down r4; B: k/o/gate/up r2, rsLoRA).</summary>
    internal static (string A, string B) WriteAdapters(TempDir temp)
    {
        var generator = new Generator(20261205);
        string Write(string name, int rank, (string Module, long In, long Out)[] modules, string extra)
        {
            var folder = Path.Combine(temp.Path, name);
            Directory.CreateDirectory(folder);
            var tensors = new Dictionary<string, Tensor>();
            foreach (var layer in Enumerable.Range(0, 4))
            {
                foreach (var (module, inFeatures, outFeatures) in modules)
                {
                    var key = $"base_model.model.model.layers.{layer}.{module}";
                    tensors[key + ".lora_A.weight"] = randn([rank, inFeatures], generator: generator) * Scalars.Of(0.15);
                    tensors[key + ".lora_B.weight"] = randn([outFeatures, rank], generator: generator) * Scalars.Of(0.15);
                }
            }
            SafetensorsWriter.Write(Path.Combine(folder, "adapter_model.safetensors"), tensors);
            var targets = string.Join(", ", modules.Select(m => $"\"{m.Module.Split('.')[1]}\""));
            File.WriteAllText(Path.Combine(folder, "adapter_config.json"), $$"""
                {"base_model_name_or_path": "tiny-llama", "bias": "none", "fan_in_fan_out": false, "lora_alpha": 8, "lora_dropout": 0.0,
                 "peft_type": "LORA", "r": {{rank}}, "target_modules": [{{targets}}], "task_type": "CAUSAL_LM"{{extra}}}
                """);
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }
            return folder;
        }
        return (
            Write("a", 4, [("self_attn.q_proj", 256, 256), ("self_attn.v_proj", 256, 128), ("mlp.down_proj", 768, 256)], ", \"use_rslora\": false"),
            Write("b", 2, [("self_attn.k_proj", 256, 128), ("self_attn.o_proj", 256, 256), ("mlp.gate_proj", 256, 768), ("mlp.up_proj", 256, 768)], ", \"use_rslora\": true"));
    }

    /// <summary>
    /// Greedy decoding of every prompt in its own slot (slot = index), as the scheduler runs it: prompts prefilled in
    /// chunks of at most <paramref name="chunk"/> tokens per request per round (all of a round's chunks in one call
    /// when <paramref name="together"/>, else one call per chunk after selecting its adapter), then decode steps over
    /// every row with each row's adapter.
    /// </summary>
    private static int[][] Greedy(IDecodeBackend backend, Action<int[]> selectRows, int[][] prompts, int[] adapters, int chunk, bool together)
    {
        var prefilled = new int[prompts.Length];
        var outputs = prompts.Select(_ => new List<int>()).ToArray();
        using var noGrad = no_grad();
        while (prefilled.Where((p, i) => p < prompts[i].Length).Any())
        {
            var chunks = Enumerable.Range(0, prompts.Length).Where(i => prefilled[i] < prompts[i].Length)
                .Select(i => new PrefillChunk { Slot = i, Tokens = prompts[i].Skip(prefilled[i]).Take(chunk).ToArray(), Start = prefilled[i], Adapter = adapters[i] })
                .ToList();
            using var scope = NewDisposeScope();
            var logits = together
                ? backend.Prefill(chunks)
                : stack(chunks.Select(c =>
                {
                    if (backend.BatchesPrefill)
                    {
                        return backend.Prefill([c])[0];
                    }
                    selectRows([c.Adapter]);
                    return backend.Prefill(c.Slot, c.Tokens, c.Start);
                }).ToArray());
            var next = logits.argmax(-1).data<long>().ToArray();
            for (var c = 0; c < chunks.Count; c++)
            {
                prefilled[chunks[c].Slot] += chunks[c].Tokens.Count;
                if (prefilled[chunks[c].Slot] == prompts[chunks[c].Slot].Length)
                {
                    outputs[chunks[c].Slot].Add((int)next[c]);
                }
            }
        }
        for (var step = 1; step < NewTokens; step++)
        {
            var rows = prompts.Length;
            var tokens = outputs.Select(o => (long)o[^1]).ToArray();
            var positions = prompts.Select((p, i) => (long)(p.Length + outputs[i].Count - 1)).ToArray();
            var attend = Math.Min(backend.MaxContext, (int)((positions.Max() + 64) / 64 * 64));
            selectRows(adapters);
            using var scope = NewDisposeScope();
            var next = backend.Step(tokens, positions, rows, attend).argmax(-1).data<long>().ToArray();
            for (var i = 0; i < rows; i++)
            {
                outputs[i].Add((int)next[i]);
            }
        }
        return outputs.Select(o => o.ToArray()).ToArray();
    }

    [Fact]
    public void Does_decode_a_mixed_adapter_batch_like_the_unfused_reference_and_each_prompt_alone()
    {
        TorchRuntime.Initialize();
        using var temp = new TempDir();
        var (a, b) = WriteAdapters(temp);
        var prompts = Prompts();

        int[][] reference;
        using (var model = Fixture())
        using (var adapters = new LoraSet(model, CPU, LoraLayout.ModuleWrappers))
        using (var batch = new DecodeBatch(model, prompts.Length, MaxContext, CPU))
        {
            adapters.Load("a", a);
            adapters.Load("b", b);
            reference = Greedy(batch, adapters.SelectRows, prompts, AdapterOf, chunk: 7, together: false);
        }

        using var fastModel = Fixture();
        using var fastAdapters = new LoraSet(fastModel, CPU);
        fastAdapters.Load("a", a);
        fastAdapters.Load("b", b);
        using var fast = new FastDecodeBackend(fastModel, 8, MaxContext, CPU, fastAdapters);
        var batched = Greedy(fast, fast.SelectAdapters, prompts, AdapterOf, chunk: 7, together: true);

        Assert.False(fast.Decoder.UsesGraphs);
        for (var i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(reference[i], batched[i]);
            // Each prompt served alone (slot 0, its adapter, one chunk) gives the same tokens.
            var alone = Greedy(fast, fast.SelectAdapters, [prompts[i]], [AdapterOf[i]], chunk: MaxContext, together: true);
            Assert.Equal(batched[i], alone[0]);
        }
        // The adapters change the output (so the comparison above covers their deltas): same prompt, other adapters.
        var others = Greedy(fast, fast.SelectAdapters, [prompts[0], prompts[0], prompts[0]], [0, 1, 2], chunk: MaxContext, together: true);
        Assert.Equal(batched[0], others[1]);
        Assert.NotEqual(others[0], others[1]);
        Assert.NotEqual(others[0], others[2]);
        Assert.NotEqual(others[1], others[2]);
    }

    [Fact]
    public void Does_prefill_several_requests_in_one_forward_like_one_at_a_time()
    {
        TorchRuntime.Initialize();
        using var temp = new TempDir();
        var (a, b) = WriteAdapters(temp);
        var prompts = Prompts();
        using var model = Fixture();
        using var adapters = new LoraSet(model, CPU);
        adapters.Load("a", a);
        adapters.Load("b", b);
        using var fast = new FastDecodeBackend(model, prompts.Length, MaxContext, CPU, adapters);

        var oneAtATime = Greedy(fast, fast.SelectAdapters, prompts, AdapterOf, chunk: 5, together: false);
        var together = Greedy(fast, fast.SelectAdapters, prompts, AdapterOf, chunk: 5, together: true);

        Assert.Equal(oneAtATime, together);

        // The logits of one batched prefill equal each chunk's own (within float32 GEMM rounding).
        using var noGrad = no_grad();
        var chunks = prompts.Select((p, i) => new PrefillChunk { Slot = i, Tokens = p, Start = 0, Adapter = AdapterOf[i] }).ToList();
        using var batched = fast.Prefill(chunks);
        for (var i = 0; i < chunks.Count; i++)
        {
            using var single = fast.Prefill([chunks[i]]);
            Assert.True(allclose(batched[i], single[0], rtol: 1e-4, atol: 1e-4), $"prompt {i}: max |Δ| {(batched[i] - single[0]).abs().max().item<float>()}");
        }
    }
}
