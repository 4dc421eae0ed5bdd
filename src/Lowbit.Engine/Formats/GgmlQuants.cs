using System.Buffers.Binary;

namespace Lowbit.Engine.Formats;

/// <summary>ggml tensor types we read and write (ids from ggml.h).</summary>
public enum GgmlType
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q8_0 = 8,
    Q4_K = 12,
}

/// <summary>
/// llama.cpp's block encodings (ggml-quants.c reference quantizers, ported to float32 C#): Q8_0 and Q4_0 are
/// bit-identical to <c>quantize_row_q8_0_ref</c> / <c>quantize_row_q4_0_ref</c>; Q4_K follows
/// <c>quantize_row_q4_K_ref</c> (the make_qkx2 scale/min search). Decoders follow <c>dequantize_row_*</c>.
/// </summary>
public static class GgmlQuants
{
    public const int Q8_0BlockBytes = 34;
    public const int Q4_0BlockBytes = 18;
    public const int Q4_KBlockBytes = 144;
    public const int SmallBlock = 32;
    public const int SuperBlock = 256;

    public static int BlockElements(GgmlType type) => type switch
    {
        GgmlType.F32 or GgmlType.F16 => 1,
        GgmlType.Q4_0 or GgmlType.Q8_0 => SmallBlock,
        GgmlType.Q4_K => SuperBlock,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    public static int BlockBytes(GgmlType type) => type switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 => 2,
        GgmlType.Q4_0 => Q4_0BlockBytes,
        GgmlType.Q8_0 => Q8_0BlockBytes,
        GgmlType.Q4_K => Q4_KBlockBytes,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    /// <summary>Bytes of a row-major tensor of <paramref name="elements"/> elements (a multiple of the block size).</summary>
    public static long ByteSize(GgmlType type, long elements)
    {
        var block = BlockElements(type);
        if (elements % block != 0)
        {
            throw new ArgumentException($"{type} needs a multiple of {block} elements per row, got {elements}", nameof(elements));
        }
        return checked(elements / block * BlockBytes(type)); // a fuzzed header can name more bytes than a long holds
    }

    public static byte[] Encode(GgmlType type, ReadOnlySpan<float> x)
    {
        var output = new byte[ByteSize(type, x.Length)];
        var block = BlockElements(type);
        var bytes = BlockBytes(type);
        for (int b = 0, o = 0; b < x.Length; b += block, o += bytes)
        {
            var src = x.Slice(b, block);
            var dst = output.AsSpan(o, bytes);
            switch (type)
            {
                case GgmlType.F32:
                    BinaryPrimitives.WriteSingleLittleEndian(dst, src[0]);
                    break;
                case GgmlType.F16:
                    BinaryPrimitives.WriteHalfLittleEndian(dst, (Half)src[0]);
                    break;
                case GgmlType.Q8_0:
                    EncodeQ8_0(src, dst);
                    break;
                case GgmlType.Q4_0:
                    EncodeQ4_0(src, dst);
                    break;
                case GgmlType.Q4_K:
                    EncodeQ4_K(src, dst);
                    break;
            }
        }
        return output;
    }

    public static float[] Decode(GgmlType type, ReadOnlySpan<byte> data, long elements)
    {
        if (data.Length != ByteSize(type, elements))
        {
            throw new ArgumentException($"{type}: {elements} elements need {ByteSize(type, elements)} bytes, got {data.Length}", nameof(data));
        }
        var y = new float[elements];
        var block = BlockElements(type);
        var bytes = BlockBytes(type);
        for (int b = 0, o = 0; b < elements; b += block, o += bytes)
        {
            var src = data.Slice(o, bytes);
            var dst = y.AsSpan(b, block);
            switch (type)
            {
                case GgmlType.F32:
                    dst[0] = BinaryPrimitives.ReadSingleLittleEndian(src);
                    break;
                case GgmlType.F16:
                    dst[0] = (float)BinaryPrimitives.ReadHalfLittleEndian(src);
                    break;
                case GgmlType.Q8_0:
                    DecodeQ8_0(src, dst);
                    break;
                case GgmlType.Q4_0:
                    DecodeQ4_0(src, dst);
                    break;
                case GgmlType.Q4_K:
                    DecodeQ4_K(src, dst);
                    break;
            }
        }
        return y;
    }

    private static void EncodeQ8_0(ReadOnlySpan<float> x, Span<byte> y)
    {
        var amax = 0f;
        foreach (var v in x)
        {
            amax = MathF.Max(amax, MathF.Abs(v));
        }
        var d = amax / 127f;
        var id = d != 0 ? 1f / d : 0f;
        BinaryPrimitives.WriteHalfLittleEndian(y, (Half)d);
        for (var j = 0; j < SmallBlock; j++)
        {
            y[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
        }
    }

    private static void DecodeQ8_0(ReadOnlySpan<byte> x, Span<float> y)
    {
        var d = (float)BinaryPrimitives.ReadHalfLittleEndian(x);
        for (var j = 0; j < SmallBlock; j++)
        {
            y[j] = d * (sbyte)x[2 + j];
        }
    }

    private static void EncodeQ4_0(ReadOnlySpan<float> x, Span<byte> y)
    {
        var amax = 0f;
        var max = 0f;
        foreach (var v in x)
        {
            if (amax < MathF.Abs(v))
            {
                amax = MathF.Abs(v);
                max = v;
            }
        }
        var d = max / -8f;
        var id = d != 0 ? 1f / d : 0f;
        BinaryPrimitives.WriteHalfLittleEndian(y, (Half)d);
        for (var j = 0; j < SmallBlock / 2; j++)
        {
            var x0 = x[j] * id;
            var x1 = x[SmallBlock / 2 + j] * id;
            var q0 = Math.Min(15, (int)(sbyte)(x0 + 8.5f));
            var q1 = Math.Min(15, (int)(sbyte)(x1 + 8.5f));
            y[2 + j] = (byte)(q0 | (q1 << 4));
        }
    }

    private static void DecodeQ4_0(ReadOnlySpan<byte> x, Span<float> y)
    {
        var d = (float)BinaryPrimitives.ReadHalfLittleEndian(x);
        for (var j = 0; j < SmallBlock / 2; j++)
        {
            y[j] = d * ((x[2 + j] & 0xF) - 8);
            y[j + SmallBlock / 2] = d * ((x[2 + j] >> 4) - 8);
        }
    }

    private static void DecodeQ4_K(ReadOnlySpan<byte> x, Span<float> y)
    {
        var d = (float)BinaryPrimitives.ReadHalfLittleEndian(x);
        var dmin = (float)BinaryPrimitives.ReadHalfLittleEndian(x[2..]);
        var scales = x.Slice(4, 12);
        var qs = x.Slice(16, 128);
        for (var c = 0; c < 4; c++)
        {
            var (sc0, m0) = ScaleMinK4(2 * c, scales);
            var (sc1, m1) = ScaleMinK4(2 * c + 1, scales);
            float d1 = d * sc0, min1 = dmin * m0, d2 = d * sc1, min2 = dmin * m1;
            for (var l = 0; l < 32; l++)
            {
                var q = qs[32 * c + l];
                y[64 * c + l] = d1 * (q & 0xF) - min1;
                y[64 * c + 32 + l] = d2 * (q >> 4) - min2;
            }
        }
    }

    /// <summary>The 6-bit (scale, min) of sub-block j from the 12 packed scale bytes (get_scale_min_k4).</summary>
    internal static (int Scale, int Min) ScaleMinK4(int j, ReadOnlySpan<byte> q) => j < 4
        ? (q[j] & 63, q[j + 4] & 63)
        : ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4));

    private static void EncodeQ4_K(ReadOnlySpan<float> x, Span<byte> y)
    {
        Span<byte> levels = stackalloc byte[SuperBlock];
        Span<byte> aux = stackalloc byte[32];
        Span<float> weights = stackalloc float[32];
        Span<float> mins = stackalloc float[8];
        Span<float> scales = stackalloc float[8];
        var maxScale = 0f;
        var maxMin = 0f;
        for (var j = 0; j < 8; j++)
        {
            var sub = x.Slice(32 * j, 32);
            var sumX2 = 0f;
            foreach (var v in sub)
            {
                sumX2 += v * v;
            }
            var avX = MathF.Sqrt(sumX2 / 32);
            for (var l = 0; l < 32; l++)
            {
                weights[l] = avX + MathF.Abs(sub[l]);
            }
            scales[j] = MakeQkx2Quants(sub, 15, weights, levels.Slice(32 * j, 32), out mins[j], aux, -1f, 0.1f, 20);
            maxScale = MathF.Max(maxScale, scales[j]);
            maxMin = MathF.Max(maxMin, mins[j]);
        }
        var invScale = maxScale > 0 ? 63f / maxScale : 0f;
        var invMin = maxMin > 0 ? 63f / maxMin : 0f;
        var packed = y.Slice(4, 12);
        packed.Clear();
        for (var j = 0; j < 8; j++)
        {
            var ls = (byte)Math.Min(63, NearestInt(invScale * scales[j]));
            var lm = (byte)Math.Min(63, NearestInt(invMin * mins[j]));
            if (j < 4)
            {
                packed[j] = ls;
                packed[j + 4] = lm;
            }
            else
            {
                packed[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                packed[j - 4] |= (byte)((ls >> 4) << 6);
                packed[j] |= (byte)((lm >> 4) << 6);
            }
        }
        var dHalf = (Half)(maxScale / 63f);
        var dminHalf = (Half)(maxMin / 63f);
        BinaryPrimitives.WriteHalfLittleEndian(y, dHalf);
        BinaryPrimitives.WriteHalfLittleEndian(y[2..], dminHalf);
        for (var j = 0; j < 8; j++)
        {
            var (sc, m) = ScaleMinK4(j, packed);
            var d = (float)dHalf * sc;
            if (d == 0)
            {
                continue;
            }
            var dm = (float)dminHalf * m;
            for (var ii = 0; ii < 32; ii++)
            {
                levels[32 * j + ii] = (byte)Math.Clamp(NearestInt((x[32 * j + ii] + dm) / d), 0, 15);
            }
        }
        var qs = y.Slice(16, 128);
        for (int j = 0, o = 0; j < SuperBlock; j += 64, o += 32)
        {
            for (var l = 0; l < 32; l++)
            {
                qs[o + l] = (byte)(levels[j + l] | (levels[j + l + 32] << 4));
            }
        }
    }

    /// <summary>make_qkx2_quants: weighted least-squares search over a grid of inverse scales for (scale, min).</summary>
    private static float MakeQkx2Quants(ReadOnlySpan<float> x, int nmax, ReadOnlySpan<float> weights, Span<byte> levels, out float theMin, Span<byte> aux, float rmin, float rdelta, int nstep)
    {
        var n = x.Length;
        var min = x[0];
        var max = x[0];
        var sumW = weights[0];
        var sumX = sumW * x[0];
        for (var i = 1; i < n; i++)
        {
            min = MathF.Min(min, x[i]);
            max = MathF.Max(max, x[i]);
            sumW += weights[i];
            sumX += weights[i] * x[i];
        }
        if (min > 0)
        {
            min = 0;
        }
        if (max == min)
        {
            levels.Clear();
            theMin = -min;
            return 0f;
        }
        var iscale = nmax / (max - min);
        var scale = 1 / iscale;
        var bestMad = 0f;
        for (var i = 0; i < n; i++)
        {
            var l = Math.Clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
            levels[i] = (byte)l;
            var diff = scale * l + min - x[i];
            bestMad += weights[i] * diff * diff;
        }
        for (var step = 0; step <= nstep; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXl = 0;
            for (var i = 0; i < n; i++)
            {
                var l = Math.Clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
                aux[i] = (byte)l;
                var w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXl += w * l * x[i];
            }
            var det = sumW * sumL2 - sumL * sumL;
            if (det > 0)
            {
                var thisScale = (sumW * sumXl - sumX * sumL) / det;
                var thisMin = (sumL2 * sumX - sumL * sumXl) / det;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXl / sumL2;
                }
                var mad = 0f;
                for (var i = 0; i < n; i++)
                {
                    var diff = thisScale * aux[i] + thisMin - x[i];
                    mad += weights[i] * diff * diff;
                }
                if (mad < bestMad)
                {
                    aux[..n].CopyTo(levels);
                    bestMad = mad;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }

    /// <summary>ggml's nearest_int: round half to even in float32.</summary>
    private static int NearestInt(float v) => (int)MathF.Round(v, MidpointRounding.ToEven);
}
