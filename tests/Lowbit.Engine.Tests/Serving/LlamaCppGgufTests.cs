using LLama;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Generation;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Serving;

/// <summary>
/// Our GGUF exports of the trained fixture, loaded by llama.cpp (LLamaSharp 0.30's CPU natives): llama.cpp's
/// tokenizer gives our byte tokenizer's ids, and its greedy continuation and logits match our TorchSharp engine on
/// the 16-bit weights.
/// </summary>
public sealed class LlamaCppGgufTests(ITestOutputHelper output)
{
    private const string Prompt = "And the LORD spake unto Moses, saying";
    private const int NewTokens = 24;

    private static (List<int> Prompt, List<int> Greedy, float[] FirstLogits) Ours()
    {
        using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
        using var model = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        var prompt = new List<int> { ByteTokenizer.Bos };
        prompt.AddRange(new ByteTokenizer().Encode(Prompt));
        var greedy = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = NewTokens }, CPU).ToList();
        using var batch = new DecodeBatch(model, 1, 128, CPU);
        using var logits = batch.Prefill(0, prompt, 0);
        return (prompt, greedy, logits.data<float>().ToArray());
    }

    private static (List<int> Prompt, List<int> Greedy, float[] FirstLogits) LlamaCpp(string path)
    {
        var parameters = LlamaCppBackend.ContextParameters(path, 1, 128, 64);
        using var weights = LLamaWeights.LoadFromFile(parameters);
        var tokenizer = new LlamaCppTokenizer(weights);
        var prompt = new List<int> { tokenizer.BosId ?? -1 };
        prompt.AddRange(tokenizer.Encode(Prompt));
        using var backend = new LlamaCppBackend(weights, path, 1, 128, 64);
        float[] first;
        using (var logits = backend.Prefill(0, prompt, 0))
        {
            first = logits.data<float>().ToArray();
        }
        var greedy = new List<int> { ArgMax(first) };
        while (greedy.Count < NewTokens)
        {
            using var logits = backend.Step([greedy[^1]], [prompt.Count + greedy.Count - 1], 1, 128);
            greedy.Add(ArgMax(logits.data<float>().ToArray()));
        }
        Assert.Equal(Prompt[..10], tokenizer.Decode(prompt.Skip(1).Take(10)));
        return (prompt, greedy, first);
    }

    private static int ArgMax(float[] values) => Array.IndexOf(values, values.Max());

    private static double MaxLogProbDifference(float[] a, float[] b)
    {
        static double[] LogSoftmax(float[] x)
        {
            var max = x.Max();
            var sum = Math.Log(x.Sum(v => Math.Exp(v - max))) + max;
            return x.Select(v => v - sum).ToArray();
        }
        var (la, lb) = (LogSoftmax(a), LogSoftmax(b));
        // Over the tokens that carry mass (p > 1e-3 in ours): far-tail log-probabilities are noise for both.
        return la.Select((v, i) => v > Math.Log(1e-3) ? Math.Abs(v - lb[i]) : 0).Max();
    }

    [Fact]
    public void Does_generate_our_greedy_tokens_in_llama_cpp_from_the_q8_0_and_q4_k_exports()
    {
        using var dir = new TempDir();
        var ours = Ours();
        var q8 = LlamaCpp(FixtureGguf.Export(dir, GgmlType.Q8_0));
        var q4k = LlamaCpp(FixtureGguf.Export(dir, GgmlType.Q4_K));
        var bytes = new ByteTokenizer();
        output.WriteLine($"ours : {bytes.Decode(ours.Greedy)}");
        output.WriteLine($"q8_0 : {bytes.Decode(q8.Greedy)}  max |Δlogp| {MaxLogProbDifference(ours.FirstLogits, q8.FirstLogits):F4}");
        output.WriteLine($"q4_k : {bytes.Decode(q4k.Greedy)}  max |Δlogp| {MaxLogProbDifference(ours.FirstLogits, q4k.FirstLogits):F4}");

        // llama.cpp tokenizes the exported byte-level vocabulary exactly as our tokenizer does (BOS included).
        Assert.Equal(ours.Prompt, q8.Prompt);
        Assert.Equal(ours.Prompt, q4k.Prompt);
        // Q8_0: the same greedy continuation, token for token, and next-token log-probabilities within 0.05.
        Assert.Equal(ours.Greedy, q8.Greedy);
        Assert.InRange(MaxLogProbDifference(ours.FirstLogits, q8.FirstLogits), 0, 0.05);
        // Q4_K (4.5 bits): the same first 8 greedy tokens and log-probabilities within 0.5.
        Assert.Equal(ours.Greedy.Take(8), q4k.Greedy.Take(8));
        Assert.InRange(MaxLogProbDifference(ours.FirstLogits, q4k.FirstLogits), 0, 0.5);
    }
}
