using static TorchSharp.torch;

namespace Lowbit.Engine.Decoding;

/// <summary>The fused projections of a <see cref="FastDecoder"/> layer, in the order they run.</summary>
public enum FusedGroup
{
    Qkv,
    O,
    GateUp,
    Down,
}

/// <summary>
/// The LoRA factors of every loaded adapter for one fused projection, stacked so one batch can mix adapters
/// (punica's layout, done with two dense GEMMs): <c>A [adapters·R, in]</c> holds adapter <c>a</c>'s factors of the
/// group's modules at rows <c>(a−1)·R …</c> (the modules' ranks one after another, padded with zeros),
/// <c>B [out, adapters·R]</c> is block-diagonal per module and carries the scaling. A row's delta is
/// <c>((x·Aᵀ) ⊙ mask)·Bᵀ</c> with the row's one-hot adapter mask repeated R times; a row without an adapter has an
/// all-zero mask and so a zero delta.
/// </summary>
public sealed record FusedAdapter
{
    public required Tensor A { get; init; }

    public required Tensor B { get; init; }

    /// <summary>R: the summed (padded) rank of the group's modules.</summary>
    public required int Rank { get; init; }
}

/// <summary>The LoRA adapters a <see cref="FastDecoder"/> applies per row (the server's <c>LoraSet</c>).</summary>
public interface IFusedAdapters
{
    /// <summary>Changes whenever the stacks are rebuilt (a load or unload): graphs that captured the old stacks are dropped.</summary>
    int Version { get; }

    /// <summary>Loaded adapters; a row's adapter index is 1..Count, 0 for none.</summary>
    int Count { get; }

    /// <summary>The stacked factors of <paramref name="group"/> in layer <paramref name="layer"/>, or null when no adapter touches it.</summary>
    FusedAdapter? Fused(int layer, FusedGroup group);
}

/// <summary>One prompt chunk of a slot for a batched prefill: <see cref="Tokens"/> at positions <c>Start..</c>.</summary>
public sealed record PrefillChunk
{
    public required int Slot { get; init; }

    public required IReadOnlyList<int> Tokens { get; init; }

    /// <summary>The position of the chunk's first token (the slot's earlier positions are cached).</summary>
    public required int Start { get; init; }

    /// <summary>The adapter index (1-based) of the request, 0 for the base model.</summary>
    public int Adapter { get; init; }

    /// <summary>Return the logits of every position of the chunk, not only the last (prompt log-probabilities).</summary>
    public bool AllPositions { get; init; }
}
