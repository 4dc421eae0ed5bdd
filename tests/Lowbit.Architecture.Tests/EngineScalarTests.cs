using System.Reflection;
using System.Reflection.Emit;
using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using System.Reflection.PortableExecutable;

namespace Lowbit.Architecture.Tests;

/// <summary>
/// The engine passes no number to TorchSharp through its implicit <c>Scalar</c> conversion: that temporary can be
/// finalized while libtorch still reads it (libtorch <c>Scalar.h</c> assertions in parallel runs). Every such
/// argument goes through <c>Lowbit.Engine.Scalars.Of</c>, which keeps it alive. Checked in the compiled IL, so a
/// new <c>x.mul(0.5)</c> anywhere in the engine fails here with the method named.
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
            $"implicit number → Scalar conversions (wrap the argument in Scalars.Of(...)): {string.Join(", ", offenders)}");
    }

    [Fact]
    public void Does_find_an_implicit_Scalar_conversion_where_one_is()
    {
        // This assembly's own probe below converts implicitly: the scan must see it (a scan that finds nothing is no check).
        Assert.Contains(ImplicitScalarCalls(typeof(EngineScalarTests).Assembly.Location), m => m.EndsWith("::Probe", StringComparison.Ordinal));
    }

    internal static TorchSharp.Scalar Probe() => 0.5;

    [Fact]
    public void Does_find_a_tensor_operator_with_a_number_operand_where_one_is()
    {
        Assert.Contains(ImplicitScalarCalls(typeof(EngineScalarTests).Assembly.Location), m => m.EndsWith("::OperatorProbe", StringComparison.Ordinal));
        Assert.DoesNotContain(ImplicitScalarCalls(typeof(EngineScalarTests).Assembly.Location), m => m.EndsWith("::TensorOperatorProbe", StringComparison.Ordinal));
    }

    internal static TorchSharp.torch.Tensor OperatorProbe(TorchSharp.torch.Tensor x) => x + 1e-5;

    internal static TorchSharp.torch.Tensor TensorOperatorProbe(TorchSharp.torch.Tensor x) => x + x;

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
                if (method.RelativeVirtualAddress != 0 && CallsImplicitScalar(md, pe.GetMethodBody(method.RelativeVirtualAddress).GetILReader()))
                {
                    found.Add($"{md.GetString(type.Namespace)}.{md.GetString(type.Name)}::{md.GetString(method.Name)}");
                }
            }
        }

        return found;
    }

    /// <summary>
    /// An implicit conversion, or a TorchSharp 0.107 member that converts a number to a Scalar inside itself without
    /// holding it: the tensor operators with a number operand (<c>x + 1e-5</c>, <c>0.5 * x</c>) and <c>square()</c>.
    /// </summary>
    private static bool Unheld(MetadataReader md, MemberReference member, string type)
    {
        var name = md.GetString(member.Name);
        if (type == "Scalar")
        {
            return name == "op_Implicit";
        }

        if (type != "Tensor")
        {
            return false;
        }

        if (name == "square")
        {
            return true;
        }

        if (name is not ("op_Addition" or "op_Subtraction" or "op_Multiply" or "op_Division" or "op_Modulus"))
        {
            return false;
        }

        // MethodRefSig: calling convention, parameter count, return type, parameters; a number operand is one byte.
        var signature = md.GetBlobReader(member.Signature);
        signature.ReadSignatureHeader();
        var count = signature.ReadCompressedInteger();
        var types = new List<SignatureTypeCode>();
        for (var i = 0; i <= count; i++)
        {
            var code = signature.ReadSignatureTypeCode();
            types.Add(code);
            if (code is SignatureTypeCode.TypeHandle)
            {
                signature.ReadTypeHandle();
            }
        }

        return types.Skip(1).Any(t => t is SignatureTypeCode.Double or SignatureTypeCode.Single or SignatureTypeCode.Int32 or SignatureTypeCode.Int64);
    }

    private static bool CallsImplicitScalar(MetadataReader md, BlobReader il)
    {
        while (il.RemainingBytes > 0)
        {
            var first = il.ReadByte();
            var value = first == 0xFE ? (short)(0xFE00 | il.ReadByte()) : first;
            switch (Operands[value])
            {
                case OperandType.InlineMethod:
                    var token = MetadataTokens.EntityHandle(il.ReadInt32());
                    if (token.Kind == HandleKind.MemberReference)
                    {
                        var member = md.GetMemberReference((MemberReferenceHandle)token);
                        if (member.Parent.Kind == HandleKind.TypeReference && Unheld(md, member, md.GetString(md.GetTypeReference((TypeReferenceHandle)member.Parent).Name)))
                        {
                            return true;
                        }
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

        return false;
    }
}
