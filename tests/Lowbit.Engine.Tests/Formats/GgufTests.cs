using Lowbit.Engine.Formats;

namespace Lowbit.Engine.Tests.Formats;

public class GgufTests
{
    [Fact]
    public void Does_write_the_minimal_96_byte_oracle_file()
    {
        using var stream = new MemoryStream();
        GgufWriter.Write(stream, [new("general.architecture", GgufValue.Of("llama"))], []);
        var bytes = stream.ToArray();
        Assert.Equal(96, bytes.Length);
        var expected = new List<byte>("GGUF"u8.ToArray());
        expected.AddRange(BitConverter.GetBytes(3u));
        expected.AddRange(BitConverter.GetBytes(0L));
        expected.AddRange(BitConverter.GetBytes(1L));
        expected.AddRange(BitConverter.GetBytes(20UL));
        expected.AddRange("general.architecture"u8.ToArray());
        expected.AddRange(BitConverter.GetBytes(8));
        expected.AddRange(BitConverter.GetBytes(5UL));
        expected.AddRange("llama"u8.ToArray());
        Assert.Equal(69, expected.Count);
        Assert.Equal(expected, bytes[..69]);
        Assert.All(bytes[69..], b => Assert.Equal(0, b));
    }

    [Fact]
    public void Does_read_back_metadata_and_tensors_when_round_tripping_a_file()
    {
        var random = new Random(2);
        var weights = Enumerable.Range(0, 2 * 256).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        var norm = new[] { 1f, 2f, 3f };
        using var stream = new MemoryStream();
        GgufWriter.Write(stream,
            [
                new("general.architecture", GgufValue.Of("llama")),
                new("llama.block_count", GgufValue.Of(2u)),
                new("llama.attention.layer_norm_rms_epsilon", GgufValue.Of(1e-5f)),
                new("tokenizer.ggml.tokens", GgufValue.Strings(["a", "b", "ü"])),
                new("tokenizer.ggml.token_type", GgufValue.Ints([1, 3, 6])),
            ],
            [
                new GgufTensor("output_norm.weight", [3], GgmlType.F32, GgmlQuants.Encode(GgmlType.F32, norm)),
                new GgufTensor("blk.0.attn_q.weight", [256, 2], GgmlType.Q4_K, GgmlQuants.Encode(GgmlType.Q4_K, weights)),
            ]);
        var file = GgufFile.Parse(stream.ToArray());
        Assert.Equal(3u, file.Version);
        Assert.Equal(2u, file.Metadata["llama.block_count"].AsUInt32());
        Assert.Equal(1e-5f, file.Metadata["llama.attention.layer_norm_rms_epsilon"].AsFloat32());
        Assert.Equal(["a", "b", "ü"], file.Metadata["tokenizer.ggml.tokens"].AsArray().Cast<string>());
        Assert.Equal(0, file.DataStart % 32);
        var q = file.Tensor("blk.0.attn_q.weight");
        Assert.Equal(32, q.Offset);  // the 12-byte norm is padded to 32
        Assert.Equal([256L, 2], q.Dimensions);
        Assert.Equal(norm, file.Dequantize("output_norm.weight"));
        Assert.Equal(GgmlQuants.Decode(GgmlType.Q4_K, GgmlQuants.Encode(GgmlType.Q4_K, weights), 512), file.Dequantize("blk.0.attn_q.weight"));
        Assert.Equal(0, stream.Length % 32);
    }

    [Fact]
    public void Does_reject_duplicate_keys_and_bad_magic()
    {
        using var stream = new MemoryStream();
        Assert.Throws<ArgumentException>(() => GgufWriter.Write(stream, [new("a", GgufValue.Of(1u)), new("a", GgufValue.Of(2u))], []));
        Assert.Throws<InvalidDataException>(() => GgufFile.Parse("GGML\u0003\0\0\0"u8.ToArray()));
    }
}
