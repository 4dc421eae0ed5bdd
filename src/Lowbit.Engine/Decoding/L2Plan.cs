namespace Lowbit.Engine.Decoding;

/// <summary>
/// The fused decode step's L2 prefetch plan (<see cref="Env"/>, docs/gpu.md *L2 prefetch*). At batch 1 the int4 step
/// leaves the memory idle while a kernel is bound by latency: the decode attention (10 µs per layer on the H100 for
/// 4 MB of cache), each GEMV's tail as its blocks run out of tiles, and the wait at each kernel's start. There, a kernel
/// prefetches the next projections' weights into L2, so that they read their first tiles from there.
/// <para>
/// The weights of a stage's fused layers form one stream in the order the step reads them (q/k/v, output, gate/up and
/// down of each layer). The kernels of a layer, in launch order, each take the next <c>budget</c> bytes of the
/// stream after their own weight that no earlier kernel took, in at most <see cref="L2Slice.MaxPerLaunch"/> slices.
/// </para>
/// </summary>
public static class L2Plan
{
    /// <summary>
    /// MB of later weights each kernel of a fused layer prefetches: <c>attention:24,output:8,gateup:8,down:8,qkv:0</c>
    /// (any subset; the rest 0), or <c>0</c> for none. Unset: <see cref="DefaultBudgets"/>.
    /// </summary>
    public const string Env = "LOWBIT_L2_PREFETCH";

    /// <summary>The plan when <see cref="Env"/> is unset: none until a device run measures one that helps.</summary>
    public const string DefaultBudgets = "0";

    /// <summary>The kernels of a fused layer that prefetch, in launch order.</summary>
    public enum Issuer { Qkv, Attention, Output, GateUp, Down }

    /// <summary>Issuers per layer (the plan's stride).</summary>
    public const int IssuersPerLayer = 5;

    /// <summary>
    /// Bytes per issuer from <paramref name="spec"/> (<see cref="Env"/>'s form); null when nothing is prefetched. A
    /// malformed spec throws naming the variable and the form.
    /// </summary>
    public static long[]? ParseBudgets(string? spec)
    {
        spec = string.IsNullOrWhiteSpace(spec) ? DefaultBudgets : spec.Trim();
        if (spec == "0")
        {
            return null;
        }
        var budgets = new long[IssuersPerLayer];
        foreach (var part in spec.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var pair = part.Split(':', StringSplitOptions.TrimEntries);
            var issuer = pair.Length == 2 ? IssuerOf(pair[0]) : null;
            if (issuer is null || !double.TryParse(pair[1], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var mb)
                || mb < 0 || mb > 1024)
            {
                throw new ArgumentException($"{Env}='{spec}': expected 0 or a list like attention:24,output:8,gateup:8,down:8,qkv:0 (MB, 0-1024 each)");
            }
            budgets[(int)issuer] = (long)(mb * (1 << 20));
        }
        return budgets.Any(b => b > 0) ? budgets : null;
    }

    private static Issuer? IssuerOf(string name) => name.ToLowerInvariant() switch
    {
        "qkv" or "q/k/v" => Issuer.Qkv,
        "attention" => Issuer.Attention,
        "output" or "o" => Issuer.Output,
        "gateup" or "gate/up" => Issuer.GateUp,
        "down" => Issuer.Down,
        _ => null,
    };

    /// <summary>Bytes one row of <paramref name="w"/> takes: K/2 of codes, a fp16 scale and zero per group.</summary>
    public static long RowBytes(Int4Weight w) => w.InFeatures / 2 + 4 * (w.InFeatures / w.GroupSize);

    /// <summary>
    /// The plan over consecutive fused layers whose four int4 weights (q/k/v, output, gate/up, down) are
    /// <paramref name="layers"/>: entry <c>layer · 5 + issuer</c> holds the slices that kernel prefetches (empty: none).
    /// </summary>
    public static L2Slice[][] Build(IReadOnlyList<Int4Weight[]> layers, long[] budgets)
    {
        var stream = layers.SelectMany(l => l.Length == 4 ? l : throw new ArgumentException("four weights per layer", nameof(layers))).ToArray();
        var taken = new long[stream.Length];
        var plan = new L2Slice[layers.Count * IssuersPerLayer][];
        for (var layer = 0; layer < layers.Count; layer++)
        {
            for (var issuer = 0; issuer < IssuersPerLayer; issuer++)
            {
                // The weights after this kernel's own: q/k/v and the attention are followed by the output projection.
                var next = 4 * layer + (issuer <= (int)Issuer.Attention ? 1 : issuer);
                var budget = budgets[issuer];
                var slices = new List<L2Slice>();
                for (var j = next; j < stream.Length && budget > 0 && slices.Count < L2Slice.MaxPerLaunch; j++)
                {
                    var left = stream[j].OutFeatures - taken[j];
                    if (left <= 0)
                    {
                        continue;
                    }
                    var bytes = RowBytes(stream[j]);
                    var count = Math.Min(left, (budget + bytes - 1) / bytes);
                    slices.Add(new L2Slice(stream[j], taken[j], count));
                    taken[j] += count;
                    budget -= count * bytes;
                }
                plan[layer * IssuersPerLayer + issuer] = slices.ToArray();
            }
        }
        return plan;
    }
}
