using TorchSharp;

namespace Lowbit.Engine.Formats;

/// <summary>safetensors element types the engine reads and writes (engine-formats.md §1).</summary>
public enum SafetensorsDtype
{
    Bool,
    U8,
    I8,
    I16,
    F16,
    BF16,
    I32,
    F32,
    F64,
    I64,
}

/// <summary>Names, sizes and TorchSharp equivalents of <see cref="SafetensorsDtype"/>.</summary>
public static class SafetensorsDtypes
{
    public static string Name(SafetensorsDtype dtype) => dtype.ToString();

    public static bool TryParse(string name, out SafetensorsDtype dtype) =>
        Enum.TryParse(name, ignoreCase: false, out dtype) && Enum.IsDefined(dtype) && name == dtype.ToString();

    public static int ByteSize(SafetensorsDtype dtype) => dtype switch
    {
        SafetensorsDtype.Bool or SafetensorsDtype.U8 or SafetensorsDtype.I8 => 1,
        SafetensorsDtype.I16 or SafetensorsDtype.F16 or SafetensorsDtype.BF16 => 2,
        SafetensorsDtype.I32 or SafetensorsDtype.F32 => 4,
        SafetensorsDtype.F64 or SafetensorsDtype.I64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    public static torch.ScalarType ToScalarType(SafetensorsDtype dtype) => dtype switch
    {
        SafetensorsDtype.Bool => torch.ScalarType.Bool,
        SafetensorsDtype.U8 => torch.ScalarType.Byte,
        SafetensorsDtype.I8 => torch.ScalarType.Int8,
        SafetensorsDtype.I16 => torch.ScalarType.Int16,
        SafetensorsDtype.F16 => torch.ScalarType.Float16,
        SafetensorsDtype.BF16 => torch.ScalarType.BFloat16,
        SafetensorsDtype.I32 => torch.ScalarType.Int32,
        SafetensorsDtype.F32 => torch.ScalarType.Float32,
        SafetensorsDtype.F64 => torch.ScalarType.Float64,
        SafetensorsDtype.I64 => torch.ScalarType.Int64,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    public static SafetensorsDtype FromScalarType(torch.ScalarType type) => type switch
    {
        torch.ScalarType.Bool => SafetensorsDtype.Bool,
        torch.ScalarType.Byte => SafetensorsDtype.U8,
        torch.ScalarType.Int8 => SafetensorsDtype.I8,
        torch.ScalarType.Int16 => SafetensorsDtype.I16,
        torch.ScalarType.Float16 => SafetensorsDtype.F16,
        torch.ScalarType.BFloat16 => SafetensorsDtype.BF16,
        torch.ScalarType.Int32 => SafetensorsDtype.I32,
        torch.ScalarType.Float32 => SafetensorsDtype.F32,
        torch.ScalarType.Float64 => SafetensorsDtype.F64,
        torch.ScalarType.Int64 => SafetensorsDtype.I64,
        _ => throw new NotSupportedException($"no safetensors dtype for {type}"),
    };
}
