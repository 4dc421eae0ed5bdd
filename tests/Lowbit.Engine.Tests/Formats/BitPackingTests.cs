using Lowbit.Engine.Formats;

namespace Lowbit.Engine.Tests.Formats;

public class BitPackingTests
{
    [Fact]
    public void Does_pack_inputs_0_to_7_of_one_column_into_0x76543210_when_gptq_4_bit()
    {
        // codes [out=1, in=8]: input k holds code k.
        var qweight = BitPacking.PackGptqWeight([0, 1, 2, 3, 4, 5, 6, 7], 1, 8, 4);
        Assert.Equal([0x76543210], qweight);
        Assert.Equal(new byte[] { 0, 1, 2, 3, 4, 5, 6, 7 }, BitPacking.UnpackGptqWeight(qweight, 1, 8, 4));
    }

    [Fact]
    public void Does_store_symmetric_4_bit_zeros_as_0x77777777_words()
    {
        var zeros = Enumerable.Repeat(8, 16 * 2).ToArray();
        var qzeros = BitPacking.PackGptqZeros(zeros, 16, 2, 4);
        Assert.All(qzeros, w => Assert.Equal(2004318071, w));
        Assert.Equal(zeros, BitPacking.UnpackGptqZeros(qzeros, 16, 2, 4));
    }

    [Fact]
    public void Does_refuse_a_zero_point_of_zero_because_v1_would_overflow_into_the_neighbour()
    {
        var zeros = new int[8];
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => BitPacking.PackGptqZeros(zeros, 8, 1, 4));
        Assert.Contains("not representable", ex.Message);
    }

    [Fact]
    public void Does_refuse_a_zero_point_of_16_because_its_stored_nibble_15_reads_differently_across_gptq_readers()
    {
        var zeros = Enumerable.Repeat(16, 8).ToArray();
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => BitPacking.PackGptqZeros(zeros, 8, 1, 4));
        Assert.Contains("1..15", ex.Message);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(8)]
    public void Does_round_trip_codes_through_the_bit_stream(int bits)
    {
        var random = new Random(bits);
        var codes = Enumerable.Range(0, 1000).Select(_ => (byte)random.Next(1 << bits)).ToArray();
        var packed = BitPacking.PackBits(codes, bits);
        Assert.Equal((1000 * bits + 7) / 8, packed.Length);
        Assert.Equal(codes, BitPacking.UnpackBits(packed, bits, codes.Length));
    }

    [Fact]
    public void Does_round_trip_8_bit_gptq_weights()
    {
        var random = new Random(3);
        var codes = Enumerable.Range(0, 4 * 16).Select(_ => (byte)random.Next(256)).ToArray();
        var qweight = BitPacking.PackGptqWeight(codes, 4, 16, 8);
        Assert.Equal(4 * 4, qweight.Length);
        Assert.Equal(codes, BitPacking.UnpackGptqWeight(qweight, 4, 16, 8));
    }
}
