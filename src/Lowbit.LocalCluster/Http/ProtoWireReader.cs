using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Http;

/// <summary>One field read off the protobuf wire: its number, wire type and either its varint or its bytes.</summary>
internal readonly record struct WireField(int Number, int WireType, ulong Varint, ReadOnlyMemory<byte> Bytes);

/// <summary>
/// Reads protobuf fields one at a time with bounds checks: a truncated or malformed body is a 400 BadRequest naming
/// where it broke (<paramref name="where"/>), never an exception of another kind.
/// </summary>
internal struct ProtoWireReader(ReadOnlyMemory<byte> data, string where)
{
    public const int Varint = 0;
    public const int Fixed64 = 1;
    public const int LengthDelimited = 2;
    public const int Fixed32 = 5;

    private const int MaxFieldNumber = (1 << 29) - 1;

    private int _position;

    public bool TryRead(out WireField field)
    {
        if (_position >= data.Length)
        {
            field = default;
            return false;
        }
        var key = ReadVarint("a field key");
        var number = key >> 3;
        var wire = (int)(key & 7);
        if (number is 0 or > MaxFieldNumber)
        {
            throw Malformed($"field number {number} is out of range (1 to {MaxFieldNumber})");
        }
        var n = (int)number;
        field = wire switch
        {
            Varint => new WireField(n, wire, ReadVarint($"the varint of field {n}"), default),
            Fixed64 => new WireField(n, wire, 0, Take(8, n)),
            LengthDelimited => new WireField(n, wire, 0, Take(ReadLength(n), n)),
            Fixed32 => new WireField(n, wire, 0, Take(4, n)),
            3 or 4 => throw Malformed($"field {n} uses protobuf groups (wire type {wire}), which Kubernetes objects never contain"),
            _ => throw Malformed($"field {n} has wire type {wire}, which does not exist (valid: 0, 1, 2, 5)"),
        };
        return true;
    }

    /// <summary>Reads the varints of a packed repeated field.</summary>
    public static List<ulong> PackedVarints(ReadOnlyMemory<byte> bytes, string where)
    {
        var reader = new ProtoWireReader(bytes, where);
        var values = new List<ulong>();
        while (reader._position < bytes.Length)
        {
            values.Add(reader.ReadVarint("a packed varint"));
        }
        return values;
    }

    public static ApiException Malformed(string where, string problem) =>
        ApiException.BadRequest($"the protobuf body is malformed in {where}: {problem}");

    private ApiException Malformed(string problem) => Malformed(where, problem);

    private int ReadLength(int number)
    {
        var length = ReadVarint($"the length of field {number}");
        var remaining = data.Length - _position;
        if (length > (ulong)remaining)
        {
            throw Malformed($"the body is truncated: field {number} declares {length} bytes but only {remaining} remain");
        }
        return (int)length;
    }

    private ReadOnlyMemory<byte> Take(int length, int number)
    {
        var remaining = data.Length - _position;
        if (length > remaining)
        {
            throw Malformed($"the body is truncated: field {number} needs {length} bytes but only {remaining} remain");
        }
        var slice = data.Slice(_position, length);
        _position += length;
        return slice;
    }

    private ulong ReadVarint(string what)
    {
        var span = data.Span;
        ulong value = 0;
        for (var shift = 0; shift < 64; shift += 7)
        {
            if (_position >= span.Length)
            {
                throw Malformed($"the body is truncated in {what}");
            }
            var b = span[_position++];
            value |= (ulong)(b & 0x7f) << shift;
            if ((b & 0x80) == 0)
            {
                return value;
            }
        }
        throw Malformed($"{what} is longer than the 10 bytes a varint may take");
    }
}
