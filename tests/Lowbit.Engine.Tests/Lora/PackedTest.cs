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
}
