using Lowbit.Engine.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Quantization;

public class GptqTests
{
    /// <summary>Correlated activations with a few high-variance channels, like a transformer's hidden states.</summary>
    private static Tensor Activations(long tokens, long features, ulong seed)
    {
        using var scope = torch.NewDisposeScope();
        var gen = new torch.Generator(seed);
        var mix = torch.randn(features, features, generator: new torch.Generator(99)).div(Scalars.Of(Math.Sqrt(features)));
        var channelScale = torch.ones(features);
        channelScale[..8] = torch.tensor(8f);
        var x = torch.randn(tokens, features, generator: gen).matmul(mix.add(torch.eye(features), Scalars.One)).mul(channelScale);
        return x.MoveToOuterDisposeScope();
    }

    private static double OutputError(Tensor w, Tensor wq, Tensor x) =>
        x.matmul(w.t()).sub(x.matmul(wq.t())).norm().item<float>();

    [Theory]
    [InlineData(4, 64, false, 0.9)]
    [InlineData(4, 64, true, 0.9)]
    [InlineData(3, 128, false, 0.9)]
    [InlineData(2, 64, true, 1.0)]
    [InlineData(4, 0, false, 0.9)]
    public void Does_beat_rtn_on_layer_output_error_when_measured_on_held_out_calibration_data(int bits, int groupSize, bool actOrder, double maxRatio)
    {
        using var scope = torch.NewDisposeScope();
        var w = TestMatrices.WeightLike(256, 512, seed: 3);
        using var hessian = new HessianAccumulator(512);
        for (var batch = 0; batch < 4; batch++)
        {
            hessian.Add(Activations(256, 512, (ulong)batch).unsqueeze(0));
        }
        var heldOut = Activations(512, 512, 1000);
        using var gptq = Gptq.Quantize(w, hessian.Hessian, new GptqOptions { Bits = bits, GroupSize = groupSize, ActOrder = actOrder });
        using var rtn = Rtn.Quantize(w, new RtnOptions { Bits = bits, GroupSize = groupSize });
        var gptqError = OutputError(w, gptq.Dequantize(), heldOut);
        var rtnError = OutputError(w, rtn.Dequantize(), heldOut);
        Assert.True(gptqError < maxRatio * rtnError, $"GPTQ {gptqError:F4} vs RTN {rtnError:F4}");
        Assert.Equal(actOrder, gptq.GroupIndex is not null);
    }

    [Fact]
    public void Does_record_a_permuted_group_index_when_act_order_is_on()
    {
        var w = TestMatrices.WeightLike(32, 256);
        using var hessian = new HessianAccumulator(256);
        hessian.Add(Activations(128, 256, 5));
        using var q = Gptq.Quantize(w, hessian.Hessian, new GptqOptions { Bits = 4, GroupSize = 64, ActOrder = true });
        var gIdx = q.GroupIndex!.data<long>().ToArray();
        // Every group holds exactly group-size columns, and the map is not the trivial k / 64 one.
        Assert.All(Enumerable.Range(0, 4), g => Assert.Equal(64, gIdx.Count(x => x == g)));
        Assert.NotEqual(Enumerable.Range(0, 256).Select(k => (long)(k / 64)), gIdx);
    }

    [Fact]
    public void Does_zero_dead_inputs_when_the_hessian_diagonal_is_zero()
    {
        var w = TestMatrices.WeightLike(16, 64);
        var x = Activations(64, 64, 9);
        x[.., 5] = torch.tensor(0f);
        using var hessian = new HessianAccumulator(64);
        hessian.Add(x);
        using var q = Gptq.Quantize(w, hessian.Hessian, new GptqOptions { Bits = 4, GroupSize = 32 });
        Assert.True(q.Dequantize()[.., 5].abs().max().item<float>() < 1e-6);
    }

    [Fact]
    public void Does_keep_a_running_mean_of_twice_x_xt_when_batches_are_added()
    {
        var a = torch.randn(3, 8, 4, generator: new torch.Generator(1));
        var b = torch.randn(5, 8, 4, generator: new torch.Generator(2));
        using var h = new HessianAccumulator(4);
        h.Add(a);
        h.Add(b);
        var all = torch.cat([a, b], 0).reshape(-1, 4);
        var expected = all.t().matmul(all).mul(Scalars.Of(2.0 / 8));
        Assert.Equal(8, h.Samples);
        Assert.True(h.Hessian.allclose(expected, rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void Does_factor_the_inverse_hessian_as_upper_cholesky()
    {
        var x = torch.randn(64, 16, generator: new torch.Generator(4), dtype: ScalarType.Float64);
        var h = x.t().matmul(x).add(torch.eye(16, dtype: ScalarType.Float64), Scalars.One);
        var u = Gptq.CholeskyOfInverseUpper(h);
        Assert.True(u.tril(-1).abs().max().item<double>() == 0);
        Assert.True(u.t().matmul(u).allclose(torch.linalg.inv(h), rtol: 1e-8, atol: 1e-10));
    }
}
