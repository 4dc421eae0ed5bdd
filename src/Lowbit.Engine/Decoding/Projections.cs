using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Decoding;

/// <summary>Which kernels a <see cref="FastDecoder"/> uses: native ones (CUDA, library loaded) or the eager torch ops.</summary>
public sealed record DecodeKernels
{
    /// <summary>Fused RMSNorm, RoPE and SiLU·mul, and the int4 dequantize-GEMV, from <see cref="NativeKernels"/>.</summary>
    public required bool Native { get; init; }

    /// <summary>Dense projections at ≤ 16 rows through the native GEMV instead of cuBLAS.</summary>
    public required bool NativeGemv { get; init; }

    public static DecodeKernels Eager { get; } = new() { Native = false, NativeGemv = false };
}

/// <summary>A projection of the fused decode step: <c>y = x·Wᵀ (+ b)</c> for 2-D <c>x</c> <c>[rows, in]</c>.</summary>
public abstract class Projection : IDisposable
{
    public abstract long OutFeatures { get; }

    public abstract Tensor Forward(Tensor x, DecodeKernels kernels);

    public abstract void Dispose();

    /// <summary>
    /// One projection over the concatenation of <paramref name="parts"/> along the output dimension (fused QKV,
    /// gate/up): int4 when every part is an eligible 4-bit quantized layer, else dense in <paramref name="dtype"/>.
    /// </summary>
    public static Projection Fuse(IReadOnlyList<LinearLayer> parts, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        Tensor? bias = null;
        var biases = parts.Select(p => p.DenseBias(dtype)).ToList();
        if (biases.FirstOrDefault(b => b is not null) is { } first)
        {
            bias = cat(parts.Select((p, i) => biases[i] ?? zeros(p.OutFeatures, dtype, first.device)).ToArray(), 0);
        }
        if (parts.All(p => p is PackedQuantizedLinear q && Int4Weight.IsEligible(q)))
        {
            return new Int4Projection(Int4Weight.Share(parts.Cast<PackedQuantizedLinear>().ToList()).MoveToOuterDisposeScope(), bias?.to(dtype).MoveToOuterDisposeScope());
        }
        if (parts.All(p => p is QuantizedLinear q && Int4Weight.IsEligible(q.Weight)))
        {
            var packed = Int4Weight.Concat(parts.Select(p => Int4Weight.From(((QuantizedLinear)p).Weight)).ToList());
            return new Int4Projection(packed.MoveToOuterDisposeScope(), bias?.to(dtype).MoveToOuterDisposeScope());
        }
        if (parts.Any(p => p is QuantizedLinear or PackedQuantizedLinear))
        {
            // A quantized artifact stays packed in memory: its layers dequantize per call rather than fuse into a dense copy.
            return new ModuleProjection(parts, dtype);
        }
        var weights = parts.Select(p => p.DenseWeight(dtype)).ToArray();
        var weight = weights.Length == 1 ? weights[0].contiguous() : cat(weights, 0);
        if (weights.Length > 1 && parts.All(p => p is DenseLinear d && d.Weight.dtype == dtype && d.Weight.device_type == weight.device_type && d.Weight.device_index == weight.device_index))
        {
            // The model's weights become views of the fused one, so the fused copy is the only copy (no extra memory).
            using var noGrad = no_grad();
            var row = 0L;
            foreach (var part in parts.Cast<DenseLinear>())
            {
                part.Weight.set_(weight.narrow(0, row, part.OutFeatures));
                row += part.OutFeatures;
            }
        }
        return new DenseProjection(weight.MoveToOuterDisposeScope(), bias?.MoveToOuterDisposeScope());
    }
}

/// <summary>A dense weight <c>[out, in]</c>: cuBLAS through <c>linear</c>, or the native GEMV at one row.</summary>
public sealed class DenseProjection(Tensor weight, Tensor? bias) : Projection
{
    /// <summary>
    /// Rows up to which the native GEMV beats cuBLAS. Measured on the H200 (7B bf16, graphs, docs/gpu.md run 7):
    /// batch 1 native 221.7 against cuBLAS 207.9 tokens/s; batch 8 653.6 against 1,447.1; batch 16 367.7 against
    /// 2,381.2 (the kernel's time grows with its rows while cuBLAS's barely does).
    /// </summary>
    public const int NativeGemvMaxRows = 1;

    public Tensor Weight { get; } = weight;

    public override long OutFeatures => Weight.shape[0];

    public override Tensor Forward(Tensor x, DecodeKernels kernels)
    {
        if (kernels.NativeGemv && x.shape[0] <= NativeGemvMaxRows && Weight.shape[1] % 8 == 0 && x.device_type == DeviceType.CUDA)
        {
            var output = empty([x.shape[0], Weight.shape[0]], x.dtype, x.device);
            NativeKernels.Gemv(x, Weight, output);
            return bias is null ? output : output.add_(bias, Scalars.One);
        }
        return nn.functional.linear(x, Weight, bias);
    }

    public override void Dispose()
    {
        Weight.Dispose();
        bias?.Dispose();
    }
}

/// <summary>A packed 4-bit weight: the native dequantize-GEMV at ≤ 16 rows, else dequantize and <c>linear</c>.</summary>
public sealed class Int4Projection(Int4Weight weight, Tensor? bias) : Projection
{
    public Int4Weight Weight { get; } = weight;

    public override long OutFeatures => Weight.OutFeatures;

    public override Tensor Forward(Tensor x, DecodeKernels kernels)
    {
        if (kernels.Native && x.shape[0] <= 16 && x.device_type == DeviceType.CUDA)
        {
            var input = x.stride(0) % 8 == 0 && x.stride(1) == 1 ? x : x.contiguous();
            var output = empty([x.shape[0], Weight.OutFeatures], x.dtype, x.device);
            NativeKernels.Int4Linear(input, Weight.Packed, Weight.Scales, Weight.Zeros, Weight.GroupSize, output);
            return bias is null ? output : output.add_(bias, Scalars.One);
        }
        using var dense = Weight.Dequantize(x.dtype);
        return nn.functional.linear(x, dense, bias);
    }

    public override void Dispose()
    {
        Weight.Dispose();
        bias?.Dispose();
    }
}

/// <summary>
/// Projections that are not fused (quantized layers the int4 GEMV does not take: other bit widths, act-order): each
/// runs its own <c>forward</c> (which dequantizes per call, so the packed codes stay the only copy) and the outputs
/// are concatenated.
/// </summary>
public sealed class ModuleProjection(IReadOnlyList<LinearLayer> parts, ScalarType dtype) : Projection
{
    public override long OutFeatures => parts.Sum(p => p.OutFeatures);

    public override Tensor Forward(Tensor x, DecodeKernels kernels)
    {
        var outputs = parts.Select(p => p.forward(x).to(dtype)).ToArray();
        return outputs.Length == 1 ? outputs[0] : cat(outputs, 1);
    }

    /// <summary>The layers belong to the model, which disposes them.</summary>
    public override void Dispose()
    {
    }
}
