using Lowbit.Engine.Formats;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Checkpoints;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

public sealed class GgufLoraAdapterTests
{
    [Fact]
    public void Does_write_llama_cpp_adapter_metadata_names_shapes_and_permuted_q_b()
    {
        using var dir = new TempDir();
        var config = new LlamaConfig { VocabSize = 32, HiddenSize = 8, IntermediateSize = 16, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 1, HeadDim = 4 };
        var qa = arange(Scalars.Of(16), ScalarType.Float32).reshape(2, 8);
        var qb = arange(Scalars.Of(16), ScalarType.Float32).reshape(8, 2);
        var va = ones(2, 8);
        var vb = ones(4, 2);
        using var adapter = new PeftAdapter(new LoraSettings { R = 2, Alpha = 16, TargetModules = ["q_proj", "v_proj"], UseRslora = true }, "base",
            new Dictionary<string, LoraWeights>
            {
                ["model.layers.0.self_attn.q_proj"] = new(qa, qb),
                ["model.layers.0.self_attn.v_proj"] = new(va, vb),
            });

        GgufLoraAdapter.Write(dir.File("a.gguf"), adapter, config);
        var file = GgufFile.Read(dir.File("a.gguf"));

        Assert.Equal("adapter", file.Metadata["general.type"].AsString());
        Assert.Equal("lora", file.Metadata["adapter.type"].AsString());
        Assert.Equal(16 / Math.Sqrt(2) * 2, file.Metadata["adapter.lora.alpha"].AsFloat32(), 4);   // rsLoRA: alpha/r = scaling
        Assert.Equal([8L, 2], file.Tensor("blk.0.attn_q.weight.lora_a").Dimensions);
        Assert.Equal([2L, 8], file.Tensor("blk.0.attn_q.weight.lora_b").Dimensions);
        Assert.Equal([2L, 4], file.Tensor("blk.0.attn_v.weight.lora_b").Dimensions);
        // q's B rows per head [2, d/2] -> [d/2, 2]: head 0 rows (0,1,2,3) become (0,2,1,3).
        var b = file.Dequantize("blk.0.attn_q.weight.lora_b");
        Assert.Equal([0f, 1f, 4f, 5f, 2f, 3f, 6f, 7f], b.Take(8));
        Assert.Equal(Enumerable.Range(0, 16).Select(i => (float)i), file.Dequantize("blk.0.attn_q.weight.lora_a"));
    }
}
