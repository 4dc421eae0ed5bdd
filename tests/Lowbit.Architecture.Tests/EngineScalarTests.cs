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
                        if (md.GetString(member.Name) == "op_Implicit" && member.Parent.Kind == HandleKind.TypeReference
                            && md.GetString(md.GetTypeReference((TypeReferenceHandle)member.Parent).Name) == "Scalar")
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
