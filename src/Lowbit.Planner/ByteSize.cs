using System.Globalization;

namespace Lowbit.Planner;

/// <summary>
/// An amount of memory in bytes. Arithmetic saturates nowhere: the planner never deals with more than
/// a few PiB, far below <see cref="long.MaxValue"/>. GiB (2^30) is the unit GPU memory is sold in
/// (an "80GB" A100 has 80 GiB); GB (10^9) is the unit model sizes are usually quoted in.
/// </summary>
public readonly record struct ByteSize(long Bytes) : IComparable<ByteSize>
{
    public const long BytesPerGiB = 1L << 30;
    public const long BytesPerMiB = 1L << 20;
    public const double BytesPerGB = 1e9;

    public static ByteSize Zero => default;

    public double GiB => Bytes / (double)BytesPerGiB;

    public double GB => Bytes / BytesPerGB;

    /// <summary>Rounds a fractional byte count up (a tensor never occupies part of a byte less).</summary>
    public static ByteSize FromBytes(double bytes) => new((long)Math.Ceiling(bytes));

    public static ByteSize FromGiB(double gib) => FromBytes(gib * BytesPerGiB);

    public static ByteSize FromMiB(double mib) => FromBytes(mib * BytesPerMiB);

    public static ByteSize FromGB(double gb) => FromBytes(gb * BytesPerGB);

    public static ByteSize Max(ByteSize a, ByteSize b) => a.Bytes >= b.Bytes ? a : b;

    public static ByteSize operator +(ByteSize a, ByteSize b) => new(a.Bytes + b.Bytes);

    public static ByteSize operator -(ByteSize a, ByteSize b) => new(a.Bytes - b.Bytes);

    public static ByteSize operator *(ByteSize a, double factor) => FromBytes(a.Bytes * factor);

    public static ByteSize operator /(ByteSize a, double divisor) => FromBytes(a.Bytes / divisor);

    public static bool operator <(ByteSize a, ByteSize b) => a.Bytes < b.Bytes;

    public static bool operator >(ByteSize a, ByteSize b) => a.Bytes > b.Bytes;

    public static bool operator <=(ByteSize a, ByteSize b) => a.Bytes <= b.Bytes;

    public static bool operator >=(ByteSize a, ByteSize b) => a.Bytes >= b.Bytes;

    public int CompareTo(ByteSize other) => Bytes.CompareTo(other.Bytes);

    /// <summary>GiB rounded to one decimal, e.g. <c>38.9 GiB</c>.</summary>
    public override string ToString() => ToGiBString();

    public string ToGiBString() => string.Create(CultureInfo.InvariantCulture, $"{GiB:0.0} GiB");

    public string ToGBString() => string.Create(CultureInfo.InvariantCulture, $"{GB:0.0} GB");
}
