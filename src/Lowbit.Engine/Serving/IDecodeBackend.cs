using Lowbit.Engine.Decoding;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>
/// What <see cref="ServeScheduler"/> drives: a fixed number of slots (sequences), each with up to
/// <see cref="MaxContext"/> cached positions. <see cref="FastDecodeBackend"/> is the TorchSharp implementation the
/// server runs (fused weights, static cache, CUDA graphs), <see cref="DecodeBatch"/> the unfused module-by-module
/// reference it is tested against, <see cref="LlamaCppBackend"/> the llama.cpp one (GGUF, one context with one
/// sequence per slot).
/// </summary>
public interface IDecodeBackend : IDisposable
{
    int Slots { get; }

    int MaxContext { get; }

    /// <summary>Bytes held by the KV cache.</summary>
    long CacheBytes { get; }

    /// <summary>The position a row without a request passes to <see cref="Step"/>.</summary>
    int ScratchPosition { get; }

    /// <summary>One prompt chunk of <paramref name="slot"/> at positions <c>start..</c>; float32 logits <c>[vocab]</c> of its last position (CPU or device).</summary>
    Tensor Prefill(int slot, IReadOnlyList<int> tokens, int start);

    /// <summary>One decode token for rows <c>0..rows−1</c> (row = slot); float32 logits <c>[rows, vocab]</c>. Rows at <see cref="ScratchPosition"/> have no request.</summary>
    Tensor Step(long[] tokens, long[] positions, int rows, int attend);

    /// <summary>
    /// Clears every slot's cache and per-slot state (after the load-time warm-up; no request may be running). The
    /// default does nothing: a request entering a slot overwrites the positions it reads.
    /// </summary>
    void ClearSlots()
    {
    }

    /// <summary>
    /// True when <see cref="Prefill(IReadOnlyList{PrefillChunk})"/> runs the chunks in one forward (each with its own
    /// adapter) and honours <see cref="PrefillChunk.AllPositions"/> (prompt log-probabilities).
    /// </summary>
    bool BatchesPrefill => false;

    /// <summary>
    /// Several slots' prompt chunks; the logits of each chunk's last position (all its positions with
    /// <see cref="PrefillChunk.AllPositions"/>, where <see cref="BatchesPrefill"/>), chunk after chunk: float32, or the
    /// model's dtype when a chunk keeps all its positions (callers convert the rows they use: a 2,048-token budget's
    /// float32 copy is 4 B × vocabulary per position more, 0.24 GiB at 32,000). The default
    /// runs them one at a time and ignores <see cref="PrefillChunk.Adapter"/> (the scheduler then selects each chunk's
    /// adapter before calling <see cref="Prefill(int, IReadOnlyList{int}, int)"/> itself).
    /// </summary>
    Tensor Prefill(IReadOnlyList<PrefillChunk> chunks)
    {
        using var scope = NewDisposeScope();
        return stack(chunks.Select(c => Prefill(c.Slot, c.Tokens, c.Start)).ToArray()).MoveToOuterDisposeScope();
    }
}
