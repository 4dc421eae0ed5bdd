using System.Collections.Concurrent;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Quantization;

/// <summary>
/// The trained tiny-llama fixture, quantized: perplexity on the second half of its held-out eval.txt (disjoint
/// windows of 256, BOS first); GPTQ calibrates on the first half (16 × 256 tokens), so it never sees scored text.
/// </summary>
public sealed class TinyLlamaQuality : IDisposable
{
    private readonly ConcurrentDictionary<(QuantMethod, int), double> _perplexities = new();
    private readonly Tensor _calibration;

    public TinyLlamaQuality()
    {
        Directory = FindFixture();
        Checkpoint = Checkpoint.Open(Directory);
        var tokenizer = TokenizerLoader.Load(Directory);
        (_calibration, Evaluation) = QuantizedEvaluation.Split(tokenizer, File.ReadAllText(Path.Combine(Directory, "eval.txt")), 16, 256);
        Baseline = QuantizedEvaluation.Perplexity(Checkpoint, null, Evaluation, 256);
    }

    public string Directory { get; }

    public Checkpoint Checkpoint { get; }

    public IReadOnlyList<int> Evaluation { get; }

    public double Baseline { get; }

    public double Perplexity(QuantMethod method, int bits) => _perplexities.GetOrAdd((method, bits), key =>
    {
        using var quantized = ModelQuantizer.Quantize(Checkpoint, new ModelQuantizeOptions
        {
            Method = key.Item1, Bits = key.Item2, GroupSize = 64, Calibration = key.Item1 == QuantMethod.Gptq ? _calibration : null,
        });
        return QuantizedEvaluation.Perplexity(Checkpoint, quantized, Evaluation, 256);
    });

    public void Dispose()
    {
        _calibration.Dispose();
        Checkpoint.Dispose();
    }

    private static string FindFixture()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "tests", "fixtures", "tiny-llama");
            if (File.Exists(Path.Combine(candidate, "model.safetensors")))
            {
                return candidate;
            }
        }
        throw new DirectoryNotFoundException("tests/fixtures/tiny-llama with model.safetensors not found above the test assembly");
    }
}

public sealed class FixtureQualityTests(TinyLlamaQuality fixture) : IClassFixture<TinyLlamaQuality>
{
    [Fact]
    public void Does_keep_8_bit_rtn_perplexity_within_1_percent_of_fp32()
    {
        var ppl = fixture.Perplexity(QuantMethod.Rtn, 8);
        Assert.InRange(ppl / fixture.Baseline, 0.99, 1.01);
    }

    [Theory]
    [InlineData(QuantMethod.Hqq)]
    [InlineData(QuantMethod.Gptq)]
    public void Does_stay_within_10_percent_and_beat_rtn_when_quantizing_4_bit_g64(QuantMethod method)
    {
        var ppl = fixture.Perplexity(method, 4);
        var rtn = fixture.Perplexity(QuantMethod.Rtn, 4);
        Assert.True(ppl < 1.10 * fixture.Baseline, $"{method} 4-bit {ppl:F4} vs fp32 {fixture.Baseline:F4}");
        Assert.True(ppl < rtn, $"{method} 4-bit {ppl:F4} vs RTN {rtn:F4}");
    }

    [Theory]
    [InlineData(QuantMethod.Rtn)]
    [InlineData(QuantMethod.Hqq)]
    [InlineData(QuantMethod.Gptq)]
    public void Does_lose_more_perplexity_at_3_and_then_2_bits(QuantMethod method)
    {
        var (four, three, two) = (fixture.Perplexity(method, 4), fixture.Perplexity(method, 3), fixture.Perplexity(method, 2));
        Assert.True(four < three && three < two, $"{method}: 4-bit {four:F4}, 3-bit {three:F4}, 2-bit {two:F4}");
    }

    [Theory]
    [InlineData(QuantMethod.Hqq)]
    [InlineData(QuantMethod.Gptq)]
    public void Does_beat_rtn_at_2_bits(QuantMethod method)
    {
        var ppl = fixture.Perplexity(method, 2);
        var rtn = fixture.Perplexity(QuantMethod.Rtn, 2);
        Assert.True(ppl < rtn, $"{method} 2-bit {ppl:F4} vs RTN {rtn:F4}");
    }
}
