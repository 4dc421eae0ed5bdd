namespace Lowbit.Engine.Protocol;

/// <summary>
/// One stage of a pipeline split: the contiguous layers <c>[FirstLayer, FirstLayer + LayerCount)</c> on shard
/// <see cref="Shard"/>, plus the embedding (shard 0) and the final norm and head (the last shard).
/// </summary>
public sealed record PipelineStage
{
    public required int Shard { get; init; }

    public required int FirstLayer { get; init; }

    public required int LayerCount { get; init; }

    /// <summary>The token embedding lives here (always shard 0).</summary>
    public required bool HoldsEmbedding { get; init; }

    /// <summary>The final norm and the head live here (always the last shard).</summary>
    public required bool HoldsHead { get; init; }

    /// <summary>What the stage costs on its device: its layers' bytes plus the embedding and head it holds.</summary>
    public required long Bytes { get; init; }

    /// <summary>One past the stage's last layer.</summary>
    public int EndLayer => FirstLayer + LayerCount;
}

/// <summary>
/// Splits a decoder's layers over <c>--shards</c> devices as a pipeline: contiguous layer ranges, the embedding on
/// shard 0, the final norm and head on the last shard, every shard at least one layer, and the largest shard's bytes
/// as small as possible (exactly: a dynamic program over (shard, layers placed)). Pure arithmetic: the caller decides
/// what a layer costs on its device (its weights plus its KV cache slab) and passes a tied embedding's bytes as the
/// head's too, since both ends then hold a copy.
/// </summary>
public static class PipelineSplit
{
    public const string ShardsFlag = "--shards";

    /// <summary>The most shards <see cref="Balance"/> accepts (a pod has at most 16 GPUs).</summary>
    public const int MaxShards = 16;

    public static IReadOnlyList<PipelineStage> Balance(IReadOnlyList<long> layerBytes, long embeddingBytes, long headBytes, int shards)
    {
        ArgumentNullException.ThrowIfNull(layerBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(embeddingBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(headBytes);
        var layers = layerBytes.Count;
        if (shards < 1 || shards > MaxShards || shards > layers)
        {
            throw new ProtocolArgumentException(ShardsFlag, $"{shards} shards for a model of {layers} layers",
                $"1 to {Math.Min(layers, MaxShards)} (every shard holds at least one layer)");
        }
        var prefix = new long[layers + 1];
        for (var i = 0; i < layers; i++)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(layerBytes[i], nameof(layerBytes));
            prefix[i + 1] = checked(prefix[i] + layerBytes[i]);
        }

        long Cost(int shard, int first, int end) =>
            prefix[end] - prefix[first] + (shard == 0 ? embeddingBytes : 0) + (shard == shards - 1 ? headBytes : 0);

        // best[s, j]: the smallest possible largest shard when shards 0..s hold layers [0, j); from[s, j]: where shard s starts.
        var best = new long[shards, layers + 1];
        var from = new int[shards, layers + 1];
        for (var j = 1; j <= layers; j++)
        {
            best[0, j] = Cost(0, 0, j);
        }
        for (var s = 1; s < shards; s++)
        {
            for (var j = s + 1; j <= layers - (shards - 1 - s); j++)
            {
                var bestValue = long.MaxValue;
                var bestStart = -1;
                for (var i = s; i < j; i++)
                {
                    var value = Math.Max(best[s - 1, i], Cost(s, i, j));
                    if (value < bestValue)
                    {
                        bestValue = value;
                        bestStart = i;
                    }
                }
                best[s, j] = bestValue;
                from[s, j] = bestStart;
            }
        }

        var stages = new PipelineStage[shards];
        var end = layers;
        for (var s = shards - 1; s >= 0; s--)
        {
            var first = s == 0 ? 0 : from[s, end];
            stages[s] = new PipelineStage
            {
                Shard = s,
                FirstLayer = first,
                LayerCount = end - first,
                HoldsEmbedding = s == 0,
                HoldsHead = s == shards - 1,
                Bytes = Cost(s, first, end),
            };
            end = first;
        }
        return stages;
    }
}
