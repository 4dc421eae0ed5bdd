using System.Diagnostics;
using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Evaluation;

/// <summary>Perplexity and the protocol that produced it.</summary>
public sealed record PerplexityResult
{
    public required double Perplexity { get; init; }

    /// <summary>Mean negative log-likelihood per scored token (nats).</summary>
    public required double MeanNll { get; init; }

    public required long TokensScored { get; init; }

    public required int Context { get; init; }

    public required int Stride { get; init; }

    public required double Seconds { get; init; }

    /// <summary>Tokens processed by the model per second (every window position, overlaps included).</summary>
    public required double TokensPerSecond { get; init; }
}

/// <summary>
/// Sliding-window perplexity (the transformers recipe): the token sequence (BOS first when the tokenizer has one)
/// is cut into windows of <c>context</c> tokens starting every <c>stride</c> tokens; each window scores only the
/// tokens not scored by the previous window (its last <c>end − previous end</c> tokens), with the overlap as
/// conditioning context. The first token is never scored, and with stride = context (disjoint windows) neither is
/// the first token of each window, which has no context inside its window.
/// </summary>
public static class PerplexityEvaluator
{
    public static PerplexityResult Evaluate(LlamaForCausalLM model, IReadOnlyList<int> tokens, int context, int stride, Device device,
        Action<int, int>? progress = null)
    {
        if (tokens.Count < 2)
        {
            throw new EngineInputException("--text: needs at least 2 tokens");
        }
        if (stride < 1 || stride > context)
        {
            throw new EngineInputException($"--stride: {stride} must be within 1..{context}");
        }
        var ids = tokens.Select(t => (long)t).ToArray();
        var watch = Stopwatch.StartNew();
        double nll = 0;
        long scored = 0, processed = 0;
        var previousEnd = 0;
        var windows = (int)Math.Ceiling(Math.Max(1, ids.Length - context) / (double)stride) + 1;
        var window = 0;
        using var noGrad = no_grad();
        for (var begin = 0; begin < ids.Length; begin += stride)
        {
            var end = Math.Min(begin + context, ids.Length);
            var targets = end - previousEnd;
            using (var scope = NewDisposeScope())
            {
                var input = tensor(ids[begin..end], [1, end - begin], device: device);
                var logits = model.forward(input, null).to(ScalarType.Float32).squeeze(0);
                var logProbs = logits.log_softmax(-1);
                // Position p predicts token p+1: score the last `targets` tokens of the window (never the window's first token).
                var first = Math.Max(end - begin - targets, 1);
                var count = end - begin - first;
                if (count > 0)
                {
                    var predicted = logProbs.narrow(0, first - 1, count);
                    var target = tensor(ids[(begin + first)..end], device: device).unsqueeze(1);
                    nll -= predicted.gather(1, target).sum().to(ScalarType.Float64).item<double>();
                    scored += count;
                }
            }
            processed += end - begin;
            previousEnd = end;
            progress?.Invoke(++window, windows);
            if (end == ids.Length)
            {
                break;
            }
        }
        var seconds = watch.Elapsed.TotalSeconds;
        var mean = nll / scored;
        return new PerplexityResult
        {
            Perplexity = Math.Exp(mean),
            MeanNll = mean,
            TokensScored = scored,
            Context = context,
            Stride = stride,
            Seconds = seconds,
            TokensPerSecond = processed / Math.Max(seconds, 1e-9),
        };
    }
}
