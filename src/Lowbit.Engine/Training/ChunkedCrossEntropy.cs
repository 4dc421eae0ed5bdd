using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Training;

/// <summary>
/// The summed cross-entropy of a frozen output projection without the full logits: the vocabulary is walked in chunks
/// of rows of <c>lm_head</c> (<c>[chunk, hidden]</c>; a quantized head dequantizes only the chunk), each chunk's logits
/// <c>h·W_cᵀ</c> are computed in the model dtype and upcast to float32 exactly as the full path does
/// (<c>cross_entropy(logits.float())</c>), and an online log-sum-exp (running max and rescaled sum) gives each row's
/// normaliser. Only the normalisers (<c>[N]</c> float32) are kept for the backward, which recomputes each chunk's logits
/// and accumulates <c>grad_h = Σ_c ((softmax_c − onehot_c) · g · valid)·W_c</c> in float32. Rows whose target is
/// <see cref="IgnoreIndex"/> count neither in the loss nor in the gradient, as with <c>ignore_index</c>.
/// At 7B, sequence 2048 and a 32,000 vocabulary this replaces the bf16 logits (125 MiB), their float32 copy (250 MiB),
/// log_softmax's saved output (250 MiB) and the two float32 gradients of the backward (2 × 250 MiB) by per-chunk
/// transients of about 3 × 4 bytes × rows × chunk (~100 MiB at a 2,048-wide chunk) and 8 KiB of normalisers.
/// Only for a frozen head (LoRA, QLoRA): there is no gradient for <c>W</c>.
/// </summary>
public sealed class ChunkedCrossEntropy : autograd.SingleTensorFunction<ChunkedCrossEntropy>
{
    public const long IgnoreIndex = -100;

    /// <summary>Float32 logits per chunk: at most this many elements (32 MiB), at least 128 vocabulary rows per chunk.</summary>
    public const long ChunkElements = 8L << 20;

    public override string Name => "LowbitChunkedCrossEntropy";

    /// <summary>
    /// Σ over rows with a counted target of <c>logsumexp(h·Wᵀ) − (h·Wᵀ)[target]</c>, a float32 scalar, differentiable in
    /// <paramref name="hidden"/> (<c>[N, hidden]</c>). <paramref name="chunk"/>: vocabulary rows per chunk (default from
    /// <see cref="ChunkElements"/>). <paramref name="owner"/> keys the release of what the backward hands to autograd
    /// (<see cref="GradientCheckpoint.Release"/>).
    /// </summary>
    public static Tensor Sum(LlamaForCausalLM model, Tensor hidden, Tensor target, object owner, long? chunk = null)
    {
        var vocab = model.VocabSize;
        var rows = Math.Max(1, hidden.shape[0]);
        var size = Math.Clamp(chunk ?? ChunkElements / rows, Math.Min(128, vocab), vocab);
        using var scope = NewDisposeScope();
        var head = new Head(model, vocab, size, owner);
        return apply(hidden, target, head).MoveToOuterDisposeScope();
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var hidden = (Tensor)vars[0];
        var target = (Tensor)vars[1];
        var head = (Head)vars[2];
        // The normalisers stay in the caller's scope until apply has saved them for the backward.
        var (loss, lse) = Forward(hidden, target, head);
        ctx.save_for_backward([hidden, target, lse]);
        ctx.save_data("head", head);
        return loss;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        GradientCheckpoint.ReleaseReturned();
        Tensor grad;
        using (var scope = NewDisposeScope())
        {
            var saved = ctx.get_saved_variables();
            var (hidden, target, lse) = (saved[0], saved[1], saved[2]);
            var head = (Head)ctx.get_data("head");
            var n = hidden.shape[0];
            var valid = target.ne(Scalars.Of(IgnoreIndex));
            var safe = target.masked_fill(valid.logical_not(), Scalars.Of(0));
            var weight = valid.to(ScalarType.Float32).mul(grad_output.to(ScalarType.Float32)).unsqueeze(1);
            var accumulated = zeros([n, hidden.shape[1]], ScalarType.Float32, hidden.device);
            for (long start = 0; start < head.Vocab; start += head.Chunk)
            {
                using var chunkScope = NewDisposeScope();
                var length = Math.Min(head.Chunk, head.Vocab - start);
                var rows = head.Model.HeadRows(start, length, hidden.dtype);
                var probabilities = Logits(hidden, head.Model, rows, start, length).sub_(lse.unsqueeze(1)).exp_();
                var (index, inChunk) = Local(safe, valid, start, length);
                probabilities.scatter_add_(1, index, inChunk.to(ScalarType.Float32).neg().unsqueeze(1));
                probabilities.mul_(weight);
                accumulated.add_(probabilities.to(hidden.dtype).matmul(rows), Scalars.One);
            }
            grad = accumulated.to(hidden.dtype).MoveToOuterDisposeScope();
        }
        // On CUDA this runs on the autograd device thread outside any dispose scope (see GradientCheckpoint.backward).
        grad_output.Dispose();
        GradientCheckpoint.Returned(((Head)ctx.get_data("head")).Owner, grad);
        return [grad, null!, null!];
    }

    private static (Tensor Loss, Tensor Lse) Forward(Tensor hidden, Tensor target, Head head)
    {
        using var scope = NewDisposeScope();
        var n = hidden.shape[0];
        var valid = target.ne(Scalars.Of(IgnoreIndex));
        var safe = target.masked_fill(valid.logical_not(), Scalars.Of(0));
        var max = full([n], Scalars.Of(double.NegativeInfinity), ScalarType.Float32, hidden.device);
        var sum = zeros([n], ScalarType.Float32, hidden.device);
        var picked = zeros([n], ScalarType.Float32, hidden.device);
        for (long start = 0; start < head.Vocab; start += head.Chunk)
        {
            using var chunkScope = NewDisposeScope();
            var length = Math.Min(head.Chunk, head.Vocab - start);
            var rows = head.Model.HeadRows(start, length, hidden.dtype);
            var logits = Logits(hidden, head.Model, rows, start, length);
            var (index, inChunk) = Local(safe, valid, start, length);
            picked.copy_(where(inChunk, logits.gather(1, index).squeeze(1), picked));
            var newMax = maximum(max, logits.amax([1]));
            sum.mul_(max.sub(newMax).exp_()).add_(logits.sub_(newMax.unsqueeze(1)).exp_().sum([1]), Scalars.One);
            max.copy_(newMax);
        }
        var lse = max.add(sum.log(), Scalars.One);
        var loss = lse.sub(picked).masked_fill(valid.logical_not(), Scalars.Of(0)).sum();
        return (loss.MoveToOuterDisposeScope(), lse.MoveToOuterDisposeScope());
    }

    /// <summary>Float32 logits <c>[N, length]</c> of vocabulary rows <paramref name="start"/>.. (matmul in the model dtype, then upcast).</summary>
    private static Tensor Logits(Tensor hidden, LlamaForCausalLM model, Tensor rows, long start, long length)
    {
        using var scope = NewDisposeScope();
        var bias = model.HeadBiasRows(start, length, hidden.dtype);
        return nn.functional.linear(hidden, rows, bias).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>Each row's target column inside the chunk (clamped; <c>[N, 1]</c>) and whether it falls in the chunk and counts.</summary>
    private static (Tensor Index, Tensor InChunk) Local(Tensor safe, Tensor valid, long start, long length)
    {
        using var scope = NewDisposeScope();
        var local = safe.sub(Scalars.Of(start));
        var inChunk = local.ge(Scalars.Of(0)).logical_and(local.lt(Scalars.Of(length))).logical_and(valid);
        var index = local.clamp(Scalars.Of(0), Scalars.Of(length - 1)).unsqueeze(1);
        return (index.MoveToOuterDisposeScope(), inChunk.MoveToOuterDisposeScope());
    }

    /// <summary>The frozen head a loss was computed with (kept by the autograd node until its backward).</summary>
    private sealed record Head(LlamaForCausalLM Model, long Vocab, long Chunk, object Owner);
}
