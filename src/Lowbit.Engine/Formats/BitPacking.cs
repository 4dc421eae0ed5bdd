namespace Lowbit.Engine.Formats;

/// <summary>Bit packing of integer codes for our own layout and for AutoGPTQ's int32 words.</summary>
public static class BitPacking
{
    /// <summary>Packs codes into a little-endian bit stream, element i at bit i·bits (LSB first); any width 1..8.</summary>
    public static byte[] PackBits(ReadOnlySpan<byte> codes, int bits)
    {
        var output = new byte[((long)codes.Length * bits + 7) / 8];
        if (bits == 8)
        {
            codes.CopyTo(output);
            return output;
        }
        long bit = 0;
        foreach (var c in codes)
        {
            var value = c & ((1 << bits) - 1);
            var index = (int)(bit >> 3);
            var shift = (int)(bit & 7);
            output[index] |= (byte)(value << shift);
            if (shift + bits > 8)
            {
                output[index + 1] |= (byte)(value >> (8 - shift));
            }
            bit += bits;
        }
        return output;
    }

    public static byte[] UnpackBits(ReadOnlySpan<byte> packed, int bits, long count)
    {
        var codes = new byte[count];
        if (bits == 8)
        {
            packed[..(int)count].CopyTo(codes);
            return codes;
        }
        var mask = (1 << bits) - 1;
        long bit = 0;
        for (long i = 0; i < count; i++, bit += bits)
        {
            var index = (int)(bit >> 3);
            var shift = (int)(bit & 7);
            var word = packed[index] | (index + 1 < packed.Length ? packed[index + 1] << 8 : 0);
            codes[i] = (byte)((word >> shift) & mask);
        }
        return codes;
    }

    /// <summary>
    /// AutoGPTQ qweight <c>[in·bits/32, out]</c> from codes <c>[out, in]</c> (row-major): word r of column n holds
    /// inputs k = r·(32/bits) + j at bit offset bits·j. Widths 2, 4, 8.
    /// </summary>
    public static int[] PackGptqWeight(ReadOnlySpan<byte> codes, int outFeatures, int inFeatures, int bits)
    {
        var perWord = CheckWidth(bits, inFeatures, "input width");
        var words = inFeatures / perWord;
        var qweight = new int[words * outFeatures];
        for (var n = 0; n < outFeatures; n++)
        {
            var row = codes.Slice(n * inFeatures, inFeatures);
            for (var r = 0; r < words; r++)
            {
                uint word = 0;
                for (var j = 0; j < perWord; j++)
                {
                    word |= (uint)row[r * perWord + j] << (bits * j);
                }
                qweight[r * outFeatures + n] = unchecked((int)word);
            }
        }
        return qweight;
    }

    /// <summary>Codes <c>[out, in]</c> back from an AutoGPTQ qweight.</summary>
    public static byte[] UnpackGptqWeight(ReadOnlySpan<int> qweight, int outFeatures, int inFeatures, int bits)
    {
        var perWord = CheckWidth(bits, inFeatures, "input width");
        var mask = (1u << bits) - 1;
        var codes = new byte[outFeatures * inFeatures];
        for (var r = 0; r < inFeatures / perWord; r++)
        {
            for (var n = 0; n < outFeatures; n++)
            {
                var word = unchecked((uint)qweight[r * outFeatures + n]);
                for (var j = 0; j < perWord; j++)
                {
                    codes[n * inFeatures + r * perWord + j] = (byte)((word >> (bits * j)) & mask);
                }
            }
        }
        return codes;
    }

    /// <summary>
    /// AutoGPTQ v1 qzeros <c>[groups, out·bits/32]</c> from integer zeros <c>[out, groups]</c>: packed along the output
    /// dimension, each stored as zero − 1 (the historical offset kernels add back).
    /// </summary>
    public static int[] PackGptqZeros(ReadOnlySpan<int> zeros, int outFeatures, int groups, int bits)
    {
        var perWord = CheckWidth(bits, outFeatures, "output width");
        var mask = (1u << bits) - 1;
        var words = outFeatures / perWord;
        var qzeros = new int[groups * words];
        for (var g = 0; g < groups; g++)
        {
            for (var c = 0; c < words; c++)
            {
                uint word = 0;
                for (var j = 0; j < perWord; j++)
                {
                    var n = c * perWord + j;
                    var z = zeros[n * groups + g];
                    if (z < 1 || z > mask)
                    {
                        throw new ArgumentOutOfRangeException(nameof(zeros), z, $"zero-point of output {n}, group {g} is not representable in GPTQ v1 qzeros (needs 1..{mask})");
                    }
                    word |= ((uint)(z - 1) & mask) << (bits * j);
                }
                qzeros[g * words + c] = unchecked((int)word);
            }
        }
        return qzeros;
    }

    /// <summary>Integer zeros <c>[out, groups]</c> back from v1 qzeros (adds the 1 back).</summary>
    public static int[] UnpackGptqZeros(ReadOnlySpan<int> qzeros, int outFeatures, int groups, int bits)
    {
        var perWord = CheckWidth(bits, outFeatures, "output width");
        var mask = (1u << bits) - 1;
        var words = outFeatures / perWord;
        var zeros = new int[outFeatures * groups];
        for (var g = 0; g < groups; g++)
        {
            for (var c = 0; c < words; c++)
            {
                var word = unchecked((uint)qzeros[g * words + c]);
                for (var j = 0; j < perWord; j++)
                {
                    zeros[(c * perWord + j) * groups + g] = (int)((word >> (bits * j)) & mask) + 1;
                }
            }
        }
        return zeros;
    }

    private static int CheckWidth(int bits, int length, string what)
    {
        if (bits is not (2 or 4 or 8))
        {
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "GPTQ packing supports 2, 4 and 8 bits");
        }
        var perWord = 32 / bits;
        if (length % perWord != 0)
        {
            throw new ArgumentException($"{what} {length} is not a multiple of {perWord} ({bits}-bit codes per int32)");
        }
        return perWord;
    }
}
