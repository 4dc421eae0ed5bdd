using System.Security.Cryptography;
using Lowbit.Engine.Formats;

namespace Lowbit.Engine.Tests.Formats;

public class GgmlQuantsTests
{
    private static float[] Ramp() => Enumerable.Range(0, 32).Select(j => (float)(j - 16)).ToArray();

    [Fact]
    public void Does_encode_the_q8_0_oracle_block_byte_exactly()
    {
        var block = GgmlQuants.Encode(GgmlType.Q8_0, Ramp());
        Assert.Equal("0830818991" + "99a1a9b1b9c0c8d0d8e0e8f0f8000810182028303840474f575f676f77", Convert.ToHexStringLower(block));
    }

    [Fact]
    public void Does_encode_the_q4_0_oracle_block_and_decode_with_low_nibbles_first()
    {
        var block = GgmlQuants.Encode(GgmlType.Q4_0, Ramp());
        Assert.Equal("00408091" + "91a2a2b3b3c4c4d5d5e6e6f7f7f8", Convert.ToHexStringLower(block));
        var y = GgmlQuants.Decode(GgmlType.Q4_0, block, 32);
        Assert.Equal([-16f, -14f, -14f, -12f, -12f], y[..5]);
        Assert.Equal([12f, 12f, 14f, 14f, 14f], y[^5..]);
    }

    [Fact]
    public void Does_decode_the_q4_k_oracle_block()
    {
        var block = new byte[144];
        Convert.FromHexString("003c0038" + "4182c3c44081c2c3414141cf").CopyTo(block, 0);
        for (var i = 0; i < 128; i++)
        {
            block[16 + i] = (byte)((i % 16) | ((15 - (i % 16)) << 4));
        }
        Assert.Equal("4a11ccc4b1e0c950f61b5a45280a8f7f3713290dca67df9a9aac30dced20923b", Convert.ToHexStringLower(SHA256.HashData(block)));
        var y = GgmlQuants.Decode(GgmlType.Q4_K, block, 256);
        Assert.Equal([0f, 1f, 2f, 3f], y[..4]);
        Assert.Equal([29.5f, 27.5f, 25.5f, 23.5f], y[32..36]);
        Assert.Equal([-10f, 7f, 24f], y[128..131]);
        Assert.Equal(-30f, y[255]);
        Assert.Equal(38496.0, y.Sum(v => (double)v));
    }

    [Theory]
    [InlineData(GgmlType.Q8_0, 0.005)]
    [InlineData(GgmlType.Q4_0, 0.09)]
    [InlineData(GgmlType.Q4_K, 0.06)]
    public void Does_round_trip_weights_within_the_format_precision(GgmlType type, double maxRelativeError)
    {
        var random = new Random(11);
        var x = Enumerable.Range(0, 4096).Select(_ => (float)(random.NextDouble() * 2 - 1) * 0.05f).ToArray();
        var bytes = GgmlQuants.Encode(type, x);
        Assert.Equal(GgmlQuants.ByteSize(type, 4096), bytes.Length);
        var y = GgmlQuants.Decode(type, bytes, 4096);
        var err = Math.Sqrt(x.Zip(y, (a, b) => (double)(a - b) * (a - b)).Sum() / x.Sum(a => (double)a * a));
        Assert.True(err < maxRelativeError, $"{type}: relative error {err}");
    }

    [Fact]
    public void Does_give_q4_k_a_lower_error_than_q4_0_at_the_same_bits_per_weight()
    {
        var random = new Random(5);
        var x = Enumerable.Range(0, 8192).Select(_ => (float)(random.NextDouble() + random.NextDouble() - 1) * 0.03f).ToArray();
        double Error(GgmlType t)
        {
            var y = GgmlQuants.Decode(t, GgmlQuants.Encode(t, x), x.Length);
            return x.Zip(y, (a, b) => (double)(a - b) * (a - b)).Sum();
        }
        Assert.True(Error(GgmlType.Q4_K) < Error(GgmlType.Q4_0));
    }

    [Fact]
    public void Does_size_a_4096_square_q4_k_tensor_as_the_oracle_says()
    {
        Assert.Equal(9_437_184, GgmlQuants.ByteSize(GgmlType.Q4_K, 4096L * 4096));
        Assert.Throws<ArgumentException>(() => GgmlQuants.ByteSize(GgmlType.Q4_K, 4096 + 32));
    }
}
