using Lowbit.Engine.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Quantization;

public class HqqTests
{
    private static readonly double[] OracleWeights =
        [-0.89, 1.56, 0.988, -0.178, -1.972, 1.407, -0.096, -0.603, 0.4, 0.41, 1.498, -1.02, 1.136, 1.487, 1.452, -0.181];

    private static HqqSolution SolveOracle(bool kappaUpdatesBeta)
    {
        var w = torch.tensor(OracleWeights, dtype: ScalarType.Float64).reshape(1, 16);
        var (sInv, z0) = Hqq.InitialScaleAndZero(w, maxq: 3);
        Assert.Equal(0.849377123, sInv.item<double>(), 9);
        Assert.Equal(1.674971687, z0.item<double>(), 9);
        return Hqq.OptimizeZero(w, sInv, z0, new HqqOptions { Bits = 2, GroupSize = 16, KappaUpdatesBeta = kappaUpdatesBeta });
    }

    [Fact]
    public void Does_match_the_float64_legacy_oracle_when_kappa_is_not_applied()
    {
        var solution = SolveOracle(kappaUpdatesBeta: false);
        Assert.Equal(4, solution.Iterations);
        Assert.Equal(1.772880545, solution.Zero.item<double>(), 9);
        Assert.Equal(0.193208333, solution.Error, 9);
    }

    [Fact]
    public void Does_match_the_v010_oracle_when_kappa_updates_beta_which_is_our_default()
    {
        Assert.True(new HqqOptions().KappaUpdatesBeta);
        var solution = SolveOracle(kappaUpdatesBeta: true);
        Assert.Equal(4, solution.Iterations);
        Assert.Equal(1.771817646, solution.Zero.item<double>(), 9);
        var w = torch.tensor(OracleWeights, dtype: ScalarType.Float64).reshape(1, 16);
        var codes = w.mul(Scalars.Of(3 / 3.532)).add(solution.Zero, Scalars.One).round().clamp(Scalars.Of(0), Scalars.Of(3)).to(ScalarType.Int64).data<long>().ToArray();
        Assert.Equal([1L, 3, 3, 2, 0, 3, 2, 1, 2, 2, 3, 1, 3, 3, 3, 2], codes);
    }

    [Theory]
    [InlineData(4, 64)]
    [InlineData(3, 64)]
    [InlineData(2, 32)]
    [InlineData(4, 128)]
    public void Does_beat_rtn_reconstruction_error_when_quantizing_real_shaped_layers(int bits, int groupSize)
    {
        // A real-shaped slice of a Llama block: each projection shape at 1/4 of 7B width.
        (long Out, long In)[] layers = [(1024, 1024), (256, 1024), (2816, 1024), (1024, 2816)];
        var seed = 1;
        foreach (var (rows, cols) in layers)
        {
            using var scope = torch.NewDisposeScope();
            var w = TestMatrices.WeightLike(rows, cols, seed++);
            using var rtn = Rtn.Quantize(w, new RtnOptions { Bits = bits, GroupSize = groupSize });
            using var hqq = Hqq.Quantize(w, new HqqOptions { Bits = bits, GroupSize = groupSize });
            var rtnError = TestMatrices.RelativeError(w, rtn.Dequantize());
            var hqqError = TestMatrices.RelativeError(w, hqq.Dequantize());
            Assert.True(hqqError < rtnError, $"{rows}x{cols} {bits}-bit g{groupSize}: HQQ {hqqError:F5} vs RTN {rtnError:F5}");
        }
    }

    [Fact]
    public void Does_quantize_along_output_rows_when_axis_is_zero()
    {
        var w = TestMatrices.WeightLike(256, 128);
        using var q = Hqq.Quantize(w, new HqqOptions { Bits = 4, GroupSize = 64, Axis = 0 });
        Assert.Equal([4L, 128], q.Scales.shape);
        Assert.Equal(0, q.Axis);
        Assert.True(TestMatrices.RelativeError(w, q.Dequantize()) < 0.12);
    }

    [Fact]
    public void Does_keep_codes_in_range_and_is_deterministic()
    {
        var w = TestMatrices.WeightLike(64, 256);
        using var a = Hqq.Quantize(w, new HqqOptions { Bits = 3, GroupSize = 64 });
        using var b = Hqq.Quantize(w, new HqqOptions { Bits = 3, GroupSize = 64 });
        Assert.True(a.Codes.max().item<byte>() <= 7);
        Assert.True(a.Codes.eq(b.Codes).all().item<bool>());
        Assert.True(a.Zeros.eq(b.Zeros).all().item<bool>());
    }

    [Fact]
    public void Does_not_increase_the_l1_error_when_the_scale_search_variant_is_on()
    {
        var w = TestMatrices.WeightLike(128, 512, seed: 21);
        using var plain = Hqq.Quantize(w, new HqqOptions { Bits = 3, GroupSize = 64 });
        using var searched = Hqq.Quantize(w, new HqqOptions { Bits = 3, GroupSize = 64, SearchScale = true });
        var plainL1 = w.sub(plain.Dequantize()).abs().mean().item<float>();
        var searchedL1 = w.sub(searched.Dequantize()).abs().mean().item<float>();
        Assert.True(searchedL1 <= plainL1, $"search {searchedL1} vs plain {plainL1}");
    }
}
