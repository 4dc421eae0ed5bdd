using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Lora;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Network;

/// <summary>Positions of one forward pass: the rotary cos/sin and the KV cache (or none for a whole-sequence pass).</summary>
public sealed record AttentionContext
{
    public required Tensor Cos { get; init; }

    public required Tensor Sin { get; init; }

    /// <summary>Positions before this pass (the cache length, or 0).</summary>
    public required long Offset { get; init; }

    public KvCache? Cache { get; init; }

    public int LayerIndex { get; init; }

    /// <summary>Packed documents: <c>[B, 1, T, T]</c> bool, true where query i may attend key j (causal, same document).</summary>
    public Tensor? Mask { get; init; }

    /// <summary>
    /// <see cref="Sin"/> with its first half negated (training passes only; null otherwise): rotate_half(x)·sin equals
    /// roll(x, D/2)·this, one op instead of four (<see cref="RotaryEmbedding.ApplyRolled"/>).
    /// </summary>
    public Tensor? SignedSin { get; init; }
}

/// <summary>
/// Several documents packed into one row: per-token positions <c>[B, T]</c> (restarting at 0 in each document) and the
/// block-diagonal causal mask <c>[B, 1, T, T]</c> (true = may attend), so no token sees another document.
/// </summary>
public sealed record PackedLayout
{
    public required Tensor Positions { get; init; }

    public required Tensor Mask { get; init; }

    /// <summary>The layout of rows whose positions carry these document numbers (equal numbers = one document, contiguous).</summary>
    public static PackedLayout Of(IReadOnlyList<int[]> documents, int length, Device device)
    {
        var positions = new long[documents.Count * length];
        var ids = new long[documents.Count * length];
        for (var b = 0; b < documents.Count; b++)
        {
            for (var t = 0; t < length; t++)
            {
                var same = t > 0 && documents[b][t] == documents[b][t - 1];
                positions[b * length + t] = same ? positions[b * length + t - 1] + 1 : 0;
                ids[b * length + t] = documents[b][t];
            }
        }
        using var scope = NewDisposeScope();
        var doc = tensor(ids, [documents.Count, length], device: device);
        var causal = ones([length, length], ScalarType.Bool, device).tril();
        var mask = doc.unsqueeze(2).eq(doc.unsqueeze(1)).logical_and(causal).unsqueeze(1);
        return new PackedLayout
        {
            Positions = tensor(positions, [documents.Count, length], device: device).MoveToOuterDisposeScope(),
            Mask = mask.MoveToOuterDisposeScope(),
        };
    }
}

/// <summary>Grouped-query self-attention with RoPE (HF LlamaAttention / Qwen2Attention semantics).</summary>
public sealed class LlamaAttention : nn.Module<Tensor, AttentionContext, Tensor>
{
    private LinearLayer q_proj;
    private LinearLayer k_proj;
    private LinearLayer v_proj;
    private LinearLayer o_proj;
    private readonly int _heads;
    private readonly int _kvHeads;
    private readonly int _headDim;
    private readonly LoraProjectionGroup _qkv = new();
    private readonly LoraProjectionGroup _o = new();

    public LlamaAttention(LlamaConfig config, ScalarType dtype, Device device)
        : base("LlamaAttention")
    {
        _heads = config.NumAttentionHeads;
        _kvHeads = config.NumKeyValueHeads;
        _headDim = config.HeadDim;
        long hidden = config.HiddenSize, q = (long)_heads * _headDim, kv = (long)_kvHeads * _headDim;
        q_proj = new DenseLinear(hidden, q, config.QkvBias, dtype, device);
        k_proj = new DenseLinear(hidden, kv, config.QkvBias, dtype, device);
        v_proj = new DenseLinear(hidden, kv, config.QkvBias, dtype, device);
        o_proj = new DenseLinear(q, hidden, config.OutputBias, dtype, device);
        RegisterComponents();
    }

    /// <summary>The projections by checkpoint name.</summary>
    public IEnumerable<(string Name, LinearLayer Layer)> Projections() =>
        [("q_proj", q_proj), ("k_proj", k_proj), ("v_proj", v_proj), ("o_proj", o_proj)];

    /// <summary>Swaps the projection named <paramref name="name"/> (e.g. for a quantized layer).</summary>
    public void ReplaceProjection(string name, LinearLayer layer)
    {
        _qkv.Dispose();   // its fused weight would otherwise keep the replaced layers' storage alive
        register_module(name, null!);
        register_module(name, layer);
        switch (name)
        {
            case "q_proj": q_proj = layer; break;
            case "k_proj": k_proj = layer; break;
            case "v_proj": v_proj = layer; break;
            case "o_proj": o_proj = layer; break;
            default: throw new ArgumentException($"no projection '{name}'", nameof(name));
        }
    }

    public override Tensor forward(Tensor input, AttentionContext context)
    {
        using var scope = NewDisposeScope();
        long batch = input.shape[0], length = input.shape[1];
        Tensor q, k, v;
        LinearLayer[] qkv = [q_proj, k_proj, v_proj];
        if (context.Cache is null && LoraProjectionGroup.Applies(qkv))
        {
            // LoRA training: q, k and v from one fused projection, RoPE on q and k in one application.
            var heads = _heads + 2 * _kvHeads;
            var fused = _qkv.Forward(qkv, input).view(batch, length, heads, _headDim).transpose(1, 2);
            var rotated = context.SignedSin is { } signedSin
                ? RotaryEmbedding.ApplyRolled(fused.narrow(1, 0, _heads + _kvHeads), context.Cos, signedSin)
                : RotaryEmbedding.Apply(fused.narrow(1, 0, _heads + _kvHeads), context.Cos, context.Sin);
            q = rotated.narrow(1, 0, _heads);
            k = rotated.narrow(1, _heads, _kvHeads);
            v = fused.narrow(1, _heads + _kvHeads, _kvHeads);
        }
        else
        {
            q = q_proj.forward(input).view(batch, length, _heads, _headDim).transpose(1, 2);
            k = k_proj.forward(input).view(batch, length, _kvHeads, _headDim).transpose(1, 2);
            v = v_proj.forward(input).view(batch, length, _kvHeads, _headDim).transpose(1, 2);
            q = RotaryEmbedding.Apply(q, context.Cos, context.Sin);
            k = RotaryEmbedding.Apply(k, context.Cos, context.Sin);
        }
        if (context.Cache is { } cache)
        {
            (k, v) = cache.Append(context.LayerIndex, k, v);
        }
        var groups = _heads / _kvHeads;
        if (groups > 1)
        {
            // repeat_kv: kv head j serves q heads j*groups .. j*groups+groups-1.
            k = k.repeat_interleave(groups, 1);
            v = v.repeat_interleave(groups, 1);
        }
        Tensor attended;
        if (context.Mask is { } packed)
        {
            attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: packed);
        }
        else if (length == 1)
        {
            attended = nn.functional.scaled_dot_product_attention(q, k, v);
        }
        else if (context.Offset == 0)
        {
            attended = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
        }
        else
        {
            // Query i (absolute position offset+i) sees keys 0..offset+i.
            var total = k.shape[2];
            var mask = ones([length, total], ScalarType.Bool, input.device).tril(context.Offset);
            attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);
        }
        var merged = attended.transpose(1, 2).reshape(batch, length, _heads * _headDim);
        LinearLayer[] o = [o_proj];
        var output = context.Cache is null && LoraProjectionGroup.Applies(o) ? _o.Forward(o, merged) : o_proj.forward(merged);
        return output.MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _qkv.Dispose();
            _o.Dispose();
        }
        base.Dispose(disposing);
    }
}
