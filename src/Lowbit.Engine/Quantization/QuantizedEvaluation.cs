using Lowbit.Engine.Evaluation;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Quantization;

/// <summary>Perplexity of a checkpoint, optionally with its projections swapped for quantized ones (tests, benchmarks).</summary>
public static class QuantizedEvaluation
{
    public static double Perplexity(Checkpoint checkpoint, QuantizedModel? quantized, IReadOnlyList<int> tokens, int context, Device? device = null)
    {
        var on = device ?? CPU;
        using var model = ModelIo.Load(checkpoint, ScalarType.Float32, on);
        if (quantized is not null)
        {
            model.ReplaceLinears((name, current) => quantized.Linears.TryGetValue(name, out var q)
                ? new QuantizedLinear(q, current.DenseBias(ScalarType.Float32)?.DetachFromDisposeScope(), cacheDense: true, ownsWeight: false)
                : null);
        }
        return PerplexityEvaluator.Evaluate(model, tokens, context, context, on).Perplexity;
    }

    /// <summary>
    /// Splits a text for calibration and held-out evaluation: the first half (as <c>[samples, length]</c> token
    /// windows) calibrates, the second half (BOS first) is evaluated, so GPTQ never sees the scored text.
    /// </summary>
    public static (Tensor Calibration, IReadOnlyList<int> Evaluation) Split(ITextTokenizer tokenizer, string text, int samples, int length)
    {
        var ids = tokenizer.Encode(text);
        var half = ids.Count / 2;
        length = Math.Min(length, half / samples);
        var data = new long[samples * length];
        for (var s = 0; s < samples; s++)
        {
            for (var t = 0; t < length; t++)
            {
                data[s * length + t] = ids[s * length + t];
            }
        }
        var evaluation = new List<int>();
        if (tokenizer.BosId is { } bos)
        {
            evaluation.Add(bos);
        }
        evaluation.AddRange(ids.Skip(half));
        return (torch.tensor(data, [samples, length], ScalarType.Int64), evaluation);
    }
}
