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

    /// <summary>Dense projections at ≤ 16 rows may run the native GEMV instead of cuBLAS (false forces cuBLAS).</summary>
    public required bool NativeGemv { get; init; }

    /// <summary>The kernels measured fastest per projection shape and rows (<see cref="KernelSelector"/>); null: the fixed defaults.</summary>
    public KernelTable? Table { get; init; }

    /// <summary>
    /// Tests: every projection's fused variants (<see cref="Projection.RunFused"/>) run as the separate kernels' eager torch
    /// forms (<c>FastDecoderOptions.EmulatedFusion</c>).
    /// </summary>
    internal bool EmulateFusion { get; init; }

    public static DecodeKernels Eager { get; } = new() { Native = false, NativeGemv = false };
}

/// <summary>A projection of the fused decode step: <c>y = x·Wᵀ (+ b)</c> for 2-D <c>x</c> <c>[rows, in]</c>.</summary>
public abstract class Projection : IDisposable
{
    public abstract long OutFeatures { get; }

    public abstract Tensor Forward(Tensor x, DecodeKernels kernels);

    /// <summary>The shape that kernel selection measures (null: this projection has no kernel choice).</summary>
    public virtual ProjectionShape? Shape => null;

    /// <summary>The kernels that can run <paramref name="rows"/> rows here, the eager reference first.</summary>
    public virtual IReadOnlyList<ProjectionKernel> Candidates(int rows, DecodeKernels kernels) => [];

    /// <summary>Runs <paramref name="x"/> through <paramref name="kernel"/> (one of <see cref="Candidates"/>).</summary>
    public virtual Tensor Run(Tensor x, ProjectionKernel kernel) => throw new NotSupportedException($"{GetType().Name} has no kernel choice");

    /// <summary>
    /// The decode step's fusions (<see cref="Int4Prologue"/>): this projection of <paramref name="prologue"/>(x), plus
    /// <paramref name="residual"/> when given, in one kernel; null when the kernel chosen for these rows has no such
    /// variant (the caller then runs the separate RMSNorm, SiLU·mul or add, with the same roundings). With
    /// <paramref name="output"/> (<c>[rows, out]</c>, unit inner stride, x's dtype) the result is written there and returned.
    /// </summary>
    public Tensor? RunFused(Tensor x, DecodeKernels kernels, Int4Prologue prologue, Tensor? normWeight, double eps, Tensor? residual, Tensor? output = null)
    {
        if (!kernels.EmulateFusion)
        {
            return RunNativeFused(x, kernels, prologue, normWeight, eps, residual, output);
        }
        var result = EmulatedFused(x, kernels, prologue, normWeight, eps, residual);
        return output is null ? result : output.copy_(result);
    }

    private Tensor EmulatedFused(Tensor x, DecodeKernels kernels, Int4Prologue prologue, Tensor? normWeight, double eps, Tensor? residual)
    {
        var input = prologue switch
        {
            Int4Prologue.RmsNorm or Int4Prologue.RmsNormSiluMul => FastDecoder.EagerRmsNorm(x, normWeight ?? throw new ArgumentNullException(nameof(normWeight)), eps),
            Int4Prologue.SiluMul => FastDecoder.EagerSiluMul(x),
            _ => x,
        };
        var output = Forward(input, kernels);
        if (prologue == Int4Prologue.RmsNormSiluMul)
        {
            output = FastDecoder.EagerSiluMul(output);
        }
        return residual is null ? output : residual.add(output, Scalars.One);
    }

    /// <summary>
    /// The variant <see cref="RunFused"/> would run for these rows: the int4 GEMV's geometry (1 or 3; 1 when emulated),
    /// or 0 when it has none.
    /// </summary>
    public int FusedVariant(long rows, ScalarType dtype, DecodeKernels kernels, Int4Prologue prologue, bool residual) =>
        kernels.EmulateFusion ? 1 : NativeFusedVariant(rows, dtype, kernels, prologue, residual);

    /// <summary>The native fused kernel's run (<see cref="RunFused"/>); null when there is none for these rows.</summary>
    protected virtual Tensor? RunNativeFused(Tensor x, DecodeKernels kernels, Int4Prologue prologue, Tensor? normWeight, double eps, Tensor? residual, Tensor? output) => null;

    /// <summary>The native fused kernel's geometry for these rows (<see cref="FusedVariant"/>), or 0.</summary>
    protected virtual int NativeFusedVariant(long rows, ScalarType dtype, DecodeKernels kernels, Int4Prologue prologue, bool residual) => 0;

    public abstract void Dispose();

    /// <summary>
    /// This projection on <paramref name="device"/> (a pipeline shard's): itself when it is there already, else a copy
    /// there, this one disposed. Unfused quantized projections (<see cref="ModuleProjection"/>) stay where the loader
    /// put them (<c>PipelinePlacement</c> refuses to split a model that has them).
    /// </summary>
    public virtual Projection MoveTo(Device device) => this;

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

/// <summary>A dense weight <c>[out, in]</c>: cuBLAS through <c>linear</c>, or the native GEMV at few rows.</summary>
public sealed class DenseProjection(Tensor weight, Tensor? bias) : Projection
{
    /// <summary>
    /// Rows up to which the native GEMV is used when nothing was measured (<see cref="DecodeKernels.Table"/> null: no CUDA
    /// graphs, or selection off). Measured on the H200 (7B bf16, graphs, docs/gpu.md run 7): batch 1 native 221.7 against
    /// cuBLAS 207.9 tokens/s; batch 8 653.6 against 1,447.1; batch 16 367.7 against 2,381.2.
    /// </summary>
    public const int NativeGemvMaxRows = 1;

    private ProjectionShape? _shape;

    public Tensor Weight { get; } = weight;

    public override long OutFeatures => Weight.shape[0];

    public override ProjectionShape Shape => _shape ??= new ProjectionShape { Weight = ProjectionWeight.Dense, OutFeatures = Weight.shape[0], InFeatures = Weight.shape[1] };

    public override Tensor Forward(Tensor x, DecodeKernels kernels) => Run(x, Choose(x.shape[0], x.device_type == DeviceType.CUDA, kernels));

    /// <summary>
    /// cuBLAS unless the native GEMV is allowed (<see cref="DecodeKernels.NativeGemv"/>; graph-cublas turns it off) and
    /// either measured fastest at these rows or, unmeasured, the rows are at most <see cref="NativeGemvMaxRows"/>.
    /// </summary>
    public ProjectionKernel Choose(long rows, bool cuda, DecodeKernels kernels)
    {
        if (!kernels.NativeGemv || !cuda || rows > 16 || Weight.shape[1] % 8 != 0)
        {
            return ProjectionKernel.Linear;
        }
        return kernels.Table?.Lookup(Shape, rows) switch
        {
            ProjectionKernel.Linear => ProjectionKernel.Linear,
            ProjectionKernel.NativeGemv => ProjectionKernel.NativeGemv,
            ProjectionKernel.NativeGemvV2 when NativeKernelsV2.GemvSupports(rows, Weight.shape[1]) => ProjectionKernel.NativeGemvV2,
            _ => rows <= NativeGemvMaxRows ? ProjectionKernel.NativeGemv : ProjectionKernel.Linear,
        };
    }

    public override IReadOnlyList<ProjectionKernel> Candidates(int rows, DecodeKernels kernels)
    {
        if (!kernels.NativeGemv || !NativeKernels.Available || rows > 16 || Weight.shape[1] % 8 != 0 || Weight.device_type != DeviceType.CUDA)
        {
            return [ProjectionKernel.Linear];
        }
        return NativeKernelsV2.GemvSupports(rows, Weight.shape[1])
            ? [ProjectionKernel.Linear, ProjectionKernel.NativeGemv, ProjectionKernel.NativeGemvV2]
            : [ProjectionKernel.Linear, ProjectionKernel.NativeGemv];
    }

    public override Tensor Run(Tensor x, ProjectionKernel kernel)
    {
        if (kernel is ProjectionKernel.NativeGemv or ProjectionKernel.NativeGemvV2)
        {
            var output = empty([x.shape[0], Weight.shape[0]], x.dtype, x.device);
            if (kernel == ProjectionKernel.NativeGemvV2)
            {
                NativeKernelsV2.Gemv(x, Weight, output);
            }
            else
            {
                NativeKernels.Gemv(x, Weight, output);
            }
            return bias is null ? output : output.add_(bias, Scalars.One);
        }
        return nn.functional.linear(x, Weight, bias);
    }

    public override Projection MoveTo(Device device)
    {
        if (FastDecoder.SameDevice(Weight.device, device))
        {
            return this;
        }
        var moved = new DenseProjection(Weight.to(device), bias?.to(device));
        Dispose();
        return moved;
    }

    public override void Dispose()
    {
        Weight.Dispose();
        bias?.Dispose();
    }
}

/// <summary>A packed 4-bit weight: a native dequantize-GEMV at ≤ 16 rows (the one measured fastest), else dequantize and <c>linear</c>.</summary>
public sealed class Int4Projection(Int4Weight weight, Tensor? bias) : Projection
{
    private ProjectionShape? _shape;

    public Int4Weight Weight { get; } = weight;

    /// <summary>
    /// int4-mma16's arrival counters (one per 16 output rows, zero between launches) for its K splits past K = 4,096,
    /// made with the projection on a GPU (never inside a graph capture); a projection's launches are ordered on the
    /// decode step's stream.
    /// </summary>
    private readonly Tensor? _arrivals = weight.Packed.device_type == DeviceType.CUDA
        ? zeros([(weight.OutFeatures + 15) / 16], ScalarType.Int32, weight.Packed.device).DetachFromDisposeScope()
        : null;

    public override long OutFeatures => Weight.OutFeatures;

    public override ProjectionShape Shape => _shape ??= new ProjectionShape
    {
        Weight = ProjectionWeight.Int4, OutFeatures = Weight.OutFeatures, InFeatures = Weight.InFeatures, GroupSize = Weight.GroupSize,
    };

    public override Tensor Forward(Tensor x, DecodeKernels kernels) => Run(x, Choose(x.shape[0], x.device_type == DeviceType.CUDA, kernels));

    /// <summary>The measured choice for these rows; unmeasured, the first int4 GEMV at ≤ 16 rows, else dequantize + <c>linear</c>.</summary>
    public ProjectionKernel Choose(long rows, bool cuda, DecodeKernels kernels)
    {
        if (!kernels.Native || !cuda)
        {
            return ProjectionKernel.Int4Dequant;
        }
        return kernels.Table?.Lookup(Shape, rows) switch
        {
            ProjectionKernel.Int4V2 when NativeKernelsV2.Int4Supports(rows, Weight.InFeatures) => ProjectionKernel.Int4V2,
            { } other when OtherGeometries.Contains(other) && GeometrySupports(GeometryOf(other), rows) => other,
            ProjectionKernel.Int4V1 when rows <= 16 => ProjectionKernel.Int4V1,
            ProjectionKernel.Int4Dequant => ProjectionKernel.Int4Dequant,
            _ => rows <= 16 ? ProjectionKernel.Int4V1 : ProjectionKernel.Int4Dequant,
        };
    }

    public override IReadOnlyList<ProjectionKernel> Candidates(int rows, DecodeKernels kernels)
    {
        if (!kernels.Native || !NativeKernels.Available || Weight.Packed.device_type != DeviceType.CUDA)
        {
            return [ProjectionKernel.Int4Dequant];
        }
        var candidates = new List<ProjectionKernel> { ProjectionKernel.Int4Dequant };
        if (rows <= 16)
        {
            candidates.Add(ProjectionKernel.Int4V1);
        }
        if (NativeKernelsV2.Int4Supports(rows, Weight.InFeatures))
        {
            candidates.Add(ProjectionKernel.Int4V2);
        }
        candidates.AddRange(OtherGeometries.Where(kernel => GeometrySupports(GeometryOf(kernel), rows)));
        return candidates;
    }

    /// <summary>
    /// Whether the int4 GEMV's <paramref name="geometry"/> (3 wide, 5 occupancy, 7 shared, 9 and 11 tensor cores, 13, 15, 17
    /// and 19 packed fp16) takes these
    /// rows here; plain, each takes both 16-bit dtypes, asked with bf16 (the fused variants' one dtype). The shared
    /// geometry also needs a group that is a multiple of 64, the tensor-core one a group of 64 or 128 (both checked only
    /// at launch in the library).
    /// </summary>
    private bool GeometrySupports(int geometry, long rows) => geometry switch
        {
            7 => Weight.GroupSize % 64 == 0,
            9 or 11 => Weight.GroupSize is 64 or 128,
            _ => true,
        }
        && NativeKernelsV2.Int4XSupports(ScalarType.BFloat16, rows, Weight.InFeatures, geometry, Int4Prologue.None, residual: false);

    /// <summary>The int4 GEMVs run through <see cref="NativeKernelsV2.Int4LinearX"/> besides the first v2 geometry.</summary>
    private static readonly ProjectionKernel[] OtherGeometries =
        [ProjectionKernel.Int4V2Wide, ProjectionKernel.Int4V2Occupancy, ProjectionKernel.Int4V2Shared, ProjectionKernel.Int4Mma, ProjectionKernel.Int4Mma16,
         ProjectionKernel.Int4V2Half2, ProjectionKernel.Int4V2Half2Subnormal, ProjectionKernel.Int4V2Half2Block, ProjectionKernel.Int4V2Half2Cluster];

    /// <summary>The geometry number of an int4 GEMV v2 kernel (1, 3, 5, 7, 9, 11, 13, 15, 17, 19), or 0 for the others.</summary>
    private static int GeometryOf(ProjectionKernel kernel) => kernel switch
    {
        ProjectionKernel.Int4V2 => 1,
        ProjectionKernel.Int4V2Wide => 3,
        ProjectionKernel.Int4V2Occupancy => 5,
        ProjectionKernel.Int4V2Shared => 7,
        ProjectionKernel.Int4Mma => 9,
        ProjectionKernel.Int4Mma16 => 11,
        ProjectionKernel.Int4V2Half2 => 13,
        ProjectionKernel.Int4V2Half2Subnormal => 15,
        ProjectionKernel.Int4V2Half2Block => 17,
        ProjectionKernel.Int4V2Half2Cluster => 19,
        _ => 0,
    };

    protected override int NativeFusedVariant(long rows, ScalarType dtype, DecodeKernels kernels, Int4Prologue prologue, bool residual)
    {
        if (bias is not null || Weight.Packed.device_type != DeviceType.CUDA)
        {
            return 0;
        }
        var geometry = GeometryOf(Choose(rows, cuda: true, kernels));
        return geometry != 0 && NativeKernelsV2.Int4XSupports(dtype, rows, Weight.InFeatures, geometry, prologue, residual) ? geometry : 0;
    }

    protected override Tensor? RunNativeFused(Tensor x, DecodeKernels kernels, Int4Prologue prologue, Tensor? normWeight, double eps, Tensor? residual, Tensor? output)
    {
        var rows = x.shape[0];
        var geometry = NativeFusedVariant(rows, x.dtype, kernels, prologue, residual is not null);
        if (geometry == 0 || x.stride(1) != 1 || x.stride(0) % 8 != 0)
        {
            return null;
        }
        output ??= empty([rows, prologue == Int4Prologue.RmsNormSiluMul ? Weight.OutFeatures / 2 : Weight.OutFeatures], x.dtype, x.device);
        NativeKernelsV2.Int4LinearX(x, Weight, output, geometry, prologue, normWeight, eps, residual, _arrivals);
        return output;
    }

    public override Tensor Run(Tensor x, ProjectionKernel kernel)
    {
        if (kernel == ProjectionKernel.Int4V1 || GeometryOf(kernel) != 0)
        {
            var input = x.stride(0) % 8 == 0 && x.stride(1) == 1 ? x : x.contiguous();
            var output = empty([x.shape[0], Weight.OutFeatures], x.dtype, x.device);
            if (OtherGeometries.Contains(kernel))
            {
                NativeKernelsV2.Int4LinearX(input, Weight, output, GeometryOf(kernel), Int4Prologue.None, null, 0, null, _arrivals);
            }
            else if (kernel == ProjectionKernel.Int4V2)
            {
                NativeKernelsV2.Int4Linear(input, Weight.Packed, Weight.Scales, Weight.Zeros, Weight.GroupSize, output);
            }
            else
            {
                NativeKernels.Int4Linear(input, Weight.Packed, Weight.Scales, Weight.Zeros, Weight.GroupSize, output);
            }
            return bias is null ? output : output.add_(bias, Scalars.One);
        }
        return DequantizedLinear(x, Weight, bias);
    }

    /// <summary>
    /// <c>x · dequant(W)ᵀ + b</c> through 16-bit weights a slice of output rows at a time (at most
    /// <see cref="Int4Weight.DequantizeSliceBytes"/> of dense weight at once): the prefill and the decode batches over the
    /// packed GEMVs never hold a whole dense projection (a 70B's fused gate/up is 0.94 GB in 16 bits).
    /// </summary>
    public static Tensor DequantizedLinear(Tensor x, Int4Weight weight, Tensor? bias, long sliceBytes = Int4Weight.DequantizeSliceBytes)
    {
        var rows = weight.OutFeatures;
        var slice = Math.Max(1, Math.Min(rows, sliceBytes / (weight.InFeatures * 2)));
        if (slice == rows)
        {
            using var dense = weight.Dequantize(x.dtype);
            return nn.functional.linear(x, dense, bias);
        }
        var output = empty([x.shape[0], rows], x.dtype, x.device);
        for (var first = 0L; first < rows; first += slice)
        {
            using var scope = NewDisposeScope();
            var count = Math.Min(slice, rows - first);
            var part = weight.Rows(first, count).Dequantize(x.dtype);
            output.narrow(1, first, count).copy_(nn.functional.linear(x, part, bias?.narrow(0, first, count)));
        }
        return output;
    }

    public override Projection MoveTo(Device device)
    {
        if (FastDecoder.SameDevice(Weight.Packed.device, device))
        {
            return this;
        }
        var moved = new Int4Projection(new Int4Weight
        {
            Packed = Weight.Packed.to(device),
            Scales = Weight.Scales.to(device),
            Zeros = Weight.Zeros.to(device),
            GroupSize = Weight.GroupSize,
        }, bias?.to(device));
        Dispose();
        return moved;
    }

    public override void Dispose()
    {
        Weight.Dispose();
        bias?.Dispose();
        _arrivals?.Dispose();
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
