using Lowbit.Engine.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lowbit.Engine.Network;

/// <summary>The decoder stack (<c>model.*</c> in checkpoints): embeddings, layers, final norm.</summary>
public sealed class LlamaModel : nn.Module<Tensor, KvCache?, Tensor>
{
    private readonly Embedding embed_tokens;
    private readonly ModuleList<LlamaDecoderLayer> layers;
    private readonly RmsNorm norm;
    private readonly RotaryEmbedding _rotary;

    public LlamaModel(LlamaConfig config, ScalarType dtype, Device device, Device? projectionDevice = null)
        : base("LlamaModel")
    {
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize, dtype: dtype, device: device);
        layers = new ModuleList<LlamaDecoderLayer>(
            Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new LlamaDecoderLayer(config, dtype, device, projectionDevice)).ToArray());
        norm = new RmsNorm(config.HiddenSize, config.RmsNormEps, dtype, device);
        _rotary = new RotaryEmbedding(config);
        RegisterComponents();
    }

    public Embedding EmbedTokens => embed_tokens;

    public IList<LlamaDecoderLayer> Layers => layers;

    /// <summary>Recompute each layer in the backward pass instead of keeping its activations (training only).</summary>
    public bool GradientCheckpointing { get; set; }

    public RmsNorm Norm => norm;

    /// <summary>
    /// The device of each decoder layer when the layers are split over devices as a pipeline (training with
    /// <c>--shards</c>); null: every layer on the embedding's device. The hidden state moves (<c>.to(device)</c>, which
    /// autograd carries back) where the next layer lives, and to the final norm's device after the last.
    /// </summary>
    public IReadOnlyList<Device>? LayerDevices { get; set; }

    /// <summary>Hidden states after the final norm, <c>[B, T, hidden]</c>, for token ids <c>[B, T]</c>.</summary>
    public override Tensor forward(Tensor inputIds, KvCache? cache) => Forward(inputIds, cache, null);

    /// <summary>As <c>forward</c>; with <paramref name="layout"/> (no cache) each packed document is attended and positioned on its own.</summary>
    public Tensor Forward(Tensor inputIds, KvCache? cache, PackedLayout? layout)
    {
        using var scope = NewDisposeScope();
        var hidden = embed_tokens.forward(inputIds);
        var offset = cache?.Length ?? 0;
        var length = inputIds.shape[1];
        if (layout is not null && cache is not null)
        {
            throw new ArgumentException("a packed layout is for whole-sequence (training) passes, not with a KV cache", nameof(layout));
        }
        var (cos, sin) = layout is null ? _rotary.CosSin(offset, length, hidden.dtype, hidden.device) : _rotary.CosSin(layout.Positions, hidden.dtype);
        var signedSin = training && cache is null ? RotaryEmbedding.SignedSin(sin) : null;
        var mask = layout?.Mask;
        for (var i = 0; i < layers.Count; i++)
        {
            if (LayerDevices is { } devices && !SameDevice(devices[i], hidden.device))
            {
                // A stage boundary: the hidden state and the per-position tensors go where the next stage lives.
                var to = devices[i];
                (hidden, cos, sin) = (hidden.to(to), cos.to(to), sin.to(to));
                (mask, signedSin) = (mask?.to(to), signedSin?.to(to));
            }
            var context = new AttentionContext { Cos = cos, Sin = sin, Offset = offset, Cache = cache, LayerIndex = i, Mask = mask, SignedSin = signedSin };
            hidden = GradientCheckpointing && is_grad_enabled() && cache is null
                ? Training.GradientCheckpoint.Apply(layers[i], hidden, context, this)
                : layers[i].forward(hidden, context);
        }
        cache?.Advance(length);
        if (LayerDevices is not null && norm.parameters().FirstOrDefault()?.device is { } normDevice && !SameDevice(normDevice, hidden.device))
        {
            hidden = hidden.to(normDevice);
        }
        return norm.forward(hidden).MoveToOuterDisposeScope();
    }

    private static bool SameDevice(Device a, Device b) => a.type == b.type && (a.type == DeviceType.CPU || Math.Max(0, (int)a.index) == Math.Max(0, (int)b.index));
}
