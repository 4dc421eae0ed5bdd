using LLama;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Generation;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using Lowbit.Engine.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>
/// The GGUF LoRA adapter <c>finetune --gguf-adapter true</c> writes, loaded by real llama.cpp (LLamaSharp 0.30's CPU
/// natives, <c>llama_adapter_lora_init</c>) on a float32 GGUF export of the fixture: it changes llama.cpp's output the
/// way the PEFT adapter changes our TorchSharp engine's (greedy tokens equal, next-token log-probabilities close).
/// </summary>
public sealed class LlamaCppLoraTests(ITestOutputHelper output)
{
    private const string Prompt = "Count to 5:";
    private const int NewTokens = 16;

    private static string Fixture => TokenizerTests.FixtureDirectory;

    private static string Train(TempDir dir)
    {
        var lines = Enumerable.Range(0, 40).Select(i => System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = $"Count to {i % 4 + 3}: " + string.Join(' ', Enumerable.Range(1, i % 4 + 3)) + "." }));
        File.WriteAllLines(dir.File("count.jsonl"), lines);
        new FineTuner(new FineTuneRequest
        {
            BaseModel = Fixture, Method = FineTuneMethod.Lora, Dataset = dir.File("count.jsonl"), DatasetFormat = DatasetFormat.Text,
            Out = dir.File("adapter"), R = 8, Alpha = 16, Dropout = 0, TargetModules = LoraSettings.AllTargets, SeqLength = 96, MicroBatch = 4,
            MaxSteps = 20, LearningRate = 3e-3, WarmupSteps = 2, EvalSplit = 0, Seed = 2, Device = ComputeDevice.Cpu, GgufAdapter = true,
        }, Fixture, _ => { }).Run();
        return dir.File("adapter");
    }

    private static IReadOnlyList<int> PromptIds() => [ByteTokenizer.Bos, .. new ByteTokenizer().Encode(Prompt)];

    private static (List<int> Greedy, float[] FirstLogits) Ours(string? adapter)
    {
        using var model = ModelLoading.Load(Fixture, ScalarType.Float32, CPU);
        if (adapter is not null)
        {
            using var read = PeftAdapter.Read(adapter);
            LoraModel.Apply(model, read, CPU);
        }
        model.eval();
        var greedy = TextGenerator.Generate(model, PromptIds(), new GenerationOptions { MaxNewTokens = NewTokens }, CPU).ToList();
        using var noGrad = no_grad();
        using var ids = tensor(PromptIds().Select(i => (long)i).ToArray(), [1, PromptIds().Count]);
        using var logits = model.forward(ids, null);
        return (greedy, logits[0, -1].data<float>().ToArray());
    }

    private static int ArgMax(float[] values) => Array.IndexOf(values, values.Max());

    /// <summary>Greedy decode of <paramref name="rows"/> slots together, slot r with adapter row rows[r].</summary>
    private static (List<int>[] Greedy, float[][] First) LlamaCpp(LlamaCppBackend backend, int[] rows)
    {
        var prompt = PromptIds();
        var greedy = rows.Select(_ => new List<int>()).ToArray();
        var first = new float[rows.Length][];
        for (var r = 0; r < rows.Length; r++)
        {
            backend.SelectPrefillAdapter(rows[r]);
            using var logits = backend.Prefill(r, prompt, 0);
            first[r] = logits.data<float>().ToArray();
            greedy[r].Add(ArgMax(first[r]));
        }
        for (var step = 1; step < NewTokens; step++)
        {
            backend.SelectAdapters(rows);
            using var logits = backend.Step(greedy.Select(g => (long)g[^1]).ToArray(), greedy.Select(g => (long)(prompt.Count + g.Count - 1)).ToArray(), rows.Length, 128);
            for (var r = 0; r < rows.Length; r++)
            {
                greedy[r].Add(ArgMax(logits[r].data<float>().ToArray()));
            }
        }
        return (greedy, first);
    }

    private static double MaxLogProbDifference(float[] a, float[] b)
    {
        static double[] LogSoftmax(float[] x)
        {
            var max = x.Max();
            var sum = Math.Log(x.Sum(v => Math.Exp(v - max))) + max;
            return x.Select(v => v - sum).ToArray();
        }
        var (la, lb) = (LogSoftmax(a), LogSoftmax(b));
        return la.Select((v, i) => v > Math.Log(1e-4) ? Math.Abs(v - lb[i]) : 0).Max();
    }

    [Fact]
    public async Task Does_change_llama_cpp_output_like_our_engine_with_the_finetune_gguf_adapter()
    {
        TorchRuntime.Initialize();
        using var dir = new TempDir();
        var adapter = Train(dir);
        var gguf = FixtureGguf.Export(dir, GgmlType.F32);
        var (oursBase, oursAdapted) = (Ours(null), Ours(adapter));

        List<int>[] mixed, alone;
        float[][] mixedFirst, aloneFirst;
        using (var weights = LLamaWeights.LoadFromFile(LlamaCppBackend.ContextParameters(gguf, 2, 128, 64)))
        using (var backend = new LlamaCppBackend(weights, gguf, 2, 128, 64))
        {
            Assert.Equal(1, backend.LoadAdapter("count", adapter));
            // Slot 0 with the adapter and slot 1 on the base in the same steps, then the adapted slot alone.
            (mixed, mixedFirst) = LlamaCpp(backend, [1, 0]);
            (alone, aloneFirst) = LlamaCpp(backend, [1]);
        }

        var bytes = new ByteTokenizer();
        output.WriteLine($"ours base      : {bytes.Decode(oursBase.Greedy)}");
        output.WriteLine($"ours + adapter : {bytes.Decode(oursAdapted.Greedy)}");
        output.WriteLine($"llama.cpp + adapter: {bytes.Decode(mixed[0])}, base: {bytes.Decode(mixed[1])}");
        var adaptedDelta = MaxLogProbDifference(oursAdapted.FirstLogits, mixedFirst[0]);
        var baseDelta = MaxLogProbDifference(oursBase.FirstLogits, mixedFirst[1]);
        output.WriteLine($"max |Δ log p| first token (p > 1e-4): adapted {adaptedDelta:E2}, base {baseDelta:E2}");

        // The adapter changes the output (else the comparison below proves nothing).
        Assert.NotEqual(oursBase.Greedy, oursAdapted.Greedy);
        // llama.cpp with our adapter: our adapted greedy tokens, token for token; without it, our base tokens.
        Assert.Equal(oursAdapted.Greedy, mixed[0]);
        Assert.Equal(oursBase.Greedy, mixed[1]);
        Assert.Equal(mixed[0], alone[0]);
        // Both float32: next-token log-probabilities within 5e-3 (measured 6.7e-4 adapted, 7.1e-4 base: summation order
        // differs between the engines), while the adapter moves them by far more.
        Assert.InRange(adaptedDelta, 0, 5e-3);
        Assert.InRange(baseDelta, 0, 5e-3);
        Assert.True(MaxLogProbDifference(mixedFirst[0], mixedFirst[1]) > 0.1);
        Assert.Equal(mixedFirst[0], aloneFirst[0]);

        // serve --model X.gguf --adapters count=ADAPTER_DIR: the adapter is a model of /v1/models and answers as above.
        await using var host = await ServeHost.StartAsync(new ServeOptions
        {
            ModelDirectory = gguf, ServedName = "fixture", Host = "127.0.0.1", Port = 0, MaxConcurrency = 2, MaxContext = 128, Device = CPU,
            Adapters = new Dictionary<string, string> { ["count"] = adapter },
        }, TimeProvider.System, _ => { });
        using var http = new HttpClient { BaseAddress = host.Address, Timeout = TimeSpan.FromSeconds(60) };
        var models = System.Text.Json.Nodes.JsonNode.Parse(await http.GetStringAsync("/v1/models"))!["data"]!.AsArray().Select(m => (string?)m!["id"]);
        Assert.Equal(["fixture", "count"], models);
        async Task<string?> Complete(string model)
        {
            using var response = await http.PostAsync("/v1/completions", new StringContent(
                $$"""{"model":"{{model}}","prompt":"{{Prompt}}","max_tokens":{{NewTokens}},"temperature":0}""", System.Text.Encoding.UTF8, "application/json"));
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, body);
            return (string?)System.Text.Json.Nodes.JsonNode.Parse(body)!["choices"]![0]!["text"];
        }
        Assert.Equal(bytes.Decode(oursAdapted.Greedy), await Complete("count"));
        Assert.Equal(bytes.Decode(oursBase.Greedy), await Complete("fixture"));
    }

    [Fact]
    public void Does_exit_42_naming_adapters_for_a_peft_folder_without_a_gguf_adapter()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("peft"));
        File.WriteAllText(Path.Combine(dir.File("peft"), "adapter_config.json"), "{}");

        var ex = Assert.Throws<EngineInputException>(() => LlamaCppBackend.AdapterFile("a", dir.File("peft")));

        Assert.StartsWith("--adapters: a:", ex.Message, StringComparison.Ordinal);
        Assert.Contains("--gguf-adapter true", ex.Message, StringComparison.Ordinal);
    }
}
