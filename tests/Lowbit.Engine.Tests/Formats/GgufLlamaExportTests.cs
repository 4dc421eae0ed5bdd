using Lowbit.Engine.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Formats;

public sealed class GgufLlamaExportTests : IDisposable
{
    private const string Config = """
        {"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":6,"hidden_size":64,"intermediate_size":256,
         "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,"rope_theta":500000.0,
         "max_position_embeddings":128,"bos_token_id":1,"eos_token_id":[2,3],"tie_word_embeddings":false}
        """;

    private const string Tokenizer = """
        {"version":"1.0","added_tokens":[{"id":1,"content":"<s>","special":true},{"id":2,"content":"</s>","special":true}],
         "pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0,"b":3,"ab":4,"Ġa":5},"merges":["a b",["Ġ","a"]]}}
        """;

    private readonly string _dir = Directory.CreateTempSubdirectory("gguf-export").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static Dictionary<string, Tensor> TinyModel()
    {
        var g = new torch.Generator(3);
        return new Dictionary<string, Tensor>
        {
            ["model.embed_tokens.weight"] = torch.randn(6, 64, generator: g),
            ["model.layers.0.input_layernorm.weight"] = torch.rand(64, generator: g),
            ["model.layers.0.self_attn.q_proj.weight"] = torch.randn(64, 64, generator: g),
            ["model.layers.0.self_attn.k_proj.weight"] = torch.randn(32, 64, generator: g),
            ["model.layers.0.self_attn.v_proj.weight"] = torch.randn(32, 64, generator: g),
            ["model.layers.0.self_attn.o_proj.weight"] = torch.randn(64, 64, generator: g),
            ["model.layers.0.post_attention_layernorm.weight"] = torch.rand(64, generator: g),
            ["model.layers.0.mlp.gate_proj.weight"] = torch.randn(256, 64, generator: g),
            ["model.layers.0.mlp.up_proj.weight"] = torch.randn(256, 64, generator: g),
            ["model.layers.0.mlp.down_proj.weight"] = torch.randn(64, 256, generator: g),
            ["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.rand(8, generator: g),
            ["model.norm.weight"] = torch.rand(64, generator: g),
            ["lm_head.weight"] = torch.randn(6, 64, generator: g),
        };
    }

    [Fact]
    public void Does_write_llama_cpp_names_metadata_and_permuted_q_k_when_exporting_q8_0()
    {
        var model = TinyModel();
        var path = Path.Combine(_dir, "model.gguf");
        var report = GgufLlamaExport.Write(path, Config, Tokenizer, null, model.Select(kv => new KeyValuePair<string, Func<Tensor>>(kv.Key, () => kv.Value.alias())), GgmlType.Q8_0);
        var file = GgufFile.Read(path);

        Assert.Equal(12, report.Tensors);
        Assert.Equal(["token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight",
            "blk.0.attn_output.weight", "blk.0.ffn_norm.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight",
            "output_norm.weight", "output.weight"], file.Tensors.Select(t => t.Name));
        Assert.Equal("llama", file.Metadata["general.architecture"].AsString());
        Assert.Equal(2u, file.Metadata["llama.attention.head_count_kv"].AsUInt32());
        Assert.Equal(16u, file.Metadata["llama.rope.dimension_count"].AsUInt32());
        Assert.Equal(500000f, file.Metadata["llama.rope.freq_base"].AsFloat32());
        Assert.Equal(7u, file.Metadata["general.file_type"].AsUInt32());
        Assert.Equal("gpt2", file.Metadata["tokenizer.ggml.model"].AsString());
        Assert.Equal(["a", "<s>", "</s>", "b", "ab", "Ġa"], file.Metadata["tokenizer.ggml.tokens"].AsArray().Cast<string>());
        Assert.Equal([1, 3, 3, 1, 1, 1], file.Metadata["tokenizer.ggml.token_type"].AsArray().Cast<int>());
        Assert.Equal(["a b", "Ġ a"], file.Metadata["tokenizer.ggml.merges"].AsArray().Cast<string>());
        Assert.Equal(2u, file.Metadata["tokenizer.ggml.eos_token_id"].AsUInt32());

        var norm = file.Tensor("blk.0.attn_norm.weight");
        Assert.Equal(GgmlType.F32, norm.Type);
        Assert.Equal(model["model.layers.0.input_layernorm.weight"].data<float>().ToArray(), file.Dequantize("blk.0.attn_norm.weight"));

        var k = file.Tensor("blk.0.attn_k.weight");
        Assert.Equal([64L, 32], k.Dimensions);
        Assert.Equal(GgmlType.Q8_0, k.Type);
        // Round trip: reading and un-permuting gives the source within Q8_0 precision, and the bytes decode to exactly
        // what the encoder produced from the permuted source.
        var kRead = torch.tensor(file.Dequantize("blk.0.attn_k.weight")).reshape(32, 64);
        var kSource = model["model.layers.0.self_attn.k_proj.weight"];
        var permuted = GgufLlamaExport.PermuteForGguf(kSource, 2).contiguous();
        Assert.Equal(GgmlQuants.Decode(GgmlType.Q8_0, GgmlQuants.Encode(GgmlType.Q8_0, permuted.data<float>().ToArray()), 32 * 64), kRead.data<float>().ToArray());
        Assert.True(GgufLlamaExport.UnpermuteFromGguf(kRead, 2).allclose(kSource, rtol: 0, atol: 0.03));
    }

    [Fact]
    public void Does_interleave_rope_pairs_when_permuting_q_rows()
    {
        // One head of dim 8: HF row p*4 + i must land on Meta row 2i + p.
        var rows = torch.arange(Scalars.Of(8), dtype: ScalarType.Float32).unsqueeze(1);
        var permuted = GgufLlamaExport.PermuteForGguf(rows, 1).squeeze(1).data<float>().ToArray();
        Assert.Equal([0f, 4, 1, 5, 2, 6, 3, 7], permuted);
        Assert.True(GgufLlamaExport.UnpermuteFromGguf(GgufLlamaExport.PermuteForGguf(rows, 1), 1).eq(rows).all().item<bool>());
    }

    [Fact]
    public void Does_fall_back_to_q8_0_for_rows_that_do_not_fill_a_q4_k_super_block()
    {
        var model = TinyModel();
        var path = Path.Combine(_dir, "q4k.gguf");
        GgufLlamaExport.Write(path, Config, null, null, model.Select(kv => new KeyValuePair<string, Func<Tensor>>(kv.Key, () => kv.Value.alias())), GgmlType.Q4_K);
        var file = GgufFile.Read(path);
        Assert.Equal(GgmlType.Q8_0, file.Tensor("blk.0.attn_q.weight").Type);     // rows of 64
        Assert.Equal(GgmlType.Q4_K, file.Tensor("blk.0.ffn_down.weight").Type);  // rows of 256
        // llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_S: every quantized matrix is Q4_K (no Q6_K mix, which _M (15) means).
        Assert.Equal(14u, file.Metadata["general.file_type"].AsUInt32());
    }
}

public class GgufTokenizerMetadataTests
{
    [Fact]
    public void Does_write_a_byte_fallback_tokenizer_as_gpt2_byte_level_tokens()
    {
        var tokenizer = Lowbit.Engine.Tokenization.ByteTokenizer.TokenizerJson();
        using var config = System.Text.Json.JsonDocument.Parse("""{"vocab_size":260,"bos_token_id":256,"eos_token_id":257}""");
        var metadata = GgufLlamaExport.TokenizerMetadata(tokenizer, null, config.RootElement).ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.Equal("gpt2", metadata["tokenizer.ggml.model"].AsString());
        var tokens = metadata["tokenizer.ggml.tokens"].AsArray().Cast<string>().ToList();
        Assert.Equal(260, tokens.Count);
        Assert.Equal("A", tokens['A']);
        Assert.Equal("Ġ", tokens[' ']);   // GPT-2's name for the space byte
        Assert.Equal("Ċ", tokens['\n']);
        Assert.Equal("<s>", tokens[256]);
        Assert.Equal(3, metadata["tokenizer.ggml.token_type"].AsArray().Cast<int>().ElementAt(256));
        Assert.Equal(256u, metadata["tokenizer.ggml.bos_token_id"].AsUInt32());
    }
}
