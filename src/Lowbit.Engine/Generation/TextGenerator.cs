using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Generation;

/// <summary>How to pick tokens. Temperature 0 is greedy; otherwise softmax(logits / T) restricted to the top-p nucleus, drawn with <see cref="Seed"/>.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 64;

    public double Temperature { get; init; }

    public double TopP { get; init; } = 1.0;

    public int Seed { get; init; }

    /// <summary>Generation stops after emitting one of these (it is included in the output).</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];
}

/// <summary>Autoregressive decoding with a KV cache: one prefill pass over the prompt, then one token per pass.</summary>
public static class TextGenerator
{
    public static IEnumerable<int> Generate(LlamaForCausalLM model, IReadOnlyList<int> prompt, GenerationOptions options, Device device)
    {
        if (prompt.Count == 0)
        {
            throw new ArgumentException("the prompt needs at least one token", nameof(prompt));
        }
        var random = new Random(options.Seed);
        using var noGrad = no_grad();
        using var cache = new KvCache(model.Config, 1, prompt.Count + options.MaxNewTokens, model.Dtype, device);
        var next = prompt.Select(t => (long)t).ToArray();
        for (var i = 0; i < options.MaxNewTokens; i++)
        {
            int token;
            using (var scope = NewDisposeScope())
            {
                var hidden = model.Model.forward(tensor(next, [1, next.Length], device: device), cache);
                var logits = model.Logits(hidden.narrow(1, next.Length - 1, 1)).reshape(-1).to(ScalarType.Float32);
                token = Pick(logits, options, random);
            }
            yield return token;
            if (options.StopTokenIds.Contains(token))
            {
                yield break;
            }
            next = [token];
        }
    }

    /// <summary>Chooses the next token from one row of logits.</summary>
    public static int Pick(Tensor logits, GenerationOptions options, Random random)
    {
        if (options.Temperature <= 0)
        {
            return (int)logits.argmax().item<long>();
        }
        using var scope = NewDisposeScope();
        var probabilities = (logits / Scalars.Of(options.Temperature)).softmax(-1).cpu().to(ScalarType.Float64);
        var (sorted, indices) = probabilities.sort(descending: true);
        var p = sorted.data<double>().ToArray();
        var ids = indices.data<long>().ToArray();
        // Nucleus: the smallest prefix whose mass reaches top_p (at least one token).
        var keep = 0;
        double mass = 0;
        while (keep < p.Length && (keep == 0 || mass < options.TopP))
        {
            mass += p[keep++];
        }
        var draw = random.NextDouble() * mass;
        for (var i = 0; i < keep; i++)
        {
            draw -= p[i];
            if (draw <= 0)
            {
                return (int)ids[i];
            }
        }
        return (int)ids[keep - 1];
    }
}
