using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Serving;

/// <summary>
/// <c>serve --shards N</c> on the CPU: the fixture split into 2 and 3 pipeline stages (every stage on <c>cpu</c>, the
/// same code path as shards stacked on one GPU) decodes what the unsplit backend decodes, adapters included.
/// </summary>
public sealed class PipelineShardTests
{
    private const int MaxContext = 64;
    private const int Steps = 6;

    private static readonly string[] Texts = ["And the LORD spake unto Moses, saying", "In the beginning", "Blessed are the"];

    /// <summary>Adapter per prompt: 1 = A, 2 = B, 0 = the base model.</summary>
    private static readonly int[] AdapterOf = [1, 0, 2];

    private static int[][] Prompts() => Texts.Select(t => (int[])[ByteTokenizer.Bos, .. new ByteTokenizer().Encode(t)]).ToArray();

    /// <summary>The fixture loaded on the CPU, split over <paramref name="shards"/> cpu shards (1: not split), with adapters A and B.</summary>
    private static (LlamaForCausalLM Model, LoraSet Adapters, FastDecodeBackend Backend, ShardPlan? Plan) Build(int shards, (string A, string B)? adapters)
    {
        var config = LlamaConfig.Load(Path.Combine(TokenizerTests.FixtureDirectory, "config.json"));
        var plan = shards > 1
            ? PipelinePlacement.Plan(TokenizerTests.FixtureDirectory, config, ScalarType.Float32, 4, MaxContext + 1, Enumerable.Repeat(CPU, shards).ToArray())
            : null;
        // What serve does: the split model's projections are read onto their shards, then the rest is placed.
        var model = plan is null ? ModelLoading.Load(TokenizerTests.FixtureDirectory, ScalarType.Float32, CPU) : PipelinePlacement.Load(TokenizerTests.FixtureDirectory, ScalarType.Float32, plan);
        model.eval();
        if (plan is not null)
        {
            PipelinePlacement.Place(model, plan);
        }
        var set = new LoraSet(model, CPU, layerDevice: plan is null ? null : plan.LayerDevice);
        if (adapters is { } files)
        {
            set.Load("a", files.A);
            set.Load("b", files.B);
        }
        var backend = new FastDecodeBackend(model, 4, MaxContext, CPU, set,
            plan is null ? null : new FastDecoderOptions { MaxBatch = 4, MaxLength = MaxContext + 1, Shards = plan.DecoderShards });
        return (model, set, backend, plan);
    }

    /// <summary>Chunked batched prefill of every prompt (slot = index), then greedy decode steps over all rows; the tokens and every logits tensor.</summary>
    private static (int[][] Tokens, List<Tensor> Logits) Run(FastDecodeBackend backend, int[][] prompts, int[] adapters)
    {
        using var noGrad = no_grad();
        var logits = new List<Tensor>();
        var outputs = prompts.Select(_ => new List<int>()).ToArray();
        var done = new int[prompts.Length];
        while (done.Where((d, i) => d < prompts[i].Length).Any())
        {
            var chunks = Enumerable.Range(0, prompts.Length).Where(i => done[i] < prompts[i].Length)
                .Select(i => new PrefillChunk { Slot = i, Tokens = prompts[i].Skip(done[i]).Take(9).ToArray(), Start = done[i], Adapter = adapters[i] })
                .ToList();
            var prefill = backend.Prefill(chunks).DetachFromDisposeScope();
            logits.Add(prefill);
            var next = prefill.argmax(-1).data<long>().ToArray();
            for (var c = 0; c < chunks.Count; c++)
            {
                done[chunks[c].Slot] += chunks[c].Tokens.Count;
                if (done[chunks[c].Slot] == prompts[chunks[c].Slot].Length)
                {
                    outputs[chunks[c].Slot].Add((int)next[c]);
                }
            }
        }
        for (var step = 0; step < Steps; step++)
        {
            var tokens = outputs.Select(o => (long)o[^1]).ToArray();
            var positions = prompts.Select((p, i) => (long)(p.Length + outputs[i].Count - 1)).ToArray();
            backend.SelectAdapters(adapters);
            var stepLogits = backend.Step(tokens, positions, prompts.Length, MaxContext).DetachFromDisposeScope();
            logits.Add(stepLogits);
            var next = stepLogits.argmax(-1).data<long>().ToArray();
            for (var i = 0; i < prompts.Length; i++)
            {
                outputs[i].Add((int)next[i]);
            }
        }
        return (outputs.Select(o => o.ToArray()).ToArray(), logits);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Does_decode_the_same_tokens_and_logits_as_one_shard_when_split(int shards)
    {
        TorchRuntime.Initialize();
        using var temp = new TempDir();
        var files = FastDecodeBackendTests.WriteAdapters(temp);
        var prompts = Prompts();
        var (baseModel, baseAdapters, baseBackend, _) = Build(1, files);
        var (splitModel, splitAdapters, splitBackend, plan) = Build(shards, files);
        try
        {
            var (expectedTokens, expectedLogits) = Run(baseBackend, prompts, AdapterOf);
            var (tokens, logits) = Run(splitBackend, prompts, AdapterOf);

            Assert.Equal(shards, splitBackend.Decoder.Shards.Count);
            Assert.Equal(shards, plan!.Stages.Count);
            Assert.Equal(expectedTokens, tokens);
            Assert.Equal(expectedLogits.Count, logits.Count);
            for (var i = 0; i < logits.Count; i++)
            {
                Assert.Equal(expectedLogits[i].shape, logits[i].shape);
                Assert.True(expectedLogits[i].allclose(logits[i], rtol: 0, atol: 1e-4), $"logits {i} differ by {(expectedLogits[i] - logits[i]).abs().max().item<float>()}");
            }
            // The adapters change the output (so the comparison covers them): prompt 0 with adapter A differs from the base model.
            var (withoutAdapters, _) = Run(splitBackend, prompts, [0, 0, 0]);
            Assert.NotEqual(tokens[0], withoutAdapters[0]);
        }
        finally
        {
            foreach (var d in new IDisposable[] { baseBackend, baseAdapters, baseModel, splitBackend, splitAdapters, splitModel })
            {
                d.Dispose();
            }
        }
    }

    [Fact]
    public void Does_generate_the_same_greedy_tokens_when_the_bench_decode_step_is_split()
    {
        using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
        using var whole = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        using var split = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        var plan = PipelinePlacement.Plan(TokenizerTests.FixtureDirectory, split.Config, ScalarType.Float32, 2, 48, [CPU, CPU]);
        PipelinePlacement.Place(split, plan);
        using var one = FastDecoder.Create(whole, new FastDecoderOptions { MaxBatch = 2, MaxLength = 48 }, CPU);
        using var two = FastDecoder.Create(split, new FastDecoderOptions { MaxBatch = 2, MaxLength = 48, Shards = plan.DecoderShards }, CPU);
        var prompts = Prompts().Take(2).ToArray();

        var expected = FastGeneration.Generate(one, prompts, 10);
        var actual = FastGeneration.Generate(two, prompts, 10);

        Assert.Equal(expected, actual);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Does_generate_the_same_tokens_when_a_4_bit_export_is_split(bool quantizedHead)
    {
        var root = Directory.CreateTempSubdirectory("shards-int4").FullName;
        try
        {
            var directory = FastDecoderTests.Int4Export(root, quantizedHead);
            var config = LlamaConfig.Load(Path.Combine(directory, "config.json"));
            var plan = PipelinePlacement.Plan(directory, config, ScalarType.Float32, 2, 48, [CPU, CPU, CPU]);
            using var whole = ModelLoading.Load(directory, ScalarType.Float32, CPU);
            using var split = PipelinePlacement.Load(directory, ScalarType.Float32, plan);
            PipelinePlacement.Place(split, plan);
            using var one = FastDecoder.Create(whole, new FastDecoderOptions { MaxBatch = 2, MaxLength = 48 }, CPU);
            using var three = FastDecoder.Create(split, new FastDecoderOptions { MaxBatch = 2, MaxLength = 48, Shards = plan.DecoderShards }, CPU);
            var prompts = Prompts().Take(2).ToArray();

            var expected = FastGeneration.Generate(one, prompts, 10);
            var actual = FastGeneration.Generate(three, prompts, 10);

            // Packed codes count as stored (half a byte per weight), so a layer weighs well under its float32 size; a
            // quantized head (on the last stage) too.
            Assert.True(plan.WeightBytes.Sum() < 3_281_152L * 4 / 2);
            Assert.Equal(quantizedHead, split.LmHead is PackedQuantizedLinear);
            Assert.Equal(expected, actual);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Does_plan_contiguous_stages_with_the_embedding_first_and_the_head_last()
    {
        var config = LlamaConfig.Load(Path.Combine(TokenizerTests.FixtureDirectory, "config.json"));

        var plan = PipelinePlacement.Plan(TokenizerTests.FixtureDirectory, config, ScalarType.Float32, 8, 257, [CPU, CPU]);

        Assert.Equal([0, 2], plan.Stages.Select(s => s.FirstLayer));
        Assert.Equal([2, 2], plan.Stages.Select(s => s.LayerCount));
        Assert.True(plan.Stages[0].HoldsEmbedding && plan.Stages[1].HoldsHead);
        // Each layer's KV slab: keys and values, 8 slots x 257 positions x kv heads x head dim, float32.
        var slab = 2L * 8 * 257 * config.NumKeyValueHeads * config.HeadDim * 4;
        Assert.Equal([2 * slab, 2 * slab], plan.CacheBytes);
        // The fixture's 3,281,152 parameters, counted in float32; the tied head counts again on the last shard when tied.
        Assert.Equal(3_281_152L * 4 + (config.TieWordEmbeddings ? (long)config.VocabSize * config.HiddenSize * 4 : 0), plan.WeightBytes.Sum());
        Assert.Contains("shard 1: layers 2-3 on cpu (+ final norm and head)", plan.Describe(1), StringComparison.Ordinal);
    }

    [Fact]
    public void Does_move_each_module_to_its_shard_when_placed()
    {
        using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
        using var model = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        var meta = LlamaForCausalLM.MetaDevice;
        var plan = PipelinePlacement.Plan(TokenizerTests.FixtureDirectory, model.Config, ScalarType.Float32, 1, 17, [CPU, meta]);

        PipelinePlacement.Place(model, plan);

        // The meta device stands in for a second GPU: the fields the fused decoder reads moved, not only the registered parameters.
        var q = (DenseLinear)model.Model.Layers[3].Projections().First(p => p.Name == "self_attn.q_proj").Layer;
        var first = (DenseLinear)model.Model.Layers[0].Projections().First(p => p.Name == "self_attn.q_proj").Layer;
        Assert.Equal(DeviceType.META, q.Weight.device_type);
        Assert.Equal(DeviceType.CPU, first.Weight.device_type);
        Assert.All(model.Model.Layers[2].parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        Assert.All(model.Model.Layers[1].parameters(), p => Assert.Equal(DeviceType.CPU, p.device_type));
        Assert.Equal(DeviceType.CPU, model.Model.EmbedTokens.weight!.device_type);
        Assert.Equal(DeviceType.META, model.Model.Norm.parameters().Single().device_type);
        Assert.Equal(DeviceType.META, ((DenseLinear)model.LmHead!).Weight.device_type);
    }

    [Fact]
    public void Does_name_shards_when_there_are_more_shards_than_layers()
    {
        var config = LlamaConfig.Load(Path.Combine(TokenizerTests.FixtureDirectory, "config.json"));

        var ex = Assert.Throws<ProtocolArgumentException>(() =>
            PipelinePlacement.Plan(TokenizerTests.FixtureDirectory, config, ScalarType.Float32, 1, 17, Enumerable.Repeat(CPU, config.NumHiddenLayers + 1).ToArray()));

        Assert.Equal("--shards", ex.Argument);
    }

    [Fact]
    public void Does_ask_for_shard_devices_when_a_pod_has_fewer_gpus_than_shards()
    {
        var cuda = new Device(TorchSharp.DeviceType.CUDA, 0);

        var tooMany = Assert.Throws<ProtocolArgumentException>(() => PipelinePlacement.ResolveDevices(new ServeRequest { Model = "m", Shards = 4 }, cuda, visibleGpus: 1));
        var missing = Assert.Throws<ProtocolArgumentException>(() =>
            PipelinePlacement.ResolveDevices(new ServeRequest { Model = "m", Shards = 2, ShardDevices = ["cuda:0", "cuda:2"] }, cuda, visibleGpus: 2));
        var wrongKind = Assert.Throws<ProtocolArgumentException>(() =>
            PipelinePlacement.ResolveDevices(new ServeRequest { Model = "m", Shards = 2, ShardDevices = ["cuda:0", "cuda:1"] }, CPU, visibleGpus: 0));
        var stacked = PipelinePlacement.ResolveDevices(new ServeRequest { Model = "m", Shards = 2, ShardDevices = ["cuda:0", "cuda:0"] }, cuda, visibleGpus: 1);
        var spread = PipelinePlacement.ResolveDevices(new ServeRequest { Model = "m", Shards = 3 }, cuda, visibleGpus: 4);

        Assert.Equal("--shards", tooMany.Argument);
        Assert.Contains("4 shards need 4 GPUs; this pod sees 1", tooMany.Message, StringComparison.Ordinal);
        Assert.Contains("--shard-devices", tooMany.Message, StringComparison.Ordinal);
        Assert.Equal("--shard-devices", missing.Argument);
        Assert.Contains("cuda:2", missing.Message, StringComparison.Ordinal);
        Assert.Equal("--shard-devices", wrongKind.Argument);
        Assert.Equal(["cuda:0", "cuda:0"], stacked.Select(PipelinePlacement.Name));
        Assert.Equal(["cuda:0", "cuda:1", "cuda:2"], spread.Select(PipelinePlacement.Name));
        Assert.Empty(PipelinePlacement.ResolveDevices(new ServeRequest { Model = "m" }, cuda, visibleGpus: 1));
    }

    [Fact]
    public void Does_exit_42_naming_shards_when_a_gguf_model_is_split()
    {
        using var dir = new TempDir();
        var gguf = dir.File("model.gguf");
        File.WriteAllBytes(gguf, []);
        var stderr = new StringWriter();

        var exit = EngineCli.Run(["serve", "--model", gguf, "--device", "cpu", "--shards", "2"], TextWriter.Null, stderr, TimeProvider.System);

        Assert.Equal(EngineExitCodes.BadInput, exit);
        Assert.Contains("--shards: a GGUF model runs on llama.cpp", stderr.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_serve_the_same_completion_with_an_adapter_when_split_into_two_shards()
    {
        TorchRuntime.Initialize();
        using var temp = new TempDir();
        var (a, _) = FastDecodeBackendTests.WriteAdapters(temp);
        var options = ServeFixture.Options() with { ApiKey = null, WarmUp = false, MaxConcurrency = 2, MaxContext = 64, Adapters = new Dictionary<string, string> { ["a"] = a } };
        var logs = new List<string>();
        var body = """{"model": "a", "prompt": "And the LORD spake", "max_tokens": 12, "temperature": 0}""";
        var texts = new List<string>();
        foreach (var devices in new[] { Array.Empty<Device>(), [CPU, CPU] })
        {
            await using var host = await ServeHost.StartAsync(options with { ShardDevices = devices }, TimeProvider.System, line => { lock (logs) { logs.Add(line); } });
            using var http = new HttpClient { BaseAddress = host.Address, Timeout = TimeSpan.FromSeconds(60) };
            using var response = await http.PostAsync("/v1/completions", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
            var json = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            texts.Add(json["choices"]![0]!["text"]!.GetValue<string>());
        }

        Assert.Equal(12, new ByteTokenizer().Encode(texts[0]).Count);
        Assert.Equal(texts[0], texts[1]);
        Assert.Contains(logs, l => l.StartsWith("pipeline split: 2 shards on cpu,cpu", StringComparison.Ordinal));
        Assert.Contains(logs, l => l.StartsWith("shard 0: layers 0-1 on cpu (+ embedding)", StringComparison.Ordinal));
        Assert.Contains(logs, l => l.Contains("split over 2 pipeline shards", StringComparison.Ordinal));
    }
}
