using Lowbit.Engine.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Network;

/// <summary>
/// RoPE in Hugging Face's rotate-half layout (engine-formats.md §2.4): <c>inv_freq[i] = θ^(−2i/d)</c>, optionally
/// rescaled (Llama-3 per-frequency scaling, or linear), angles <c>pos·inv_freq</c> computed in fp32.
/// </summary>
public sealed class RotaryEmbedding
{
    private readonly double[] _inverseFrequencies;

    // The inverse frequencies on the device last used (float64, never freed while the model lives): a forward makes no
    // host-to-device copy, which a CUDA graph could not record (the copy from pageable memory synchronises).
    private Tensor? _deviceFrequencies;

    public RotaryEmbedding(LlamaConfig config)
    {
        _inverseFrequencies = InverseFrequencies(config);
    }

    /// <summary>The (possibly scaled) inverse frequencies, length head_dim/2, in double precision.</summary>
    public static double[] InverseFrequencies(LlamaConfig config)
    {
        var d = config.HeadDim;
        // HF: 1 / theta ** (arange(0, d, 2).float() / d), in fp32.
        var inv = Enumerable.Range(0, d / 2).Select(i => 1.0 / Math.Pow(config.RopeTheta, (float)(2 * i) / d)).ToArray();
        if (config.RopeScaling is not { } s)
        {
            return inv;
        }
        if (s.Type == "linear")
        {
            return inv.Select(f => f / s.Factor).ToArray();
        }
        var lowWavelength = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
        var highWavelength = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
        return inv.Select(f =>
        {
            var wavelength = 2 * Math.PI / f;
            if (wavelength < highWavelength)
            {
                return f;
            }
            if (wavelength > lowWavelength)
            {
                return f / s.Factor;
            }
            var smooth = (s.OriginalMaxPositionEmbeddings / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
            return (1 - smooth) * f / s.Factor + smooth * f;
        }).ToArray();
    }

    /// <summary>
    /// cos and sin of shape <c>[T, head_dim]</c> for positions <c>offset..offset+T−1</c>, in <paramref name="dtype"/>;
    /// computed in fp32 as transformers does (in fp64 for a float64 model).
    /// </summary>
    public (Tensor Cos, Tensor Sin) CosSin(long offset, long length, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var compute = dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var positions = arange(Scalars.Of(offset), Scalars.Of(offset + length), Scalars.One, compute, device);
        var inv = Frequencies(device).to(compute);
        var freqs = outer(positions, inv);
        var emb = cat([freqs, freqs], -1);
        return (emb.cos().to(dtype).MoveToOuterDisposeScope(), emb.sin().to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// cos and sin of shape <c>[B, 1, T, head_dim]</c> for per-token positions <c>[B, T]</c> (packed documents), computed
    /// exactly as <see cref="CosSin(long, long, ScalarType, Device)"/> computes each position.
    /// </summary>
    public (Tensor Cos, Tensor Sin) CosSin(Tensor positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var compute = dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var inv = Frequencies(positions.device).to(compute);
        var freqs = positions.to(compute).unsqueeze(-1).mul(inv);
        var emb = cat([freqs, freqs], -1).unsqueeze(1);
        return (emb.cos().to(dtype).MoveToOuterDisposeScope(), emb.sin().to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// <see cref="Apply"/> with <paramref name="signedSin"/> = <see cref="SignedSin"/>: rotate_half(x)·sin =
    /// roll(x, D/2)·signedSin element for element (negation commutes with rounding), so the result is bit-identical in
    /// four ops (roll, two products, a sum) instead of seven.
    /// </summary>
    public static Tensor ApplyRolled(Tensor x, Tensor cos, Tensor signedSin)
    {
        using var scope = NewDisposeScope();
        var rolled = x.roll(x.shape[^1] / 2, -1);
        return x.mul(cos).add_(rolled.mul(signedSin), Scalars.One).MoveToOuterDisposeScope();
    }

    /// <summary><paramref name="sin"/> <c>[..., D]</c> with its first half negated, for <see cref="ApplyRolled"/>.</summary>
    public static Tensor SignedSin(Tensor sin)
    {
        using var scope = NewDisposeScope();
        var half = sin.shape[^1] / 2;
        return cat([sin.narrow(-1, 0, half).neg(), sin.narrow(-1, half, half)], -1).MoveToOuterDisposeScope();
    }

    private Tensor Frequencies(Device device)
    {
        var cached = _deviceFrequencies;
        if (cached is null || cached.device.type != device.type || cached.device.index != device.index)
        {
            cached = tensor(_inverseFrequencies, device: device).DetachFromDisposeScope();
            _deviceFrequencies = cached;
        }
        return cached;
    }

    /// <summary>Applies the rotation to <c>[B, heads, T, D]</c>: <c>x·cos + rotate_half(x)·sin</c>.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var half = x.shape[^1] / 2;
        var rotated = cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
        return (x * cos).add(rotated * sin, Scalars.One).MoveToOuterDisposeScope();
    }
}
