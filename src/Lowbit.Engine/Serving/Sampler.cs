using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>How one request picks its tokens. Temperature 0 is greedy.</summary>
public sealed record SamplingParams
{
    public double Temperature { get; init; } = 1.0;

    public double TopP { get; init; } = 1.0;

    /// <summary>Keep the k most likely tokens; 0 or less keeps all.</summary>
    public int TopK { get; init; }

    /// <summary>The request's seed; null draws from the server's generator.</summary>
    public long? Seed { get; init; }

    /// <summary>Top log-probabilities to return per token (completions' <c>logprobs</c>); null for none.</summary>
    public int? Logprobs { get; init; }
}

/// <summary>One row's pick: the token, and when asked its log-probability and the top alternatives.</summary>
public sealed record SampledToken(int Token, float? Logprob, IReadOnlyList<(int Token, float Logprob)>? Top);

/// <summary>
/// Picks the next token of every row on the device: greedy rows take the argmax; sampled rows scale by their
/// temperature, keep their top-k and top-p nucleus, and invert the cumulative distribution at a uniform draw that
/// comes from the request's own generator (so a seeded request gives the same output whatever else is in the batch).
/// One host read per step (the picked tokens; plus log-probabilities when a row asked for them).
/// </summary>
public static class Sampler
{
    public const int MaxLogprobs = 20;

    /// <param name="logits">float32 <c>[rows, vocab]</c>.</param>
    /// <param name="rows">Per row its parameters and uniform draw, or null for a row without a request.</param>
    public static SampledToken?[] Sample(Tensor logits, IReadOnlyList<(SamplingParams Params, double Uniform)?> rows)
    {
        using var scope = NewDisposeScope();
        var count = rows.Count;
        var device = logits.device;
        var tokens = logits.argmax(-1);
        var anySampled = rows.Any(r => r is { } x && x.Params.Temperature > 0);
        if (anySampled)
        {
            var vocab = logits.shape[1];
            var temperature = tensor(rows.Select(r => r is { } x && x.Params.Temperature > 0 ? (float)x.Params.Temperature : 1f).ToArray(), device: device).view(count, 1);
            var topK = tensor(rows.Select(r => r is { } x && x.Params.TopK > 0 ? Math.Min(x.Params.TopK, vocab) : vocab).ToArray(), device: device).view(count, 1);
            var topP = tensor(rows.Select(r => r is { } x ? (float)x.Params.TopP : 1f).ToArray(), device: device).view(count, 1);
            var uniform = tensor(rows.Select(r => r is { } x ? (float)x.Uniform : 0f).ToArray(), device: device).view(count, 1);
            var sampledRows = tensor(rows.Select(r => r is { } x && x.Params.Temperature > 0).ToArray(), device: device);
            var (sorted, indices) = (logits / temperature).sort(-1, descending: true);
            var rank = arange(Scalars.Of(0), Scalars.Of(vocab), Scalars.One, ScalarType.Int64, device).view(1, vocab);
            var probabilities = sorted.softmax(-1).masked_fill(rank.ge(topK), Scalars.Of(0));
            var before = probabilities.cumsum(-1) - probabilities;
            // Nucleus: keep a token while the mass before it is under top_p (the first token always stays).
            probabilities = probabilities.masked_fill(before.ge(topP).logical_and(rank.gt(Scalars.Of(0))), Scalars.Of(0));
            var cumulative = probabilities.cumsum(-1);
            var target = uniform * cumulative.narrow(1, vocab - 1, 1);
            var pick = cumulative.lt(target).sum(-1, keepdim: true).clamp_max(Scalars.Of(vocab - 1));
            // A row never lands on a zeroed token: cumulative is flat over them, so lt(target) counts past them only when target is beyond.
            var sampled = indices.gather(1, pick).view(count);
            tokens = where(sampledRows, sampled, tokens);
        }
        var wantLogprobs = rows.Any(r => r?.Params.Logprobs is not null);
        long[] ids;
        float[]? chosen = null;
        float[]? topValues = null;
        long[]? topIds = null;
        var topCount = 0;
        if (wantLogprobs)
        {
            var logSoftmax = logits.log_softmax(-1);
            chosen = logSoftmax.gather(1, tokens.view(count, 1)).view(count).cpu().data<float>().ToArray();
            topCount = Math.Min(MaxLogprobs, rows.Max(r => r?.Params.Logprobs ?? 0));
            if (topCount > 0)
            {
                var (values, top) = logSoftmax.topk(topCount, -1);
                topValues = values.cpu().data<float>().ToArray();
                topIds = top.cpu().data<long>().ToArray();
            }
        }
        ids = tokens.cpu().data<long>().ToArray();
        var result = new SampledToken?[count];
        for (var i = 0; i < count; i++)
        {
            if (rows[i] is not { } row)
            {
                continue;
            }
            if (row.Params.Logprobs is { } n && chosen is not null)
            {
                var top = new List<(int, float)>();
                for (var j = 0; j < Math.Min(n, topCount); j++)
                {
                    top.Add(((int)topIds![(i * topCount) + j], topValues![(i * topCount) + j]));
                }
                result[i] = new SampledToken((int)ids[i], chosen[i], top);
            }
            else
            {
                result[i] = new SampledToken((int)ids[i], null, null);
            }
        }
        return result;
    }
}
