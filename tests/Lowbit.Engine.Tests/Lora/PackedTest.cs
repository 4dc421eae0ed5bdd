using Lowbit.Engine.Lora;
using Lowbit.Engine.Quantization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

public sealed class PackedQuantizedLinearTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    public void Does_dequantize_packed_codes_exactly_like_the_unpacked_tensor(int bits)
    {
        var weight = randn([12, 128], generator: new Generator(5));
        using var q = Rtn.Quantize(weight, new RtnOptions { Bits = bits, GroupSize = 32 });
        using var reference = q.Dequantize();
        var copy = QuantizedTensor.Create(q.Method, q.Bits, q.GroupSize, q.Codes.clone(), q.Scales.clone(), q.Zeros.clone());

        using var packed = PackedQuantizedLinear.Create(copy, null);

        Assert.IsType<PackedQuantizedLinear>(packed);
        Assert.True(packed.DenseWeight(ScalarType.Float32).allclose(reference, 0, 0));
        Assert.Equal(12 * 128 * bits / 8 + 4 * 2 * 12 * 4, ((PackedQuantizedLinear)packed).StorageBytes);
    }

    /// <summary>
    /// On CUDA the frozen QLoRA base dequantizes in bf16. Each element is <c>(c − z')·s'</c> with z', the difference,
    /// s' and the product each rounded once to bf16 (8 significant bits: unit roundoff u = 2⁻⁸), so
    /// |w_bf16 − w_fp32| ≤ |s|·(3|c − z| + |z|)·u to first order; asserted with 1 % slack.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    public void Does_dequantize_in_bf16_within_the_rounding_bound_of_the_float32_path(int bits)
    {
        var weight = randn([16, 256], generator: new Generator(7));
        using var q = Hqq.Quantize(weight, new HqqOptions { Bits = bits, GroupSize = 64 });
        var copy = QuantizedTensor.Create(q.Method, q.Bits, q.GroupSize, q.Codes.clone(), q.Scales.clone(), q.Zeros.clone());
        using var packed = PackedQuantizedLinear.Create(copy, null);

        using var fp32 = packed.DenseWeight(ScalarType.Float32);
        using var bf16 = packed.DenseWeight(ScalarType.BFloat16);

        Assert.Equal(ScalarType.BFloat16, bf16.dtype);
        var groups = 256 / 64;
        var c = q.Codes.to(ScalarType.Float64).view(16, groups, 64);
        var z = q.Zeros.to(ScalarType.Float64).view(16, groups, 1);
        var s = q.Scales.to(ScalarType.Float64).view(16, groups, 1);
        var bound = (s.abs() * ((c - z).abs() * 3 + z.abs()) * Math.Pow(2, -8) * 1.01 + 1e-7).view(16, 256);
        var error = (bf16.to(ScalarType.Float64) - fp32.to(ScalarType.Float64)).abs();
        var worst = (error - bound).argmax().item<long>();
        var (row, col) = (worst / 256, worst % 256);
        Assert.True((error <= bound).all().item<bool>(), $"at {row},{col}: c {c.view(16, 256)[row, col].item<double>()} z {z.expand(16, groups, 64).reshape(16, 256)[row, col].item<double>()} s {s.expand(16, groups, 64).reshape(16, 256)[row, col].item<double>()} fp32 {fp32[row, col].item<float>()} bf16 {bf16.to(ScalarType.Float32)[row, col].item<float>()}; max error {error.max().item<double>():E3}, max bound {bound.max().item<double>():E3}");
    }
}
