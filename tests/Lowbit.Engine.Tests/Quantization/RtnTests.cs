using Lowbit.Engine.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Quantization;

public class RtnTests
{
    [Theory]
    [InlineData(8, 32)]
    [InlineData(4, 64)]
    [InlineData(3, 128)]
    [InlineData(2, 64)]
    public void Does_bound_every_element_error_by_half_a_step_when_quantizing_asymmetric_groups(int bits, int groupSize)
    {
        var w = TestMatrices.WeightLike(32, 256);
        using var q = Rtn.Quantize(w, new RtnOptions { Bits = bits, GroupSize = groupSize });
        Assert.Equal([32L, 256 / groupSize], q.Scales.shape);
        Assert.True(q.Codes.max().item<byte>() <= (1 << bits) - 1);
        var step = q.Scales.repeat_interleave(groupSize, 1);
        var err = w.sub(q.Dequantize()).abs();
        // Half a step plus the rounding of the zero-point (another half step at most).
        Assert.True(err.le(step.mul(Scalars.Of(1.0001))).all().item<bool>());
    }

    [Fact]
    public void Does_order_errors_by_bits()
    {
        var w = TestMatrices.WeightLike(128, 512);
        var errors = new[] { 8, 4, 3, 2 }.Select(b =>
        {
            using var q = Rtn.Quantize(w, new RtnOptions { Bits = b, GroupSize = 64 });
            return TestMatrices.RelativeError(w, q.Dequantize());
        }).ToArray();
        Assert.True(errors[0] < 0.01, $"8-bit error {errors[0]}");
        Assert.True(errors[0] < errors[1] && errors[1] < errors[2] && errors[2] < errors[3], string.Join(", ", errors));
    }

    [Fact]
    public void Does_use_one_scale_per_row_and_midpoint_zero_when_int8_per_channel()
    {
        var w = torch.tensor(new float[] { -1f, 0.5f, 0.25f, 1f, 2f, -0.5f, 0f, 1f }).reshape(2, 4);
        using var q = Rtn.Quantize(w, RtnOptions.Int8PerChannel);
        Assert.Equal([2L, 1], q.Scales.shape);
        Assert.Equal(128f, q.Zeros[0, 0].item<float>());
        // amax 1 → scale 2/255; -1 → round(-127.5) = -128 (half to even) + 128 = 0; +amax clips to 255 (half a step, plus fp16 scale rounding).
        Assert.Equal(0, q.Codes[0, 0].item<byte>());
        Assert.True(w.sub(q.Dequantize()).abs().le(q.Scales.mul(Scalars.Of(0.55))).all().item<bool>());
    }

    [Fact]
    public void Does_reject_a_group_size_that_does_not_divide_the_input_width()
    {
        var w = torch.zeros(4, 96);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Rtn.Quantize(w, new RtnOptions { Bits = 4, GroupSize = 64 }));
        Assert.Contains("group size", ex.Message);
    }
}
