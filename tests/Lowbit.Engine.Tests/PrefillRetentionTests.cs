using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Network;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests;

/// <summary>
/// A prefill forward frees each layer's intermediates when the layer ends: the live tensor count seen at every layer's
/// first projection stays flat instead of growing by ~60 per layer (what held ~10.5 GiB at a 2,048-token prefill of a
/// 7B model on the GPU, session 10). Counts tensors, times nothing.
/// </summary>
public sealed class PrefillRetentionTests
{
    /// <summary>Records the thread's live tensor count each time a layer's q/k/v projection asks for its adapter.</summary>
    private sealed class LiveCounter : IFusedAdapters
    {
        public List<long> LiveAtLayer { get; } = [];

        public int Version => 1;

        public int Count => 1;

        public FusedAdapter? Fused(int layer, FusedGroup group)
        {
            if (group == FusedGroup.Qkv)
            {
                LiveAtLayer.Add(TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
            }
            return null;
        }
    }

    [Fact]
    public void Does_not_hold_every_layers_activations_during_a_prefill()
    {
        var config = new LlamaConfig
        {
            VocabSize = 96, HiddenSize = 64, IntermediateSize = 160, NumHiddenLayers = 8, NumAttentionHeads = 4,
            NumKeyValueHeads = 2, HeadDim = 16, MaxPositionEmbeddings = 256, RmsNormEps = 1e-5, BosTokenId = 1, EosTokenIds = [2],
        };
        using var model = new LlamaForCausalLM(config, ScalarType.Float32, CPU);
        ModelIo.InitializeRandom(model, 1, std: 0.1);
        using var decoder = FastDecoder.Create(model, new FastDecoderOptions { MaxBatch = 1, MaxLength = 128 }, CPU);
        var counter = new LiveCounter();
        decoder.Adapters = counter;
        var tokens = Enumerable.Range(0, 48).Select(i => 3 + (i % 90)).ToArray();
        using (NewDisposeScope())
        {
            var logits = decoder.PrefillLogits([new PrefillChunk { Slot = 0, Tokens = tokens, Start = 0, Adapter = 1 }]);
            Assert.Equal(96, logits.shape[^1]);
            Assert.False(logits.isnan().any().item<bool>());
        }

        Assert.Equal(config.NumHiddenLayers, counter.LiveAtLayer.Count);
        // From the second layer on, one layer's pass leaves nothing behind but the tensors it hands on.
        var growth = counter.LiveAtLayer[^1] - counter.LiveAtLayer[1];
        Assert.True(growth <= 2, $"live tensors grew by {growth} over {config.NumHiddenLayers - 2} layers: {string.Join(", ", counter.LiveAtLayer)}");
    }
}
