using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Training;

/// <summary>
/// Gradient checkpointing of one decoder layer (torch.utils.checkpoint's idea): the forward runs without keeping
/// activations; the backward re-runs the layer with autograd on (same dropout seed) and back-propagates through it.
/// The layer's trainable parameters are inputs of the function, so their gradients flow as usual.
/// </summary>
public sealed class GradientCheckpoint : autograd.SingleTensorFunction<GradientCheckpoint>
{
    // Tensors handed to autograd from the backward (which may run on an autograd worker thread, outside any dispose
    // scope) and the kept rotary aliases: released by the training loop once backward() has returned, so device
    // memory does not wait for the garbage collector.
    private static readonly System.Collections.Concurrent.ConcurrentQueue<Tensor> Pending = new();

    public override string Name => "LowbitGradientCheckpoint";

    /// <summary>Disposes what the last backward pass handed over (call after <c>loss.backward()</c>).</summary>
    public static void Release()
    {
        while (Pending.TryDequeue(out var t))
        {
            t.Dispose();
        }
    }

    public static Tensor Apply(LlamaDecoderLayer layer, Tensor hidden, AttentionContext context)
    {
        // cos/sin live in the model forward's dispose scope; the backward runs after it, so keep aliases.
        var kept = context with { Cos = context.Cos.alias().DetachFromDisposeScope(), Sin = context.Sin.alias().DetachFromDisposeScope() };
        Pending.Enqueue(kept.Cos);
        Pending.Enqueue(kept.Sin);
        var trainable = layer.parameters().Where(p => p.requires_grad).Cast<Tensor>().ToList();
        var vars = new object[3 + trainable.Count];
        vars[0] = hidden;
        vars[1] = layer;
        vars[2] = kept;
        for (var i = 0; i < trainable.Count; i++)
        {
            vars[3 + i] = trainable[i];
        }
        return apply(vars);
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var hidden = (Tensor)vars[0];
        var layer = (LlamaDecoderLayer)vars[1];
        var context = (AttentionContext)vars[2];
        ctx.save_for_backward([hidden]);
        ctx.save_data("layer", layer);
        ctx.save_data("context", context);
        ctx.save_data("seed", LoraLinear.DropoutSeed ?? long.MinValue);
        ctx.save_data("count", vars.Length - 3);
        return layer.forward(hidden, context);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        using var scope = NewDisposeScope();
        var hidden = ctx.get_saved_variables()[0];
        var layer = (LlamaDecoderLayer)ctx.get_data("layer");
        var context = (AttentionContext)ctx.get_data("context");
        var seed = (long)ctx.get_data("seed");
        var trainable = layer.parameters().Where(p => p.requires_grad).Cast<Tensor>().ToList();
        var previous = LoraLinear.DropoutSeed;
        LoraLinear.DropoutSeed = seed == long.MinValue ? null : seed;
        IList<Tensor> grads;
        Tensor x;
        try
        {
            using var enable = enable_grad();
            x = hidden.detach().requires_grad_(true);
            var output = layer.forward(x, context);
            grads = autograd.grad([output], [x, .. trainable], [grad_output], allow_unused: true);
        }
        finally
        {
            LoraLinear.DropoutSeed = previous;
        }
        var result = new List<Tensor> { grads[0].MoveToOuterDisposeScope(), null!, null! };
        result.AddRange(grads.Skip(1).Select(g => g?.MoveToOuterDisposeScope()!));
        foreach (var g in result.Where(g => g is not null))
        {
            Pending.Enqueue(g);
        }
        return result;
    }
}
