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
    // scope) and the kept rotary aliases, per owning model: released by the training loop once backward() has
    // returned, so device memory does not wait for the garbage collector (and one model's release never touches
    // another's tensors when several train in one process).
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<object, System.Collections.Concurrent.ConcurrentQueue<Tensor>> Pending = new();

    public override string Name => "LowbitGradientCheckpoint";

    /// <summary>Disposes what the last backward pass of <paramref name="owner"/>'s layers handed over (call after <c>loss.backward()</c>).</summary>
    public static void Release(object owner)
    {
        if (!Pending.TryGetValue(owner, out var queue))
        {
            return;
        }
        while (queue.TryDequeue(out var t))
        {
            t.Dispose();
        }
    }

    /// <summary>Keeps <paramref name="tensor"/> (handed to autograd by a backward) until <see cref="Release"/> of <paramref name="owner"/>.</summary>
    public static void Hold(object owner, Tensor tensor) => Pending.GetValue(owner, _ => new()).Enqueue(tensor);

    // Gradients this thread's backward calls returned to autograd. libtorch copies each returned tensor (its own
    // reference) as soon as the C# backward returns, so the next backward call on the same thread may drop ours:
    // without this, every layer's input gradient (16 MiB per layer at 7B, seq 2048; a QLoRA projection's too) stayed
    // allocated until the whole backward pass ended.
    [ThreadStatic]
    private static List<Tensor>? _returned;

    /// <summary>
    /// Marks <paramref name="tensor"/> as returned to autograd by the backward now running on this thread: disposed by
    /// the next backward call on this thread (<see cref="ReleaseReturned"/>) or at <see cref="Release"/>, whichever is first.
    /// </summary>
    public static void Returned(object owner, Tensor tensor)
    {
        Hold(owner, tensor);
        (_returned ??= []).Add(tensor);
    }

    /// <summary>As <see cref="Returned(object, Tensor)"/> without an owner: disposed by the next backward call on this thread.</summary>
    public static void Returned(Tensor tensor) => (_returned ??= []).Add(tensor);

    /// <summary>Disposes what earlier backward calls on this thread returned (they have returned, so autograd holds its own references).</summary>
    public static void ReleaseReturned()
    {
        if (_returned is not { Count: > 0 } returned)
        {
            return;
        }
        foreach (var t in returned)
        {
            t.Dispose();
        }
        returned.Clear();
    }

    /// <summary>Runs <paramref name="layer"/> checkpointed; <paramref name="owner"/> (the model) keys what <see cref="Release"/> frees.</summary>
    public static Tensor Apply(LlamaDecoderLayer layer, Tensor hidden, AttentionContext context, object owner)
    {
        var pending = Pending.GetValue(owner, _ => new());
        // cos/sin live in the model forward's dispose scope; the backward runs after it, so keep aliases.
        var kept = context with
        {
            Cos = context.Cos.alias().DetachFromDisposeScope(),
            Sin = context.Sin.alias().DetachFromDisposeScope(),
            Mask = context.Mask?.alias().DetachFromDisposeScope(),
            SignedSin = context.SignedSin?.alias().DetachFromDisposeScope(),
        };
        pending.Enqueue(kept.Cos);
        pending.Enqueue(kept.Sin);
        if (kept.Mask is { } mask)
        {
            pending.Enqueue(mask);
        }
        if (kept.SignedSin is { } signedSin)
        {
            pending.Enqueue(signedSin);
        }
        var trainable = layer.parameters().Where(p => p.requires_grad).Cast<Tensor>().ToList();
        var vars = new object[4 + trainable.Count];
        vars[0] = hidden;
        vars[1] = layer;
        vars[2] = kept;
        vars[3] = pending;
        for (var i = 0; i < trainable.Count; i++)
        {
            vars[4 + i] = trainable[i];
        }
        // TorchSharp's Function.apply keeps an empty_like of the output per call (its materialise-grads cache) in the
        // current scope: a layer-sized allocation that would otherwise live until the whole model forward ends.
        using var scope = NewDisposeScope();
        return apply(vars).MoveToOuterDisposeScope();
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var hidden = (Tensor)vars[0];
        var layer = (LlamaDecoderLayer)vars[1];
        var context = (AttentionContext)vars[2];
        ctx.save_for_backward([hidden]);
        ctx.save_data("layer", layer);
        ctx.save_data("context", context);
        ctx.save_data("pending", vars[3]);
        ctx.save_data("seed", LoraLinear.DropoutSeed ?? long.MinValue);
        ctx.save_data("count", vars.Length - 4);
        return layer.forward(hidden, context);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        ReleaseReturned();
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
        var pending = (System.Collections.Concurrent.ConcurrentQueue<Tensor>)ctx.get_data("pending");
        var result = new List<Tensor> { grads[0].MoveToOuterDisposeScope(), null!, null!, null! };
        result.AddRange(grads.Skip(1).Select(g => g?.MoveToOuterDisposeScope()!));
        foreach (var g in result.Where(g => g is not null))
        {
            pending.Enqueue(g);
            (_returned ??= []).Add(g);
        }
        // TorchSharp wraps the incoming gradient in a new tensor on the thread that runs this backward. On CUDA that
        // is the autograd engine's device thread, with no dispose scope: undisposed, each layer's [B, T, hidden]
        // gradient stayed alive until a GC (0.5 GiB per step at 7B, seq 2048). It is no longer needed here.
        grad_output.Dispose();
        return result;
    }
}
