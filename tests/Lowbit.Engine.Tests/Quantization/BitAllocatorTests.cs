using Lowbit.Engine.Quantization;

namespace Lowbit.Engine.Tests.Quantization;

public class BitAllocatorTests
{
    private static LayerSensitivity Layer(string name, double sensitivity) =>
        new(name, 64, 256, new Dictionary<int, double>
        {
            [2] = sensitivity * 16, [3] = sensitivity * 4, [4] = sensitivity, [8] = sensitivity / 256,
        });

    [Theory]
    [InlineData(2.5)]
    [InlineData(3.0)]
    [InlineData(4.5)]
    public void Does_meet_the_target_bits_per_weight_including_group_overhead(double target)
    {
        var layers = Enumerable.Range(0, 10).Select(i => Layer($"l{i}", 1 + i)).ToList();
        var allocation = BitAllocator.Allocate(layers, new MixedPrecisionOptions { TargetBitsPerWeight = target, GroupSize = 64 });
        Assert.True(allocation.BitsPerWeight <= target + 1e-9, $"{allocation.BitsPerWeight} > {target}");
        // Greedy fills the budget to within one upgrade step of the smallest kind (1 bit on a tenth of the weights).
        Assert.True(allocation.BitsPerWeight > target - 0.5, $"{allocation.BitsPerWeight} wastes budget");
    }

    [Fact]
    public void Does_give_the_more_sensitive_layers_more_bits()
    {
        var layers = new[] { Layer("quiet", 1), Layer("loud", 100), Layer("medium", 10), Layer("quiet2", 1) };
        var allocation = BitAllocator.Allocate(layers, new MixedPrecisionOptions { TargetBitsPerWeight = 3.0, GroupSize = 64 });
        Assert.True(allocation.BitsByLayer["loud"] >= allocation.BitsByLayer["medium"]);
        Assert.True(allocation.BitsByLayer["medium"] >= allocation.BitsByLayer["quiet"]);
        Assert.True(allocation.BitsByLayer["loud"] > allocation.BitsByLayer["quiet"]);
        Assert.Matches(@"^\d:\d+(,\d:\d+)*$", allocation.Layout);
    }

    [Fact]
    public void Does_reject_a_target_below_the_narrowest_width_plus_overhead()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            BitAllocator.Allocate([Layer("a", 1)], new MixedPrecisionOptions { TargetBitsPerWeight = 2.2, GroupSize = 64 }));
        Assert.Contains("--target-bpw", ex.Message);
        Assert.Contains("2.500", ex.Message);
    }
}
