using Lowbit.Engine.Generation;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests;

public class GenerationTests
{
    private static LlamaForCausalLM Fixture()
    {
        using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
        return ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
    }

    [Fact]
    public void Does_continue_kjv_text_when_decoding_greedily_with_the_trained_fixture()
    {
        using var model = Fixture();
        var tokenizer = new ByteTokenizer();
        var prompt = new List<int> { ByteTokenizer.Bos };
        prompt.AddRange(tokenizer.Encode("And the LORD spake unto Moses, saying"));

        var output = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 24 }, CPU).ToList();
        var again = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 24 }, CPU).ToList();

        Assert.Equal(output, again);
        Assert.Equal(24, output.Count);
        Assert.StartsWith(",", tokenizer.Decode(output), StringComparison.Ordinal);
    }

    [Fact]
    public void Does_repeat_a_sample_with_the_same_seed_and_differ_with_another()
    {
        using var model = Fixture();
        int[] prompt = [ByteTokenizer.Bos, 'T', 'h', 'e'];
        GenerationOptions Options(int seed) => new() { MaxNewTokens = 32, Temperature = 1.0, TopP = 0.95, Seed = seed };

        var a = TextGenerator.Generate(model, prompt, Options(1), CPU).ToList();
        var b = TextGenerator.Generate(model, prompt, Options(1), CPU).ToList();
        var c = TextGenerator.Generate(model, prompt, Options(2), CPU).ToList();

        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }

    [Fact]
    public void Does_pick_the_argmax_when_top_p_keeps_one_token()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 0.1f, 3.0f, 2.9f, -1f });

        var picks = Enumerable.Range(0, 20).Select(s => TextGenerator.Pick(logits, new GenerationOptions { Temperature = 1, TopP = 1e-6 }, new Random(s)));

        Assert.All(picks, p => Assert.Equal(1, p));
    }

    [Fact]
    public void Does_stop_after_a_stop_token()
    {
        using var model = Fixture();
        int[] prompt = [ByteTokenizer.Bos, 'I', 'n'];
        var greedy = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 10 }, CPU).ToList();

        var stopped = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 10, StopTokenIds = [greedy[2]] }, CPU).ToList();

        Assert.Equal(greedy.Take(stopped.Count), stopped);
        Assert.True(stopped.Count <= 3);
    }
}
