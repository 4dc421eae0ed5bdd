using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>
/// What <see cref="ServeScheduler"/> drives: a fixed number of slots (sequences), each with up to
/// <see cref="MaxContext"/> cached positions. <see cref="DecodeBatch"/> is the TorchSharp implementation (slab KV
/// cache), <see cref="LlamaCppBackend"/> the llama.cpp one (GGUF, one context with one sequence per slot).
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
}
