using System.Buffers.Binary;
using System.Text;
using Lowbit.Engine.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests;

public class SafetensorsTests
{
    private static byte[] RawFile(string header, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, h.Length);
        h.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + h.Length);
        return bytes;
    }

    [Fact]
    public void Does_read_the_reference_minimal_file_when_the_header_is_unpadded()
    {
        using var dir = new TempDir();
        var header = """{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}""";
        var data = new byte[16];
        for (var i = 0; i < 4; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(i * 4), i + 1);
        }
        var bytes = RawFile(header, data);
        File.WriteAllBytes(dir.File("a.safetensors"), bytes);

        using var file = SafetensorsFile.Open(dir.File("a.safetensors"));
        using var t = file.Load("test");

        Assert.Equal(84, bytes.Length);
        Assert.Equal([0x3c, 0, 0, 0, 0, 0, 0, 0], bytes[..8]);
        Assert.Equal([2L, 2], t.shape);
        Assert.Equal([1, 2, 3, 4], t.data<int>().ToArray());
    }

    [Fact]
    public void Does_pad_the_header_to_8_bytes_when_writing_the_reference_file()
    {
        using var dir = new TempDir();
        var path = dir.File("b.safetensors");

        SafetensorsWriter.Write(path, [new SafetensorsEntry { Name = "test", Dtype = SafetensorsDtype.I32, Shape = [2, 2], Bytes = new byte[16] }]);
        var bytes = File.ReadAllBytes(path);

        Assert.Equal(88, bytes.Length);
        Assert.Equal(0x40, BinaryPrimitives.ReadInt64LittleEndian(bytes));
        Assert.Equal("""{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}    """, Encoding.UTF8.GetString(bytes, 8, 64));
    }

    [Fact]
    public void Does_order_tensors_by_alignment_then_name_when_writing()
    {
        using var dir = new TempDir();
        var path = dir.File("c.safetensors");
        SafetensorsEntry E(string name, SafetensorsDtype dtype, long n) =>
            new() { Name = name, Dtype = dtype, Shape = [n], Bytes = new byte[n * SafetensorsDtypes.ByteSize(dtype)] };

        SafetensorsWriter.Write(path, [E("z8", SafetensorsDtype.U8, 3), E("b16", SafetensorsDtype.BF16, 2), E("a32", SafetensorsDtype.F32, 1), E("a16", SafetensorsDtype.F16, 1), E("q64", SafetensorsDtype.I64, 1)],
            new Dictionary<string, string> { ["format"] = "pt" });
        using var file = SafetensorsFile.Open(path);

        var order = file.Tensors.Values.OrderBy(t => t.Begin).Select(t => t.Name).ToArray();
        Assert.Equal(["q64", "a32", "a16", "b16", "z8"], order);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal(0, (SafetensorsWriter.HeaderText(path).Length + 8) % 8);
    }

    [Fact]
    public void Does_round_trip_every_supported_dtype_when_writing_tensors()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var source = new Dictionary<string, Tensor>
        {
            ["f32"] = tensor(new float[] { 1.5f, -2.25f, 3e-8f }),
            ["f16"] = tensor(new float[] { 0.5f, -65504f }).to(ScalarType.Float16),
            ["bf16"] = tensor(new float[] { 1.0f, -3.0e38f, 0.0078125f }).to(ScalarType.BFloat16),
            ["i32"] = tensor(new int[] { int.MinValue, 7 }),
            ["i64"] = tensor(new long[] { long.MaxValue }),
            ["i8"] = tensor(new sbyte[] { -128, 127 }),
            ["u8"] = tensor(new byte[] { 0, 255 }),
            ["scalar"] = tensor(2.5f),
            ["empty"] = zeros([2, 0]),
        };

        SafetensorsWriter.Write(dir.File("d.safetensors"), source);
        using var file = SafetensorsFile.Open(dir.File("d.safetensors"));

        foreach (var (name, expected) in source)
        {
            using var actual = file.Load(name);
            Assert.Equal(expected.dtype, actual.dtype);
            Assert.Equal(expected.shape, actual.shape);
            Assert.True(expected.contiguous().bytes.SequenceEqual(actual.bytes), name);
        }
        Assert.Equal(SafetensorsDtype.BF16, file.Get("bf16").Dtype);
        Assert.Empty(file.Get("scalar").Shape);
    }

    [Theory]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "spans 4 bytes but F32[2] needs 8")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12, "hole in the data buffer")]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "overlaps")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 8, "data buffer is 8 bytes but the tensors cover 4")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "duplicate key 'a'")]
    [InlineData("""{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}}""", 4, "unsupported dtype 'Q4'")]
    [InlineData("""{"__metadata__":{"n":1}}""", 0, "__metadata__.n must be a string")]
    [InlineData("""[1,2]""", 0, "not a JSON object")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]""", 4, "not valid JSON")]
    public void Does_reject_invalid_files_with_a_message_naming_the_problem(string header, int dataBytes, string problem)
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("bad.safetensors"), RawFile(header, new byte[dataBytes]));

        var ex = Assert.Throws<EngineInputException>(() => SafetensorsFile.Open(dir.File("bad.safetensors")));

        Assert.Contains(problem, ex.Message, StringComparison.Ordinal);
        Assert.Contains("bad.safetensors", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_reject_a_header_length_beyond_the_file()
    {
        using var dir = new TempDir();
        var bytes = new byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, 1_000);
        File.WriteAllBytes(dir.File("short.safetensors"), bytes);

        var ex = Assert.Throws<EngineInputException>(() => SafetensorsFile.Open(dir.File("short.safetensors")));

        Assert.Contains("header length 1000", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_accept_whitespace_padded_headers_and_empty_files()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("e.safetensors"), RawFile("{}    ", []));
        File.WriteAllBytes(dir.File("f.safetensors"), RawFile("""  {"x":{"dtype":"F16","shape":[2,0],"data_offsets":[0,0]}}""", []));

        using var empty = SafetensorsFile.Open(dir.File("e.safetensors"));
        using var zero = SafetensorsFile.Open(dir.File("f.safetensors"));

        Assert.Empty(empty.Tensors);
        Assert.Equal([2L, 0], zero.Get("x").Shape);
    }
}
