using Lowbit.Engine.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Network;

/// <summary>
/// A Llama-family causal LM (Llama 2/3, Mistral, Qwen2): <c>model</c> plus <c>lm_head</c> (absent when the
/// embeddings are tied; the logits then use <c>model.embed_tokens.weight</c>). Parameter names equal the
/// checkpoint's tensor names.
/// </summary>
public sealed class LlamaForCausalLM : nn.Module<Tensor, KvCache?, Tensor>
{
    private readonly LlamaModel model;
    private LinearLayer? lm_head;

    /// <param name="projectionDevice">
    /// Where the projections (and <c>lm_head</c>) are created, default <paramref name="device"/>. A quantized loader passes
    /// <see cref="MetaDevice"/> so no dense projection is ever allocated, then replaces each one.
    /// </param>
    public LlamaForCausalLM(LlamaConfig config, ScalarType dtype, Device device, Device? projectionDevice = null)
        : base("LlamaForCausalLM")
    {
        Config = config;
        Dtype = dtype;
        model = new LlamaModel(config, dtype, device, projectionDevice);
        lm_head = config.TieWordEmbeddings ? null : new DenseLinear(config.HiddenSize, config.VocabSize, false, dtype, projectionDevice ?? device);
        RegisterComponents();
    }

    /// <summary>PyTorch's <c>meta</c> device: tensors with a shape and no storage.</summary>
    public static Device MetaDevice { get; } = new(DeviceType.META);

    public LlamaConfig Config { get; }

    public ScalarType Dtype { get; }

    public LlamaModel Model => model;

    public LinearLayer? LmHead => lm_head;

    /// <summary>Logits <c>[B, T, vocab]</c> (model dtype) for token ids <c>[B, T]</c>; with a cache, continues from its length.</summary>
    public override Tensor forward(Tensor inputIds, KvCache? cache) => Logits(model.forward(inputIds, cache));

    /// <summary>Logits of a whole-sequence pass over packed documents (each attends and is positioned on its own).</summary>
    public Tensor Forward(Tensor inputIds, PackedLayout? layout) => Logits(model.Forward(inputIds, null, layout));

    /// <summary>Final hidden states <c>[B, T, hidden]</c> of a whole-sequence pass over packed documents (no logits).</summary>
    public Tensor Hidden(Tensor inputIds, PackedLayout? layout) => model.Forward(inputIds, null, layout);

    /// <summary>Vocabulary size of the output projection.</summary>
    public long VocabSize => lm_head?.OutFeatures ?? model.EmbedTokens.weight!.shape[0];

    /// <summary>Whether any weight of the output projection is trained (then the loss needs its full logits and their gradient).</summary>
    public bool HeadTrainable => lm_head is null ? model.EmbedTokens.weight!.requires_grad : lm_head.parameters().Any(p => p.requires_grad);

    /// <summary>Output projection rows <c>[start, start + length)</c> (a vocabulary chunk), dense, in <paramref name="dtype"/>.</summary>
    public Tensor HeadRows(long start, long length, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var rows = lm_head is null ? model.EmbedTokens.weight!.narrow(0, start, length).to(dtype) : lm_head.DenseRows(start, length, dtype);
        return rows.MoveToOuterDisposeScope();
    }

    /// <summary>The output projection's bias for rows <c>[start, start + length)</c>, or null.</summary>
    public Tensor? HeadBiasRows(long start, long length, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return lm_head?.DenseBias(dtype)?.narrow(0, start, length).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Where the logits are computed: the embedding's device when tied, else the final norm's (a pipeline split keeps
    /// the norm and <c>lm_head</c> on the last shard).
    /// </summary>
    public Device OutputDevice => lm_head is null ? model.EmbedTokens.weight!.device : model.Norm.parameters().First().device;

    /// <summary>Projects hidden states to the vocabulary.</summary>
    public Tensor Logits(Tensor hidden) =>
        lm_head is null ? nn.functional.linear(hidden, model.EmbedTokens.weight!) : lm_head.forward(hidden);

    /// <summary>
    /// Every replaceable projection with its checkpoint prefix (<c>model.layers.3.self_attn.q_proj</c>, <c>lm_head</c>);
    /// <paramref name="replace"/> returns a new layer to swap in, or null to keep the current one.
    /// </summary>
    public void ReplaceLinears(Func<string, LinearLayer, LinearLayer?> replace, bool includeLmHead = false)
    {
        for (var i = 0; i < model.Layers.Count; i++)
        {
            var layer = model.Layers[i];
            foreach (var (name, current) in layer.Projections().ToList())
            {
                if (replace($"model.layers.{i}.{name}", current) is { } replacement && !ReferenceEquals(replacement, current))
                {
                    layer.ReplaceProjection(name, replacement);
                }
            }
        }
        if (includeLmHead && lm_head is not null && replace("lm_head", lm_head) is { } head && !ReferenceEquals(head, lm_head))
        {
            register_module("lm_head", null!);
            register_module("lm_head", head);
            lm_head = head;
        }
    }
}
