namespace Lowbit.Planner.Tests;

public sealed class ByteSizeTests
{
    [Fact]
    public void Does_format_GiB_and_GB_with_one_decimal()
    {
        var size = ByteSize.FromGiB(38.94);
        Assert.Equal("38.9 GiB", size.ToString());
        Assert.Equal("41.8 GB", size.ToGBString());
    }

    [Fact]
    public void Does_round_fractional_bytes_up_and_compare()
    {
        Assert.Equal(2, ByteSize.FromBytes(1.01).Bytes);
        Assert.True(ByteSize.FromGiB(1) > ByteSize.FromGB(1));
        Assert.Equal(ByteSize.FromGiB(3), ByteSize.FromGiB(1) + ByteSize.FromGiB(2));
        Assert.Equal(ByteSize.FromGiB(2), ByteSize.Max(ByteSize.FromGiB(2), ByteSize.FromGiB(1)));
    }
}
