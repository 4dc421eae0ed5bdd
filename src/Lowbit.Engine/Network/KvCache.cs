using Lowbit.Engine.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Network;

/// <summary>
/// Keys and values of every layer for one generation: preallocated <c>[B, kv_heads, max, head_dim]</c> per layer,
/// written in place, so a decode step copies one position per layer instead of concatenating.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] _keys;
    private readonly Tensor[] _values;

    public KvCache(LlamaConfig config, long batch, long maxLength, ScalarType dtype, Device device)
    {
        MaxLength = maxLength;
        _keys = new Tensor[config.NumHiddenLayers];
        _values = new Tensor[config.NumHiddenLayers];
        for (var i = 0; i < config.NumHiddenLayers; i++)
        {
            _keys[i] = zeros([batch, config.NumKeyValueHeads, maxLength, config.HeadDim], dtype, device);
            _values[i] = zeros([batch, config.NumKeyValueHeads, maxLength, config.HeadDim], dtype, device);
        }
    }

    public long MaxLength { get; }

    /// <summary>Positions already stored (the next token's position).</summary>
    public long Length { get; private set; }

    /// <summary>Stores <paramref name="key"/>/<paramref name="value"/> (<c>[B, kv, T, D]</c>) of layer <paramref name="layer"/> at the current length and returns views of all stored positions.</summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor key, Tensor value)
    {
        var length = key.shape[2];
        if (Length + length > MaxLength)
        {
            throw new InvalidOperationException($"KV cache holds {MaxLength} positions; {Length} + {length} requested");
        }
        using (var k = _keys[layer].narrow(2, Length, length))
        using (var v = _values[layer].narrow(2, Length, length))
        {
            k.copy_(key);
            v.copy_(value);
        }
        return (_keys[layer].narrow(2, 0, Length + length), _values[layer].narrow(2, 0, Length + length));
    }

    /// <summary>Called once per forward pass after every layer appended <paramref name="length"/> positions.</summary>
    public void Advance(long length) => Length += length;

    public void Dispose()
    {
        foreach (var t in _keys.Concat(_values))
        {
            t.Dispose();
        }
    }
}
