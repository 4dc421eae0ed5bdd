using System.Reflection;
using System.Reflection.Emit;
using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using System.Reflection.PortableExecutable;

namespace Lowbit.Architecture.Tests;

/// <summary>
/// The engine passes no number to TorchSharp through its implicit <c>Scalar</c> conversion: that temporary can be
/// finalized while libtorch still reads it (libtorch <c>Scalar.h</c> assertions in parallel runs). Every such
/// argument goes through <c>Lowbit.Engine.Scalars.Of</c>, which keeps it alive. Nor does it call a TorchSharp member
/// that makes such a temporary inside itself: the set is read from TorchSharp's own IL (every member whose body, or a
/// TorchSharp member it calls, converts implicitly), so it covers <c>x + y</c> and <c>x.add(y)</c> (TorchSharp 0.107
/// passes an unheld <c>alpha = 1</c>: seen as a <c>toFloat</c> assertion in RmsNorm's <c>variance + eps</c>),
/// <c>x + 1e-5</c>, <c>square()</c> and whatever a TorchSharp upgrade adds. Checked in the compiled IL, so a new
/// <c>x.mul(0.5)</c> or <c>a + b</c> anywhere in the engine fails here with the method named.
/// </summary>
public sealed class EngineScalarTests
{
    private static readonly Dictionary<short, OperandType> Operands = typeof(OpCodes)
        .GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!)
        .ToDictionary(o => o.Value, o => o.OperandType);

    [Fact]
    public void Does_pass_no_number_to_TorchSharp_through_an_implicit_Scalar_conversion()
    {
        var offenders = ImplicitScalarCalls(typeof(Lowbit.Engine.Scalars).Assembly.Location);
        Assert.True(offenders.Count == 0,
            $"implicit number → Scalar conversions (wrap a number in Scalars.Of(...); add with an explicit alpha: x.add(y, Scalars.One)): {string.Join(", ", offenders)}");
    }

    [Fact]
    public void Does_find_an_implicit_Scalar_conversion_where_one_is()
    {
        // This assembly's own probe below converts implicitly: the scan must see it (a scan that finds nothing is no check).
        Assert.Contains(ImplicitScalarCalls(typeof(EngineScalarTests).Assembly.Location), m => m.Contains("::Probe ", StringComparison.Ordinal));
    }

    internal static TorchSharp.Scalar Probe() => 0.5;

    [Fact]
    public void Does_find_a_tensor_operator_with_a_number_operand_where_one_is()
    {
        Assert.Contains(ImplicitScalarCalls(typeof(EngineScalarTests).Assembly.Location), m => m.Contains("::OperatorProbe ", StringComparison.Ordinal));
        Assert.Contains(ImplicitScalarCalls(typeof(EngineScalarTests).Assembly.Location), m => m.Contains("::TensorOperatorProbe ", StringComparison.Ordinal));
        Assert.Contains(ImplicitScalarCalls(typeof(EngineScalarTests).Assembly.Location), m => m.Contains("::AddProbe ", StringComparison.Ordinal));
        Assert.DoesNotContain(ImplicitScalarCalls(typeof(EngineScalarTests).Assembly.Location), m => m.Contains("::HeldAddProbe ", StringComparison.Ordinal));
        Assert.DoesNotContain(ImplicitScalarCalls(typeof(EngineScalarTests).Assembly.Location), m => m.Contains("::SubtractProbe ", StringComparison.Ordinal));
    }

    internal static TorchSharp.torch.Tensor OperatorProbe(TorchSharp.torch.Tensor x) => x + 1e-5;

    // TorchSharp 0.107: operator +(Tensor, Tensor) → add(Tensor) → add(Tensor, (Scalar)1), the alpha unheld.
    internal static TorchSharp.torch.Tensor TensorOperatorProbe(TorchSharp.torch.Tensor x) => x + x;

    internal static TorchSharp.torch.Tensor AddProbe(TorchSharp.torch.Tensor x) => x.add(x);

    internal static TorchSharp.torch.Tensor HeldAddProbe(TorchSharp.torch.Tensor x, TorchSharp.Scalar one) => x.add(x, one);

    // operator -(Tensor, Tensor) calls THSTensor_sub directly: nothing to hold.
    internal static TorchSharp.torch.Tensor SubtractProbe(TorchSharp.torch.Tensor x) => x - x;

    [Fact]
    public void Does_read_the_TorchSharp_members_that_convert_numbers_inside_from_TorchSharp_itself()
    {
        var tainted = Tainted.Value;
        Assert.Contains("Tensor::add(Tensor)", tainted);
        Assert.Contains("Tensor::op_Addition(Tensor,Tensor)", tainted);
        Assert.Contains("Tensor::square()", tainted);
        Assert.DoesNotContain("Tensor::add(Tensor,Scalar)", tainted);
        Assert.DoesNotContain("Tensor::op_Subtraction(Tensor,Tensor)", tainted);
    }

    private static List<string> ImplicitScalarCalls(string assembly)
    {
        using var stream = File.OpenRead(assembly);
        using var pe = new PEReader(stream);
        var md = pe.GetMetadataReader();
        var found = new List<string>();
        foreach (var typeHandle in md.TypeDefinitions)
        {
            var type = md.GetTypeDefinition(typeHandle);
            foreach (var methodHandle in type.GetMethods())
            {
                var method = md.GetMethodDefinition(methodHandle);
                if (method.RelativeVirtualAddress != 0 && UnheldScalarCallee(md, pe.GetMethodBody(method.RelativeVirtualAddress).GetILReader()) is { } callee)
                {
                    found.Add($"{md.GetString(type.Namespace)}.{md.GetString(type.Name)}::{md.GetString(method.Name)} (calls {callee})");
                }
            }
        }

        return found;
    }

    /// <summary>
    /// TorchSharp's members (<c>Type::name(parameters)</c>) that convert a number to a <c>Scalar</c> in their own body
    /// or through another TorchSharp member they call: a fixpoint over TorchSharp.dll's IL.
    /// </summary>
    private static readonly Lazy<HashSet<string>> Tainted = new(() =>
    {
        using var stream = File.OpenRead(typeof(TorchSharp.Scalar).Assembly.Location);
        using var pe = new PEReader(stream);
        var md = pe.GetMetadataReader();
        var calls = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        var tainted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var typeHandle in md.TypeDefinitions)
        {
            foreach (var methodHandle in md.GetTypeDefinition(typeHandle).GetMethods())
            {
                var method = md.GetMethodDefinition(methodHandle);
                var key = Key(md, methodHandle);
                if (method.RelativeVirtualAddress == 0)
                {
                    continue;
                }

                var callees = calls.TryGetValue(key, out var known) ? known : calls[key] = new HashSet<string>(StringComparer.Ordinal);
                foreach (var callee in Callees(md, pe.GetMethodBody(method.RelativeVirtualAddress).GetILReader()))
                {
                    if (callee.StartsWith("Scalar::op_Implicit(", StringComparison.Ordinal))
                    {
                        tainted.Add(key);
                    }

                    callees.Add(callee);
                }
            }
        }

        for (var changed = true; changed;)
        {
            changed = false;
            foreach (var (method, callees) in calls)
            {
                if (!tainted.Contains(method) && callees.Any(tainted.Contains))
                {
                    changed |= tainted.Add(method);
                }
            }
        }

        return tainted;
    });

    private static string Key(MetadataReader md, MethodDefinitionHandle handle)
    {
        var method = md.GetMethodDefinition(handle);
        var signature = method.DecodeSignature(new TypeNames(md), null);
        return $"{md.GetString(md.GetTypeDefinition(method.GetDeclaringType()).Name)}::{md.GetString(method.Name)}({string.Join(",", signature.ParameterTypes)})";
    }

    private static string? Key(MetadataReader md, EntityHandle handle)
    {
        switch (handle.Kind)
        {
            case HandleKind.MethodDefinition:
                return Key(md, (MethodDefinitionHandle)handle);
            case HandleKind.MemberReference:
                var member = md.GetMemberReference((MemberReferenceHandle)handle);
                if (member.GetKind() != MemberReferenceKind.Method || member.Parent.Kind != HandleKind.TypeReference)
                {
                    return null;
                }

                var signature = member.DecodeMethodSignature(new TypeNames(md), null);
                return $"{md.GetString(md.GetTypeReference((TypeReferenceHandle)member.Parent).Name)}::{md.GetString(member.Name)}({string.Join(",", signature.ParameterTypes)})";
            default:
                return null;
        }
    }

    /// <summary>Type names as a signature key: the simple name, no namespace or generic arguments (enough to tell overloads apart).</summary>
    private sealed class TypeNames(MetadataReader md) : ISignatureTypeProvider<string, object?>
    {
        public string GetPrimitiveType(PrimitiveTypeCode typeCode) => typeCode.ToString();

        public string GetTypeFromDefinition(MetadataReader reader, TypeDefinitionHandle handle, byte rawTypeKind) => md.GetString(md.GetTypeDefinition(handle).Name);

        public string GetTypeFromReference(MetadataReader reader, TypeReferenceHandle handle, byte rawTypeKind) => md.GetString(md.GetTypeReference(handle).Name);

        public string GetTypeFromSpecification(MetadataReader reader, object? genericContext, TypeSpecificationHandle handle, byte rawTypeKind) => "spec";

        public string GetSZArrayType(string elementType) => elementType + "[]";

        public string GetArrayType(string elementType, ArrayShape shape) => elementType + "[*]";

        public string GetByReferenceType(string elementType) => elementType + "&";

        public string GetPointerType(string elementType) => elementType + "*";

        public string GetGenericInstantiation(string genericType, System.Collections.Immutable.ImmutableArray<string> typeArguments) => $"{genericType}<{string.Join(",", typeArguments)}>";

        public string GetGenericMethodParameter(object? genericContext, int index) => $"!!{index}";

        public string GetGenericTypeParameter(object? genericContext, int index) => $"!{index}";

        public string GetModifiedType(string modifier, string unmodifiedType, bool isRequired) => unmodifiedType;

        public string GetPinnedType(string elementType) => elementType;

        public string GetFunctionPointerType(MethodSignature<string> signature) => "fnptr";
    }

    private static IEnumerable<string> Callees(MetadataReader md, BlobReader il)
    {
        var found = new List<string>();
        while (il.RemainingBytes > 0)
        {
            var first = il.ReadByte();
            var value = first == 0xFE ? (short)(0xFE00 | il.ReadByte()) : first;
            switch (Operands[value])
            {
                case OperandType.InlineMethod:
                    if (Key(md, MetadataTokens.EntityHandle(il.ReadInt32())) is { } key)
                    {
                        found.Add(key);
                    }

                    break;
                case OperandType.InlineSwitch:
                    var targets = il.ReadInt32();   // read first: `Offset += 4 * ReadInt32()` would add to the offset before the read
                    il.Offset += 4 * targets;
                    break;
                case OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar:
                    il.Offset += 1;
                    break;
                case OperandType.InlineVar:
                    il.Offset += 2;
                    break;
                case OperandType.InlineI8 or OperandType.InlineR:
                    il.Offset += 8;
                    break;
                case OperandType.InlineNone:
                    break;
                default:
                    il.Offset += 4;
                    break;
            }
        }

        return found;
    }

    private static string? UnheldScalarCallee(MetadataReader md, BlobReader il) =>
        Callees(md, il).FirstOrDefault(c => c.StartsWith("Scalar::op_Implicit(", StringComparison.Ordinal) || Tainted.Value.Contains(c));
}
