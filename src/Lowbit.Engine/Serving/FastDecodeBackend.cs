using Lowbit.Engine.Decoding;
using Lowbit.Engine.Network;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>
/// The server's TorchSharp backend: <see cref="FastDecoder"/>'s fused weights, static KV cache
/// <c>[slots, max-context + 1, kv_heads, head_dim]</c> per layer (position <c>max-context</c> is the scratch row of
/// rows without a request) and one CUDA graph per (batch bucket, length bucket) where the native library is loaded;
/// on the CPU or without the library the same step runs eagerly. Several requests' prompt chunks prefill in one
/// forward; LoRA adapters apply per row on top of the fused projections (<see cref="LoraSet"/>'s stacks).
/// </summary>
public sealed class FastDecodeBackend : IDecodeBackend
{
    private readonly FastDecoder _decoder;
    private int[] _adapters = [];

    public FastDecodeBackend(LlamaForCausalLM model, int slots, int maxContext, Device device, LoraSet? adapters, FastDecoderOptions? options = null)
    {
        Slots = slots;
        MaxContext = maxContext;
        _decoder = FastDecoder.Create(model, (options ?? new FastDecoderOptions { MaxBatch = slots, MaxLength = maxContext + 1 }) with
        {
            MaxBatch = slots,
            MaxLength = maxContext + 1,
        }, device);
        _decoder.Adapters = adapters;
    }

    public int Slots { get; }

    public int MaxContext { get; }

    public long CacheBytes => _decoder.CacheBytes;

    public int ScratchPosition => MaxContext;

    public bool BatchesPrefill => true;

    /// <summary>The fast decoder behind the backend (graph and kernel state for logs and benchmarks).</summary>
    public FastDecoder Decoder => _decoder;

    /// <summary>One line naming the path: <c>fast decode (CUDA graphs, native kernels)</c> or <c>fast decode (eager)</c>.</summary>
    public string Describe() => (_decoder.UsesGraphs ? $"fast decode (CUDA graphs per batch bucket{(_decoder.UsesNativeKernels ? ", native kernels" : "")}{(_decoder.UsesNativeAttention ? ", native decode attention" + (_decoder.NativeAttentionMaxBatch == int.MaxValue ? "" : $" up to batch {_decoder.NativeAttentionMaxBatch}") : "")}{(_decoder.UsesDecodeFusion ? ", fused decode step" : "")})"
        : _decoder.UsesNativeKernels ? "fast decode (native kernels, no graphs)" : "fast decode (eager, no native library)")
        + (_decoder.Shards.Count > 1 ? $", {_decoder.Shards.Count} pipeline stages (one graph set per stage, the hidden state copied between stages outside the graphs)" : "");

    /// <summary>Graphs captured so far and the seconds their capture took, as one log line.</summary>
    public string GraphSummary() => $"{_decoder.CapturedGraphs} CUDA graphs captured in {_decoder.CaptureSeconds:F2} s";

    /// <summary>Captures every bucket's graph before the first request (<see cref="FastDecoder.CaptureServeGraphs"/>); 0 without graphs.</summary>
    public int CaptureGraphs() => _decoder.CaptureServeGraphs();

    /// <summary>The adapter index of every row of the next <see cref="Step(long[], long[], int, int)"/> (the scheduler's BeforeStep).</summary>
    public void SelectAdapters(int[] rows) => _adapters = rows;

    public Tensor Prefill(int slot, IReadOnlyList<int> tokens, int start) =>
        Prefill([new PrefillChunk { Slot = slot, Tokens = tokens, Start = start }]).view(-1);

    public Tensor Prefill(IReadOnlyList<PrefillChunk> chunks)
    {
        foreach (var chunk in chunks.Where(c => c.Start + c.Tokens.Count > MaxContext))
        {
            throw new InvalidOperationException($"slot {chunk.Slot}: {chunk.Start} + {chunk.Tokens.Count} positions exceed the context of {MaxContext}");
        }
        using var scope = NewDisposeScope();
        var logits = _decoder.PrefillLogits(chunks);
        // Every position's logits stay in the model's dtype (the prompt log-probabilities convert 256 rows at a time):
        // a float32 copy of a 2,048-token budget held 0.24 GiB more at the serve warm-up's peak (H100, docs/planner.md).
        return (chunks.Any(c => c.AllPositions) ? logits : logits.to(ScalarType.Float32)).MoveToOuterDisposeScope();
    }

    public Tensor Step(long[] tokens, long[] positions, int rows, int attend)
    {
        var adapters = new int[rows];
        _adapters.AsSpan(0, Math.Min(rows, _adapters.Length)).CopyTo(adapters);
        var logits = _decoder.StepLogits(tokens.AsSpan(0, rows).ToArray(), positions.AsSpan(0, rows).ToArray(), adapters, attend);
        // A copy: the view is the decoder's buffer, which the next step overwrites.
        return logits.to(ScalarType.Float32, copy: true);
    }

    public void ClearSlots()
    {
        _adapters = [];
        _decoder.ClearSlots();
    }

    public void Dispose() => _decoder.Dispose();
}
