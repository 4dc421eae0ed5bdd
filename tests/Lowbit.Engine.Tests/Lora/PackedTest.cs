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
        // Codes bit-packed; scales and zeros as float16 (they hold fp16 values: QuantizedTensor.Create rounds them).
        Assert.Equal(12 * 128 * bits / 8 + 2 * 2 * 12 * 4, ((PackedQuantizedLinear)packed).StorageBytes);
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
        var bound = (s.abs() * ((c - z).abs() * Scalars.Of(3)).add(z.abs(), Scalars.One) * Scalars.Of(Math.Pow(2, -8)) * Scalars.Of(1.01)).add(Scalars.Of(1e-7), Scalars.One).view(16, 256);
        var error = (bf16.to(ScalarType.Float64) - fp32.to(ScalarType.Float64)).abs();
        var worst = (error - bound).argmax().item<long>();
        var (row, col) = (worst / 256, worst % 256);
        Assert.True((error <= bound).all().item<bool>(), $"at {row},{col}: c {c.view(16, 256)[row, col].item<double>()} z {z.expand(16, groups, 64).reshape(16, 256)[row, col].item<double>()} s {s.expand(16, groups, 64).reshape(16, 256)[row, col].item<double>()} fp32 {fp32[row, col].item<float>()} bf16 {bf16.to(ScalarType.Float32)[row, col].item<float>()}; max error {error.max().item<double>():E3}, max bound {bound.max().item<double>():E3}");
    }

    /// <summary>
    /// With a gradient, the packed layer runs as <see cref="DequantizedLinear"/> (the backward dequantizes again instead
    /// of autograd keeping the dense weight): the output and every gradient equal plain autograd through the dequantized
    /// weight.
    /// </summary>
    [Fact]
    public void Does_give_the_gradients_of_plain_autograd_when_the_backward_dequantizes_again()
    {
        var weight = randn([24, 64], generator: new Generator(3));
        using var q = Rtn.Quantize(weight, new RtnOptions { Bits = 4, GroupSize = 32 });
        using var dense = q.Dequantize();
        var copy = QuantizedTensor.Create(q.Method, q.Bits, q.GroupSize, q.Codes.clone(), q.Scales.clone(), q.Zeros.clone());
        var settings = new LoraSettings { R = 4, Alpha = 8, TargetModules = ["q_proj"] };
        using var lora = new LoraLinear(PackedQuantizedLinear.Create(copy, null), settings, 0, CPU);
        using (no_grad())
        {
            lora.A.normal_(0, 0.1, new Generator(4));
            lora.B.normal_(0, 0.1, new Generator(5));
        }
        lora.eval();
        var x = randn([3, 5, 64], generator: new Generator(6)).requires_grad_(true);
        var x2 = x.detach().clone().requires_grad_(true);
        var a2 = lora.A.detach().clone().requires_grad_(true);
        var b2 = lora.B.detach().clone().requires_grad_(true);

        var y = lora.forward(x);
        y.pow(Scalars.Of(2)).sum().backward();
        var y2 = x2.matmul(dense.t()).add(x2.matmul(a2.t()).matmul(b2.t()) * Scalars.Of(settings.Scaling), Scalars.One);
        y2.pow(Scalars.Of(2)).sum().backward();

        Assert.True(y.allclose(y2, 1e-5, 1e-5));
        Assert.True(x.grad!.allclose(x2.grad!, 1e-5, 1e-5), "input gradient");
        Assert.True(lora.A.grad!.allclose(a2.grad!, 1e-5, 1e-5), "lora_A gradient");
        Assert.True(lora.B.grad!.allclose(b2.grad!, 1e-5, 1e-5), "lora_B gradient");
    }
}
