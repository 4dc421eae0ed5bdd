using System.Text;

namespace Lowbit.Engine.Formats;

/// <summary>GGUF metadata value types (gguf.h gguf_type).</summary>
public enum GgufValueType
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>A typed GGUF metadata value; arrays hold an element type and boxed scalar elements (no nesting).</summary>
public sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    public static GgufValue Of(string v) => new(GgufValueType.String, v);

    public static GgufValue Of(uint v) => new(GgufValueType.UInt32, v);

    public static GgufValue Of(int v) => new(GgufValueType.Int32, v);

    public static GgufValue Of(float v) => new(GgufValueType.Float32, v);

    public static GgufValue Of(bool v) => new(GgufValueType.Bool, v);

    public static GgufValue Array(GgufValueType elementType, System.Collections.IList items) => new(GgufValueType.Array, items, elementType);

    public static GgufValue Strings(IEnumerable<string> items) => Array(GgufValueType.String, items.ToList());

    public static GgufValue Floats(IEnumerable<float> items) => Array(GgufValueType.Float32, items.ToList());

    public static GgufValue Ints(IEnumerable<int> items) => Array(GgufValueType.Int32, items.ToList());

    public string AsString() => (string)Value;

    public uint AsUInt32() => Convert.ToUInt32(Value, System.Globalization.CultureInfo.InvariantCulture);

    public float AsFloat32() => Convert.ToSingle(Value, System.Globalization.CultureInfo.InvariantCulture);

    public IReadOnlyList<object> AsArray() => ((System.Collections.IList)Value).Cast<object>().ToList();
}

/// <summary>
/// A tensor to write: name, ggml dims (ne[0] fastest-varying), type, and a function producing its encoded bytes
/// (called once, in file order, after the header is written — so a whole model never sits encoded in memory).
/// </summary>
public sealed record GgufTensor(string Name, long[] Dimensions, GgmlType Type, Func<byte[]> Encode)
{
    public GgufTensor(string name, long[] dimensions, GgmlType type, byte[] data)
        : this(name, dimensions, type, () => data)
    {
    }

    public long Elements => Dimensions.Aggregate(1L, (a, b) => a * b);

    public long ByteSize => GgmlQuants.ByteSize(Type, Elements);
}

/// <summary>A tensor entry read from a file: its bytes are located at <see cref="Offset"/> from the data section start.</summary>
public sealed record GgufTensorInfo(string Name, long[] Dimensions, GgmlType Type, long Offset)
{
    public long Elements => Dimensions.Aggregate(1L, (a, b) => a * b);

    public long ByteSize => GgmlQuants.ByteSize(Type, Elements);
}

/// <summary>GGUF v3 writer (little-endian; llama.cpp gguf.cpp layout): header, KVs, tensor infos, aligned data.</summary>
public static class GgufWriter
{
    public const uint Magic = 0x46554747;
    public const uint Version = 3;
    public const int DefaultAlignment = 32;

    public static void Write(Stream stream, IReadOnlyList<KeyValuePair<string, GgufValue>> metadata, IReadOnlyList<GgufTensor> tensors)
    {
        var duplicate = metadata.GroupBy(kv => kv.Key).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"duplicate GGUF key '{duplicate.Key}'", nameof(metadata));
        }
        var alignment = metadata.Where(kv => kv.Key == "general.alignment").Select(kv => (int)kv.Value.AsUInt32()).DefaultIfEmpty(DefaultAlignment).First();
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(Version);
        w.Write((long)tensors.Count);
        w.Write((long)metadata.Count);
        foreach (var (key, value) in metadata)
        {
            WriteString(w, key);
            w.Write((int)value.Type);
            if (value.Type == GgufValueType.Array)
            {
                var items = (System.Collections.IList)value.Value;
                w.Write((int)value.ElementType);
                w.Write((ulong)items.Count);
                foreach (var item in items)
                {
                    WriteScalar(w, value.ElementType, item!);
                }
            }
            else
            {
                WriteScalar(w, value.Type, value.Value);
            }
        }
        long offset = 0;
        foreach (var t in tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Dimensions.Length);
            foreach (var ne in t.Dimensions)
            {
                w.Write(ne);
            }
            w.Write((int)t.Type);
            w.Write((ulong)offset);
            offset += Pad(t.ByteSize, alignment);
        }
        w.Flush();
        WritePadding(stream, alignment);
        foreach (var t in tensors)
        {
            var data = t.Encode();
            if (data.Length != t.ByteSize)
            {
                throw new ArgumentException($"tensor '{t.Name}': {t.Type} with {t.Elements} elements needs {t.ByteSize} bytes, got {data.Length}", nameof(tensors));
            }
            stream.Write(data);
            WritePadding(stream, alignment);
        }
    }

    internal static long Pad(long n, int alignment) => (n + alignment - 1) / alignment * alignment;

    private static void WritePadding(Stream stream, int alignment)
    {
        var pad = (int)(Pad(stream.Position, alignment) - stream.Position);
        stream.Write(new byte[pad]);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteScalar(BinaryWriter w, GgufValueType type, object v)
    {
        var c = System.Globalization.CultureInfo.InvariantCulture;
        switch (type)
        {
            case GgufValueType.UInt8: w.Write(Convert.ToByte(v, c)); break;
            case GgufValueType.Int8: w.Write(Convert.ToSByte(v, c)); break;
            case GgufValueType.UInt16: w.Write(Convert.ToUInt16(v, c)); break;
            case GgufValueType.Int16: w.Write(Convert.ToInt16(v, c)); break;
            case GgufValueType.UInt32: w.Write(Convert.ToUInt32(v, c)); break;
            case GgufValueType.Int32: w.Write(Convert.ToInt32(v, c)); break;
            case GgufValueType.Float32: w.Write(Convert.ToSingle(v, c)); break;
            case GgufValueType.Bool: w.Write((bool)v ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)v); break;
            case GgufValueType.UInt64: w.Write(Convert.ToUInt64(v, c)); break;
            case GgufValueType.Int64: w.Write(Convert.ToInt64(v, c)); break;
            case GgufValueType.Float64: w.Write(Convert.ToDouble(v, c)); break;
            default: throw new ArgumentException($"GGUF value type {type} cannot be an array element", nameof(type));
        }
    }
}

/// <summary>A parsed GGUF file: metadata, tensor infos, and the data section for reading tensor bytes.</summary>
public sealed class GgufFile
{
    private readonly byte[] _bytes;

    private GgufFile(byte[] bytes, uint version, Dictionary<string, GgufValue> metadata, List<GgufTensorInfo> tensors, long dataStart, int alignment)
    {
        _bytes = bytes;
        Version = version;
        Metadata = metadata;
        Tensors = tensors;
        DataStart = dataStart;
        Alignment = alignment;
    }

    public uint Version { get; }

    public IReadOnlyDictionary<string, GgufValue> Metadata { get; }

    public IReadOnlyList<GgufTensorInfo> Tensors { get; }

    public long DataStart { get; }

    public int Alignment { get; }

    public GgufTensorInfo Tensor(string name) => Tensors.FirstOrDefault(t => t.Name == name)
        ?? throw new KeyNotFoundException($"GGUF has no tensor '{name}'");

    public ReadOnlySpan<byte> TensorBytes(GgufTensorInfo info) => _bytes.AsSpan((int)(DataStart + info.Offset), (int)info.ByteSize);

    public float[] Dequantize(string name)
    {
        var info = Tensor(name);
        return GgmlQuants.Decode(info.Type, TensorBytes(info), info.Elements);
    }

    public static GgufFile Read(string path) => Parse(File.ReadAllBytes(path));

    /// <summary>Parses and validates a GGUF v2/v3 little-endian file the way gguf.cpp does (magic, version,
    /// no duplicate keys, no nested arrays, dims ≤ 4, offsets = running sum of aligned sizes).</summary>
    public static GgufFile Parse(byte[] bytes)
    {
        try
        {
            return ParseCore(bytes);
        }
        catch (Exception ex) when (ex is EndOfStreamException or OverflowException or ArgumentException or InvalidCastException or DivideByZeroException)
        {
            throw new InvalidDataException($"malformed GGUF file: {ex.Message}", ex);
        }
    }

    private static GgufFile ParseCore(byte[] bytes)
    {
        using var r = new BinaryReader(new MemoryStream(bytes), Encoding.UTF8);
        if (r.ReadUInt32() != GgufWriter.Magic)
        {
            throw new InvalidDataException("not a GGUF file (bad magic)");
        }
        var version = r.ReadUInt32();
        if (version is not (2 or 3))
        {
            throw new InvalidDataException($"unsupported GGUF version {version}");
        }
        var tensorCount = r.ReadInt64();
        var kvCount = r.ReadInt64();
        var metadata = new Dictionary<string, GgufValue>(StringComparer.Ordinal);
        for (long i = 0; i < kvCount; i++)
        {
            var key = ReadString(r);
            var type = (GgufValueType)r.ReadInt32();
            GgufValue value;
            if (type == GgufValueType.Array)
            {
                var elementType = (GgufValueType)r.ReadInt32();
                if (elementType == GgufValueType.Array)
                {
                    throw new InvalidDataException($"key '{key}': nested arrays are not allowed");
                }
                var count = r.ReadUInt64();
                var items = new List<object>((int)Math.Min(count, 1 << 20));
                for (ulong j = 0; j < count; j++)
                {
                    items.Add(ReadScalar(r, elementType));
                }
                value = GgufValue.Array(elementType, items);
            }
            else
            {
                value = new GgufValue(type, ReadScalar(r, type));
            }
            if (!metadata.TryAdd(key, value))
            {
                throw new InvalidDataException($"duplicate GGUF key '{key}'");
            }
        }
        var alignment = metadata.TryGetValue("general.alignment", out var a) ? checked((int)a.AsUInt32()) : GgufWriter.DefaultAlignment;
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0)
        {
            throw new InvalidDataException($"general.alignment {alignment} is not a power of two");
        }
        var tensors = new List<GgufTensorInfo>();
        long expected = 0;
        for (long i = 0; i < tensorCount; i++)
        {
            var name = ReadString(r);
            var dims = r.ReadUInt32();
            if (dims > 4)
            {
                throw new InvalidDataException($"tensor '{name}' has {dims} dimensions (max 4)");
            }
            var ne = new long[dims];
            long elements = 1;
            for (var d = 0; d < dims; d++)
            {
                ne[d] = r.ReadInt64();
                if (ne[d] < 0)
                {
                    throw new InvalidDataException($"tensor '{name}' has a negative dimension {ne[d]}");
                }
                elements = checked(elements * ne[d]);
            }
            var info = new GgufTensorInfo(name, ne, (GgmlType)r.ReadInt32(), (long)r.ReadUInt64());
            if (info.Offset != expected)
            {
                throw new InvalidDataException($"tensor '{name}' at offset {info.Offset}, expected {expected}");
            }
            expected += GgufWriter.Pad(info.ByteSize, alignment);
            tensors.Add(info);
        }
        var dataStart = GgufWriter.Pad(r.BaseStream.Position, alignment);
        if (tensorCount > 0 && dataStart + expected > bytes.Length + alignment)
        {
            throw new InvalidDataException("GGUF data section is truncated");
        }
        foreach (var t in tensors)
        {
            if (checked(dataStart + t.Offset + t.ByteSize) > bytes.Length)
            {
                throw new InvalidDataException($"tensor '{t.Name}' runs past the end of the file");
            }
        }
        return new GgufFile(bytes, version, metadata, tensors, dataStart, alignment);
    }

    private static string ReadString(BinaryReader r)
    {
        var length = r.ReadUInt64();
        if (length > (ulong)(r.BaseStream.Length - r.BaseStream.Position))
        {
            throw new InvalidDataException($"a string of {length} bytes runs past the end of the file");
        }
        return Encoding.UTF8.GetString(r.ReadBytes((int)length));
    }

    private static object ReadScalar(BinaryReader r, GgufValueType type) => type switch
    {
        GgufValueType.UInt8 => r.ReadByte(),
        GgufValueType.Int8 => r.ReadSByte(),
        GgufValueType.UInt16 => r.ReadUInt16(),
        GgufValueType.Int16 => r.ReadInt16(),
        GgufValueType.UInt32 => r.ReadUInt32(),
        GgufValueType.Int32 => r.ReadInt32(),
        GgufValueType.Float32 => r.ReadSingle(),
        GgufValueType.Bool => r.ReadByte() != 0,
        GgufValueType.String => ReadString(r),
        GgufValueType.UInt64 => r.ReadUInt64(),
        GgufValueType.Int64 => r.ReadInt64(),
        GgufValueType.Float64 => r.ReadDouble(),
        _ => throw new InvalidDataException($"unknown GGUF value type {(int)type}"),
    };
}
