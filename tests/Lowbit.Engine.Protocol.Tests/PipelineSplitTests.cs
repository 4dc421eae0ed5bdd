using Lowbit.Engine.Protocol;

namespace Lowbit.Engine.Protocol.Tests;

public class PipelineSplitTests
{
    [Fact]
    public void Does_find_the_smallest_largest_shard_when_compared_with_every_split()
    {
        var random = new Random(18);
        for (var trial = 0; trial < 300; trial++)
        {
            var layers = random.Next(1, 9);
            var shards = random.Next(1, layers + 1);
            var bytes = Enumerable.Range(0, layers).Select(_ => (long)random.Next(0, 100)).ToArray();
            var embedding = (long)random.Next(0, 150);
            var head = (long)random.Next(0, 150);

            var stages = PipelineSplit.Balance(bytes, embedding, head, shards);

            Assert.Equal(shards, stages.Count);
            Assert.Equal(BruteForceLargest(bytes, embedding, head, shards), stages.Max(s => s.Bytes));
            AssertCoversEveryLayerOnce(stages, layers);
            for (var s = 0; s < shards; s++)
            {
                var stage = stages[s];
                var expected = bytes.Skip(stage.FirstLayer).Take(stage.LayerCount).Sum()
                    + (stage.HoldsEmbedding ? embedding : 0) + (stage.HoldsHead ? head : 0);
                Assert.Equal(expected, stage.Bytes);
            }
        }
    }

    [Fact]
    public void Does_put_the_embedding_first_and_the_head_last_when_split()
    {
        var stages = PipelineSplit.Balance([10, 10, 10, 10, 10, 10], embeddingBytes: 25, headBytes: 25, shards: 3);

        Assert.Equal([true, false, false], stages.Select(s => s.HoldsEmbedding));
        Assert.Equal([false, false, true], stages.Select(s => s.HoldsHead));
        Assert.Equal([0, 1, 2], stages.Select(s => s.Shard));
        // 6 layers of 10 with 25 at each end: 1 + 4 + 1 layers gives 35, 40, 35 (an even 2 + 2 + 2 would give 45 at the ends).
        Assert.Equal([1, 4, 1], stages.Select(s => s.LayerCount));
        Assert.Equal(40, stages.Max(s => s.Bytes));
    }

    [Fact]
    public void Does_hold_everything_on_one_shard_when_not_split()
    {
        var stage = Assert.Single(PipelineSplit.Balance([3, 4, 5], 7, 11, 1));

        Assert.True(stage.HoldsEmbedding);
        Assert.True(stage.HoldsHead);
        Assert.Equal((0, 3, 30L), (stage.FirstLayer, stage.LayerCount, stage.Bytes));
    }

    [Fact]
    public void Does_give_every_shard_a_layer_when_one_layer_dominates()
    {
        var stages = PipelineSplit.Balance([1000, 1, 1, 1], 0, 0, 4);

        Assert.All(stages, s => Assert.Equal(1, s.LayerCount));
        Assert.Equal(1000, stages.Max(s => s.Bytes));
    }

    [Fact]
    public void Does_split_a_large_model_evenly_when_layers_are_equal()
    {
        var stages = PipelineSplit.Balance(Enumerable.Repeat(1L << 30, 200).ToArray(), 1L << 30, 1L << 30, 16);

        AssertCoversEveryLayerOnce(stages, 200);
        // 202 units over 16 shards: the largest holds at least ceil(202/16) = 13.
        Assert.Equal(13L << 30, stages.Max(s => s.Bytes));
    }

    [Theory]
    [InlineData(0, 4)]
    [InlineData(-1, 4)]
    [InlineData(5, 4)]
    [InlineData(17, 40)]
    public void Does_name_shards_when_the_count_cannot_be_split(int shards, int layers)
    {
        var ex = Assert.Throws<ProtocolArgumentException>(() => PipelineSplit.Balance(new long[layers], 0, 0, shards));

        Assert.Equal("--shards", ex.Argument);
        Assert.Contains($"{layers} layers", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_reject_negative_bytes()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => PipelineSplit.Balance([1, -1], 0, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => PipelineSplit.Balance([1, 1], -1, 0, 1));
    }

    private static void AssertCoversEveryLayerOnce(IReadOnlyList<PipelineStage> stages, int layers)
    {
        var next = 0;
        foreach (var stage in stages)
        {
            Assert.Equal(next, stage.FirstLayer);
            Assert.True(stage.LayerCount >= 1);
            next = stage.EndLayer;
        }
        Assert.Equal(layers, next);
    }

    private static long BruteForceLargest(long[] bytes, long embedding, long head, int shards)
    {
        var best = long.MaxValue;
        // Every choice of shards - 1 cut points among the layers - 1 gaps, as a bit mask.
        for (var mask = 0; mask < 1 << (bytes.Length - 1); mask++)
        {
            if (System.Numerics.BitOperations.PopCount((uint)mask) != shards - 1)
            {
                continue;
            }
            long largest = 0, current = embedding;
            var shard = 0;
            for (var i = 0; i < bytes.Length; i++)
            {
                current += bytes[i];
                if (i == bytes.Length - 1 || (mask & (1 << i)) != 0)
                {
                    if (shard == shards - 1)
                    {
                        current += head;
                    }
                    largest = Math.Max(largest, current);
                    current = 0;
                    shard++;
                }
            }
            best = Math.Min(best, largest);
        }
        return best;
    }
}
