using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>
/// The batched forward pass of the server over a preallocated slab KV cache: per layer one tensor
/// <c>[slots, max_context + 1, kv_heads, head_dim]</c> for keys and one for values, allocated once at start
/// (max-context × max-concurrency, never grown, never over-committed). Position <c>max_context</c> of every slot is
/// a scratch row: rows of the decode step that have no request write there, so the step has a fixed shape.
/// <list type="bullet">
/// <item><see cref="Prefill"/>(slot, tokens, start): one chunk of a prompt into a slot; returns the last position's logits.</item>
/// <item><see cref="Step"/>(tokens, positions, rows): one decode token for rows <c>0..rows−1</c> (row = slot); returns logits <c>[rows, vocab]</c> (float32).</item>
/// <item>Freeing a slot needs no work: its positions are overwritten by the next request and masked until then.</item>
/// </list>
/// Inside a step there is no host synchronisation; the caller reads the sampled tokens once per step.
/// </summary>
public sealed class DecodeBatch : IDecodeBackend
{
    private readonly LlamaForCausalLM _model;
    private readonly Tensor[] _keys;
    private readonly Tensor[] _values;
    private readonly Tensor _cosTable;
    private readonly Tensor _sinTable;
    private readonly Tensor _slotIndex;
    private readonly Tensor _positionRange;
    private readonly int _heads;
    private readonly int _kvHeads;
    private readonly int _headDim;

    public DecodeBatch(LlamaForCausalLM model, int slots, int maxContext, Device device)
    {
        _model = model;
        Slots = slots;
        MaxContext = maxContext;
        Device = device;
        var config = model.Config;
        _heads = config.NumAttentionHeads;
        _kvHeads = config.NumKeyValueHeads;
        _headDim = config.HeadDim;
        _keys = new Tensor[config.NumHiddenLayers];
        _values = new Tensor[config.NumHiddenLayers];
        for (var i = 0; i < config.NumHiddenLayers; i++)
        {
            _keys[i] = zeros([slots, maxContext + 1, _kvHeads, _headDim], model.Dtype, device);
            _values[i] = zeros([slots, maxContext + 1, _kvHeads, _headDim], model.Dtype, device);
        }
        var (cos, sin) = new RotaryEmbedding(config).CosSin(0, maxContext + 1, model.Dtype, device);
        _cosTable = cos;
        _sinTable = sin;
        _slotIndex = arange(Scalars.Of(0), Scalars.Of(slots), Scalars.One, ScalarType.Int64, device);
        _positionRange = arange(Scalars.Of(0), Scalars.Of(maxContext + 1), Scalars.One, ScalarType.Int64, device);
    }

    public int Slots { get; }

    public int MaxContext { get; }

    public Device Device { get; }

    /// <summary>Bytes held by the KV slab.</summary>
    public long CacheBytes => _keys.Concat(_values).Sum(t => t.NumberOfElements * t.ElementSize);

    /// <summary>The scratch position a row without a request writes to.</summary>
    public int ScratchPosition => MaxContext;

    /// <summary>
    /// Runs one prompt chunk <paramref name="tokens"/> of slot <paramref name="slot"/> at positions
    /// <c>start..start+n−1</c> (the slot's earlier positions are already cached) and returns the float32 logits
    /// <c>[vocab]</c> of the chunk's last position.
    /// </summary>
    public Tensor Prefill(int slot, IReadOnlyList<int> tokens, int start)
    {
        var length = tokens.Count;
        if (start + length > MaxContext)
        {
            throw new InvalidOperationException($"slot {slot}: {start} + {length} positions exceed the context of {MaxContext}");
        }
        using var scope = NewDisposeScope();
        var ids = tensor(tokens.Select(t => (long)t).ToArray(), [1, length], device: Device);
        var hidden = _model.Model.EmbedTokens.forward(ids);
        var cos = _cosTable.narrow(0, start, length);
        var sin = _sinTable.narrow(0, start, length);
        var groups = _heads / _kvHeads;
        Tensor? mask = start == 0 ? null : ones([length, start + length], ScalarType.Bool, Device).tril(start);
        var layers = _model.Model.Layers;
        for (var l = 0; l < layers.Count; l++)
        {
            var layer = layers[l];
            var projections = Projections(layer);
            var x = layer.InputLayerNorm.forward(hidden);
            var q = projections.Q.forward(x).view(1, length, _heads, _headDim).transpose(1, 2);
            var k = projections.K.forward(x).view(1, length, _kvHeads, _headDim);
            var v = projections.V.forward(x).view(1, length, _kvHeads, _headDim);
            q = RotaryEmbedding.Apply(q, cos, sin);
            k = RotaryEmbedding.Apply(k.transpose(1, 2), cos, sin).transpose(1, 2);
            _keys[l][slot].narrow(0, start, length).copy_(k[0]);
            _values[l][slot].narrow(0, start, length).copy_(v[0]);
            var keys = _keys[l][slot].narrow(0, 0, start + length).transpose(0, 1).unsqueeze(0);
            var values = _values[l][slot].narrow(0, 0, start + length).transpose(0, 1).unsqueeze(0);
            if (groups > 1)
            {
                keys = keys.repeat_interleave(groups, 1);
                values = values.repeat_interleave(groups, 1);
            }
            var attended = mask is null
                ? nn.functional.scaled_dot_product_attention(q, keys, values, is_casual: true)
                : nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask: mask);
            var merged = attended.transpose(1, 2).reshape(1, length, _heads * _headDim);
            hidden = hidden.add(projections.O.forward(merged), Scalars.One);
            hidden = hidden.add(layer.Mlp.forward(layer.PostAttentionLayerNorm.forward(hidden)), Scalars.One);
        }
        var last = _model.Model.Norm.forward(hidden.narrow(1, length - 1, 1));
        return _model.Logits(last).reshape(-1).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One decode step for rows <c>0..rows−1</c>: <paramref name="tokens"/> and <paramref name="positions"/> are
    /// <c>[rows]</c> int64 on the device (a row without a request passes any token and <see cref="ScratchPosition"/>).
    /// Attention covers positions <c>0..attend−1</c>; returns float32 logits <c>[rows, vocab]</c>.
    /// </summary>
    public Tensor Step(Tensor tokens, Tensor positions, int rows, int attend)
    {
        using var scope = NewDisposeScope();
        var groups = _heads / _kvHeads;
        var hidden = _model.Model.EmbedTokens.forward(tokens.view(rows, 1));
        var cos = _cosTable.index_select(0, positions).view(rows, 1, 1, _headDim);
        var sin = _sinTable.index_select(0, positions).view(rows, 1, 1, _headDim);
        var slots = _slotIndex.narrow(0, 0, rows);
        // Row r sees its own positions 0..position[r]; keys are laid out [rows, kv, attend, D], queries grouped per kv head.
        var mask = _positionRange.narrow(0, 0, attend).view(1, attend).le(positions.view(rows, 1)).view(rows, 1, 1, attend);
        var layers = _model.Model.Layers;
        for (var l = 0; l < layers.Count; l++)
        {
            var layer = layers[l];
            var projections = Projections(layer);
            var x = layer.InputLayerNorm.forward(hidden);
            var q = projections.Q.forward(x).view(rows, _heads, 1, _headDim);
            var k = projections.K.forward(x).view(rows, _kvHeads, 1, _headDim);
            var v = projections.V.forward(x).view(rows, _kvHeads, _headDim);
            q = RotaryEmbedding.Apply(q, cos, sin);
            k = RotaryEmbedding.Apply(k, cos, sin).view(rows, _kvHeads, _headDim);
            var keySlab = _keys[l].narrow(0, 0, rows);
            var valueSlab = _values[l].narrow(0, 0, rows);
            keySlab.index_put_(k, slots, positions);
            valueSlab.index_put_(v, slots, positions);
            var keys = keySlab.narrow(1, 0, attend).transpose(1, 2);
            var values = valueSlab.narrow(1, 0, attend).transpose(1, 2);
            var grouped = q.view(rows, _kvHeads, groups, _headDim);
            var attended = nn.functional.scaled_dot_product_attention(grouped, keys, values, attn_mask: mask);
            hidden = hidden.add(projections.O.forward(attended.reshape(rows, 1, _heads * _headDim)), Scalars.One);
            hidden = hidden.add(layer.Mlp.forward(layer.PostAttentionLayerNorm.forward(hidden)), Scalars.One);
        }
        var logits = _model.Logits(_model.Model.Norm.forward(hidden)).view(rows, -1).to(ScalarType.Float32);
        return logits.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public Tensor Step(long[] tokens, long[] positions, int rows, int attend)
    {
        using var scope = NewDisposeScope();
        return Step(tensor(tokens, device: Device), tensor(positions, device: Device), rows, attend).MoveToOuterDisposeScope();
    }

    private static (LinearLayer Q, LinearLayer K, LinearLayer V, LinearLayer O) Projections(LlamaDecoderLayer layer)
    {
        LinearLayer? q = null, k = null, v = null, o = null;
        foreach (var (name, projection) in layer.SelfAttention.Projections())
        {
            switch (name)
            {
                case "q_proj": q = projection; break;
                case "k_proj": k = projection; break;
                case "v_proj": v = projection; break;
                case "o_proj": o = projection; break;
            }
        }
        return (q!, k!, v!, o!);
    }

    public void Dispose()
    {
        foreach (var t in _keys.Concat(_values))
        {
            t.Dispose();
        }
        _cosTable.Dispose();
        _sinTable.Dispose();
        _slotIndex.Dispose();
        _positionRange.Dispose();
    }
}
