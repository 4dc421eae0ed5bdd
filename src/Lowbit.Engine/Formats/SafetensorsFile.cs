using System.IO.MemoryMappedFiles;
using System.Text.Json;
using TorchSharp;

namespace Lowbit.Engine.Formats;

/// <summary>One tensor's entry in a safetensors header. Offsets are relative to the data buffer.</summary>
public sealed record SafetensorsTensorInfo
{
    public required string Name { get; init; }

    public required SafetensorsDtype Dtype { get; init; }

    public required IReadOnlyList<long> Shape { get; init; }

    public required long Begin { get; init; }

    public required long End { get; init; }

    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    public long ByteLength => End - Begin;
}

/// <summary>
/// A safetensors file, memory-mapped read-only and validated like the reference reader (engine-formats.md §1):
/// header ≤ 100 MB, a JSON object with no duplicate keys, string-to-string <c>__metadata__</c>, known dtypes, byte
/// lengths matching shapes, entries tiling the data buffer without holes or overlap, and the buffer ending at the
/// end of the file. Tensors are copied out of the mapping on request, so the file's pages stay in the page cache
/// only while read.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    public const long MaxHeaderBytes = 100_000_000;

    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafetensorsTensorInfo> _tensors;
    private bool _disposed;

    private SafetensorsFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* basePointer, long dataStart,
        Dictionary<string, SafetensorsTensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePointer;
        _dataStart = dataStart;
        _tensors = tensors;
        Metadata = metadata;
    }

    public string Path { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors => _tensors;

    /// <summary>Opens and validates <paramref name="path"/>; throws <see cref="EngineInputException"/> naming the problem.</summary>
    public static SafetensorsFile Open(string path)
    {
        var length = new FileInfo(path).Length;
        if (length < 8)
        {
            throw Bad(path, $"file is {length} bytes; a safetensors file starts with an 8-byte header length");
        }
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            pointer += view.PointerOffset;
            var headerLength = BitConverter.ToInt64(new ReadOnlySpan<byte>(pointer, 8));
            if (headerLength < 2 || headerLength > MaxHeaderBytes || 8 + headerLength > length)
            {
                throw Bad(path, $"header length {headerLength} is outside 2..{Math.Min(MaxHeaderBytes, length - 8)}");
            }
            var (tensors, metadata) = ParseHeader(path, new ReadOnlySpan<byte>(pointer + 8, (int)headerLength), length - 8 - headerLength);
            return new SafetensorsFile(path, map, view, pointer, 8 + headerLength, tensors, metadata);
        }
        catch
        {
            if (view is not null)
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
                view.Dispose();
            }
            map.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, SafetensorsTensorInfo>, IReadOnlyDictionary<string, string>) ParseHeader(string path, ReadOnlySpan<byte> header, long bufferLength)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header.ToArray());
        }
        catch (JsonException ex)
        {
            throw Bad(path, $"header is not valid JSON ({ex.Message})");
        }
        try
        {
            return ParseHeader(path, doc, bufferLength);
        }
        catch (InvalidOperationException ex)
        {
            // System.Text.Json validates UTF-8 only when a string is read (a name or value with invalid bytes).
            throw Bad(path, $"header holds text that is not valid UTF-8 ({ex.Message})");
        }
    }

    private static (Dictionary<string, SafetensorsTensorInfo>, IReadOnlyDictionary<string, string>) ParseHeader(string path, JsonDocument doc, long bufferLength)
    {
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw Bad(path, "header is not a JSON object");
            }
            var tensors = new Dictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                {
                    throw Bad(path, $"duplicate key '{property.Name}'");
                }
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object)
                    {
                        throw Bad(path, "__metadata__ must be an object of strings");
                    }
                    foreach (var entry in property.Value.EnumerateObject())
                    {
                        if (entry.Value.ValueKind != JsonValueKind.String)
                        {
                            throw Bad(path, $"__metadata__.{entry.Name} must be a string");
                        }
                        metadata[entry.Name] = entry.Value.GetString()!;
                    }
                    continue;
                }
                tensors.Add(property.Name, ParseTensor(path, property));
            }
            CheckTiling(path, tensors.Values, bufferLength);
            return (tensors, metadata);
        }
    }

    private static SafetensorsTensorInfo ParseTensor(string path, JsonProperty property)
    {
        var name = property.Name;
        var value = property.Value;
        if (value.ValueKind != JsonValueKind.Object
            || !value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String
            || !value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array
            || !value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
        {
            throw Bad(path, $"tensor '{name}' needs dtype (string), shape (array) and data_offsets ([begin, end])");
        }
        if (!SafetensorsDtypes.TryParse(dtypeElement.GetString()!, out var dtype))
        {
            throw Bad(path, $"tensor '{name}' has unsupported dtype '{dtypeElement.GetString()}' (supported: {string.Join(", ", Enum.GetNames<SafetensorsDtype>())})");
        }
        var shape = new List<long>();
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out var d) || d < 0)
            {
                throw Bad(path, $"tensor '{name}' has an invalid shape");
            }
            shape.Add(d);
        }
        var offsets = offsetsElement.EnumerateArray().Select(o => o.ValueKind == JsonValueKind.Number && o.TryGetInt64(out var v) && v >= 0 ? v : -1).ToArray();
        if (offsets[0] < 0 || offsets[1] < offsets[0])
        {
            throw Bad(path, $"tensor '{name}' has invalid data_offsets");
        }
        var info = new SafetensorsTensorInfo { Name = name, Dtype = dtype, Shape = shape, Begin = offsets[0], End = offsets[1] };
        long expected;
        try
        {
            expected = checked(shape.Aggregate(1L, (a, b) => checked(a * b)) * SafetensorsDtypes.ByteSize(dtype));
        }
        catch (OverflowException)
        {
            throw Bad(path, $"tensor '{name}' shape overflows");
        }
        if (info.ByteLength != expected)
        {
            throw Bad(path, $"tensor '{name}' spans {info.ByteLength} bytes but {dtype}[{string.Join(",", shape)}] needs {expected}");
        }
        return info;
    }

    private static void CheckTiling(string path, IEnumerable<SafetensorsTensorInfo> tensors, long bufferLength)
    {
        long position = 0;
        foreach (var t in tensors.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.Begin != position)
            {
                throw Bad(path, t.Begin > position
                    ? $"hole in the data buffer before tensor '{t.Name}' (bytes {position}..{t.Begin})"
                    : $"tensor '{t.Name}' overlaps the previous tensor");
            }
            position = t.End;
        }
        if (position != bufferLength)
        {
            throw Bad(path, $"data buffer is {bufferLength} bytes but the tensors cover {position}");
        }
    }

    private static EngineInputException Bad(string path, string problem) => new($"{path}: invalid safetensors: {problem}");

    /// <summary>The raw little-endian bytes of a tensor, valid until this file is disposed.</summary>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        var info = Get(name);
        return new ReadOnlySpan<byte>(_base + _dataStart + info.Begin, checked((int)info.ByteLength));
    }

    public SafetensorsTensorInfo Get(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _tensors.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"{Path}: no tensor '{name}'");
    }

    /// <summary>
    /// Copies a tensor into a new CPU tensor of its stored dtype, then converts to <paramref name="dtype"/> and moves to
    /// <paramref name="device"/>. <paramref name="shape"/> (same element count) gives the new tensor another shape
    /// without a view: a view keeps its base's storage alive even after <c>set_</c> points it elsewhere.
    /// </summary>
    public torch.Tensor Load(string name, torch.ScalarType? dtype = null, torch.Device? device = null, long[]? shape = null)
    {
        var info = Get(name);
        var stored = SafetensorsDtypes.ToScalarType(info.Dtype);
        if (shape is not null && shape.Aggregate(1L, (a, b) => a * b) != info.ElementCount)
        {
            throw new EngineInputException($"{Path}: tensor '{name}' has {info.ElementCount} elements, not [{string.Join(", ", shape)}]");
        }
        var tensor = torch.empty(shape ?? info.Shape.ToArray(), stored);
        if (info.ByteLength > 0)
        {
            CopyInto(tensor, _base + _dataStart + info.Begin, info.ByteLength);
        }
        if ((dtype is null || dtype == stored) && (device is null || device.type == DeviceType.CPU))
        {
            return tensor;
        }
        using (tensor)
        {
            return tensor.to(dtype ?? stored, device ?? torch.CPU);
        }
    }

    private static void CopyInto(torch.Tensor tensor, byte* source, long length)
    {
        // Spans are int-indexed: tensors over 1 GiB are copied in row blocks (views along dim 0 stay contiguous).
        const long Chunk = 1L << 30;
        if (length <= Chunk || tensor.dim() == 0)
        {
            var destination = tensor.bytes;
            new ReadOnlySpan<byte>(source, destination.Length).CopyTo(destination);
            return;
        }
        var rows = tensor.shape[0];
        var rowBytes = length / rows;
        var rowsPerChunk = Math.Max(1, Chunk / rowBytes);
        for (long row = 0; row < rows; row += rowsPerChunk)
        {
            using var block = tensor.narrow(0, row, Math.Min(rowsPerChunk, rows - row));
            var destination = block.bytes;
            new ReadOnlySpan<byte>(source + row * rowBytes, destination.Length).CopyTo(destination);
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
    }
}
