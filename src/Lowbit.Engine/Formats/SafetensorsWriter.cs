using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;

namespace Lowbit.Engine.Formats;

/// <summary>A tensor to write: name, dtype, shape and its little-endian bytes (or a CPU tensor to take them from).</summary>
public sealed record SafetensorsEntry
{
    public required string Name { get; init; }

    public required SafetensorsDtype Dtype { get; init; }

    public required IReadOnlyList<long> Shape { get; init; }

    /// <summary>Raw bytes; when null, <see cref="Tensor"/> supplies them.</summary>
    public ReadOnlyMemory<byte>? Bytes { get; init; }

    public torch.Tensor? Tensor { get; init; }

    public long ByteLength => Shape.Aggregate(1L, (a, b) => a * b) * SafetensorsDtypes.ByteSize(Dtype);

    public static SafetensorsEntry From(string name, torch.Tensor tensor) => new()
    {
        Name = name,
        Dtype = SafetensorsDtypes.FromScalarType(tensor.dtype),
        Shape = tensor.shape,
        Tensor = tensor,
    };
}

/// <summary>
/// Writes safetensors files as the reference writer does: tensors sorted by dtype alignment (descending) then name,
/// laid out contiguously, the JSON header padded with spaces to a multiple of 8 so the data starts 8-aligned.
/// </summary>
public static class SafetensorsWriter
{
    public static void Write(string path, IEnumerable<SafetensorsEntry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var ordered = entries
            .OrderByDescending(e => SafetensorsDtypes.ByteSize(e.Dtype))
            .ThenBy(e => e.Name, StringComparer.Ordinal)
            .ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var e in ordered)
        {
            if (!names.Add(e.Name) || e.Name == "__metadata__")
            {
                throw new ArgumentException($"duplicate or reserved tensor name '{e.Name}'", nameof(entries));
            }
        }
        var header = BuildHeader(ordered, metadata);
        var tmp = path + ".tmp";
        using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(length, header.Length);
            stream.Write(length);
            stream.Write(header);
            foreach (var e in ordered)
            {
                WriteData(stream, e);
            }
        }
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Writes a map of CPU tensors (converted to contiguous CPU copies as needed).</summary>
    public static void Write(string path, IEnumerable<KeyValuePair<string, torch.Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors.Select(kv => SafetensorsEntry.From(kv.Key, kv.Value)), metadata);

    private static byte[] BuildHeader(IReadOnlyList<SafetensorsEntry> ordered, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    json.WriteString(key, value);
                }
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var e in ordered)
            {
                json.WriteStartObject(e.Name);
                json.WriteString("dtype", SafetensorsDtypes.Name(e.Dtype));
                json.WriteStartArray("shape");
                foreach (var d in e.Shape)
                {
                    json.WriteNumberValue(d);
                }
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset += e.ByteLength;
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        var length = (int)buffer.Length;
        var padded = (length + 7) / 8 * 8;
        var header = new byte[padded];
        buffer.GetBuffer().AsSpan(0, length).CopyTo(header);
        header.AsSpan(length).Fill((byte)' ');
        return header;
    }

    private static void WriteData(Stream stream, SafetensorsEntry e)
    {
        if (e.Bytes is { } bytes)
        {
            if (bytes.Length != e.ByteLength)
            {
                throw new ArgumentException($"tensor '{e.Name}': {bytes.Length} bytes given, {e.ByteLength} expected");
            }
            stream.Write(bytes.Span);
            return;
        }
        if (e.Tensor is null)
        {
            throw new ArgumentException($"tensor '{e.Name}' has neither bytes nor a tensor");
        }
        using var scope = torch.NewDisposeScope();
        var t = e.Tensor.detach().cpu().contiguous();
        if (t.dim() == 0 || t.NumberOfElements * t.ElementSize <= (1L << 30))
        {
            if (t.NumberOfElements > 0)
            {
                stream.Write(t.bytes);
            }
            return;
        }
        var rows = t.shape[0];
        var rowBytes = t.NumberOfElements * t.ElementSize / rows;
        var step = Math.Max(1, (1L << 30) / rowBytes);
        for (long row = 0; row < rows; row += step)
        {
            stream.Write(t.narrow(0, row, Math.Min(step, rows - row)).bytes);
        }
    }

    internal static string HeaderText(string path)
    {
        using var stream = File.OpenRead(path);
        Span<byte> length = stackalloc byte[8];
        stream.ReadExactly(length);
        var header = new byte[BinaryPrimitives.ReadInt64LittleEndian(length)];
        stream.ReadExactly(header);
        return Encoding.UTF8.GetString(header);
    }
}
