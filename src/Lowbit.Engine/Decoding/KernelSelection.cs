using System.Globalization;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Decoding;

/// <summary>The kernels a decode projection can run.</summary>
public enum ProjectionKernel
{
    /// <summary><c>linear</c> over the dense weight (cuBLAS on CUDA).</summary>
    Linear,

    /// <summary>The native bf16/fp16 GEMV (≤ 16 rows).</summary>
    NativeGemv,

    /// <summary>The second dense GEMV (lowbit_kernels_v2.cu, <see cref="NativeKernelsV2.GemvSupports"/>).</summary>
    NativeGemvV2,

    /// <summary>The first int4 dequantize-GEMV (lowbit_kernels.cu, ≤ 16 rows).</summary>
    Int4V1,

    /// <summary>The second int4 dequantize-GEMV (lowbit_kernels_v2.cu, <see cref="NativeKernelsV2.Int4Supports"/>).</summary>
    Int4V2,

    /// <summary>
    /// The second int4 GEMV in its wide geometry: 128 threads reading 16 bytes (32 codes) of each row per chunk, twice
    /// the bytes in flight per thread (<see cref="NativeKernelsV2.Int4LinearX"/> with geometry 3; 1-2 rows).
    /// </summary>
    Int4V2Wide,

    /// <summary>
    /// The second int4 GEMV's layout with four blocks per SM forced (64 registers): one row at K ≤ 4,096
    /// (<see cref="NativeKernelsV2.Int4LinearX"/> with geometry 5).
    /// </summary>
    Int4V2Occupancy,

    /// <summary>
    /// The second int4 GEMV with the activations in shared memory and each group's scale and zero loaded once per
    /// quad of threads: one row at K ≤ 12,288 or two at K ≤ 4,096, group a multiple of 64
    /// (<see cref="NativeKernelsV2.Int4LinearX"/> with geometry 7).
    /// </summary>
    Int4V2Shared,

    /// <summary>
    /// The int4 GEMV on the tensor cores: 16-row tiles by up to 8 activation rows per <c>mma.sync.m16n8k16</c>, the codes
    /// made into exact 16-bit floats by one mask-and-or per two codes; 1-32 rows (up to 8 per launch, more in slices that
    /// each read the codes), K % 256 == 0, groups of 64 or 128 (<see cref="NativeKernelsV2.Int4LinearX"/> with geometry 9).
    /// </summary>
    Int4Mma,

    /// <summary>Dequantize the whole weight, then <c>linear</c> (the eager reference of the int4 kernels).</summary>
    Int4Dequant,

    /// <summary>
    /// <see cref="Int4Mma"/> with 16 activation rows per launch: two tensor-core column sets per A fragment, so the codes
    /// are read once per 16 rows, not per 8; 9-32 rows, plain only, K in splits past 4,096 (each block stages one
    /// split's activations, the tile's last split adds the partial sums) (<see cref="NativeKernelsV2.Int4LinearX"/> with
    /// geometry 11).
    /// </summary>
    Int4Mma16,

    /// <summary>
    /// The int4 GEMV in the wide geometry at one row with the products in packed fp16: each pair of codes made an exact
    /// centred fp16 pair (q − 8) by a mask-and-or and one conversion, multiplied into fp16 partial sums of 8 codes by one
    /// HFMA2, the activations scaled per chunk of 32 by a power of two (<see cref="NativeKernelsV2.Int4LinearX"/> with
    /// geometry 13). About a fifth fewer instructions per code than the fp32 products (the one-row GEMV is bound by
    /// instruction issue), at ~3e-4 normwise error from the fp16 partials.
    /// </summary>
    Int4V2Half2,

    /// <summary>
    /// <see cref="Int4V2Half2"/> with the codes as fp16 subnormals (the masked nibbles themselves: q · 2⁻²⁴), so a pair
    /// costs one mask and one HFMA2, ~30 % fewer instructions per code than the fp32 products; uncentred codes, ~6e-4
    /// normwise error (<see cref="NativeKernelsV2.Int4LinearX"/> with geometry 15).
    /// </summary>
    Int4V2Half2Subnormal,

    /// <summary>
    /// <see cref="Int4V2Half2Subnormal"/>'s products in blocks of 384 threads, one chunk of 32 codes per thread up to
    /// K = 12,288 (a 7B's down projection), 4 rows per tile (<see cref="NativeKernelsV2.Int4LinearX"/> with geometry 17;
    /// offered with LOWBIT_INT4_HALF2=2 until measured).
    /// </summary>
    Int4V2Half2Block,

    /// <summary>
    /// <see cref="Int4V2Half2Subnormal"/> at one row with K split over the 2-8 blocks of a thread block cluster (sm_90;
    /// past K = 4,096: a 7B's down projection in 3), each block one chunk of 32 codes per thread of its slice, the
    /// cluster's blocks adding each other's sums through distributed shared memory in split order
    /// (<see cref="NativeKernelsV2.Int4LinearX"/> with geometry 19; plain, with the residual add and with SiLU·mul +
    /// residual; offered only with LOWBIT_INT4_CLUSTER=1: slower than <see cref="Int4V2Shared"/> at a 7B's down
    /// projection on the H100, cold and more so in the step, docs/gpu.md).
    /// </summary>
    Int4V2Half2Cluster,
}

/// <summary>Whether a projection's weight is dense or packed 4-bit.</summary>
public enum ProjectionWeight
{
    Dense,
    Int4,
}

/// <summary>A projection's weight as kernel selection sees it: one measurement serves every projection of this shape.</summary>
public sealed record ProjectionShape
{
    public required ProjectionWeight Weight { get; init; }

    public required long OutFeatures { get; init; }

    public required long InFeatures { get; init; }

    /// <summary>The int4 group size (0 for dense).</summary>
    public int GroupSize { get; init; }

    public override string ToString() => Weight == ProjectionWeight.Dense
        ? $"dense {OutFeatures}x{InFeatures}"
        : $"int4 {OutFeatures}x{InFeatures} g{GroupSize}";
}

/// <summary>One candidate's trial: its time per call, or why it was not timed, and its error against the reference.</summary>
public sealed record KernelTrial
{
    public double? Microseconds { get; init; }

    /// <summary>‖out − ref‖ / ‖ref‖ against the shape's reference kernel (the first candidate).</summary>
    public double? RelativeError { get; init; }

    /// <summary>Why the candidate cannot be used (it threw, or its output is wrong); null when it can.</summary>
    public string? Failure { get; init; }
}

/// <summary>The candidates measured for one (shape, rows) and the one chosen.</summary>
public sealed record KernelChoice
{
    public required ProjectionShape Shape { get; init; }

    public required int Rows { get; init; }

    public required ProjectionKernel Chosen { get; init; }

    public required IReadOnlyDictionary<ProjectionKernel, KernelTrial> Trials { get; init; }

    /// <summary>The kernel <see cref="KernelSelector.PreferEnv"/> named for this shape, if any.</summary>
    public ProjectionKernel? Preferred { get; init; }

    /// <summary>One log line: every candidate's time (or failure) and the choice, marked when it was the preferred one.</summary>
    public string Describe()
    {
        var parts = Trials.Select(t => t.Value.Failure is { } failure
            ? $"{KernelSelector.Name(t.Key)} rejected ({failure})"
            : string.Create(CultureInfo.InvariantCulture, $"{KernelSelector.Name(t.Key)} {t.Value.Microseconds:F1} us"));
        var preferred = Chosen == Preferred ? $" ({KernelSelector.PreferEnv})" : "";
        return $"{Shape} rows {Rows}: {string.Join(", ", parts)} -> {KernelSelector.Name(Chosen)}{preferred}";
    }
}

/// <summary>
/// The kernel chosen per (projection shape, rows bucket). A lookup for <c>rows</c> takes the smallest measured bucket
/// that holds them (a decode step runs at its bucket's rows, padded); none (more rows than measured, or a shape not
/// measured) answers null, and the projection then uses its fixed default.
/// </summary>
public sealed class KernelTable
{
    private readonly Dictionary<ProjectionShape, SortedList<int, KernelChoice>> _choices = [];

    public KernelTable(IEnumerable<KernelChoice> choices)
    {
        foreach (var choice in choices)
        {
            if (!_choices.TryGetValue(choice.Shape, out var byRows))
            {
                byRows = [];
                _choices[choice.Shape] = byRows;
            }
            byRows[choice.Rows] = choice;
        }
    }

    public IEnumerable<KernelChoice> Choices => _choices.Values.SelectMany(c => c.Values);

    public ProjectionKernel? Lookup(ProjectionShape shape, long rows)
    {
        if (!_choices.TryGetValue(shape, out var byRows))
        {
            return null;
        }
        foreach (var (bucket, choice) in byRows)
        {
            if (bucket >= rows)
            {
                return choice.Chosen;
            }
        }
        return null;
    }
}

/// <summary>Times a call on the device: microseconds per call, the launch overhead of the host excluded where it can be.</summary>
public interface IKernelTimer
{
    double MicrosecondsPerCall(Action call);
}

/// <summary>
/// Device time per call through a CUDA graph: <see cref="Calls"/> calls are captured once and the graph is replayed
/// <see cref="Replays"/> times after a warm replay, between two device synchronizations (so the host's launch cost,
/// which a decode graph does not pay either, is left out).
/// </summary>
public sealed class GraphKernelTimer(TimeProvider time) : IKernelTimer
{
    public int Calls { get; init; } = 10;

    public int Replays { get; init; } = 2;

    public double MicrosecondsPerCall(Action call)
    {
        double microseconds;
        using (var graph = new CudaGraph())
        {
            graph.Capture(call, () =>
            {
                for (var i = 0; i < Calls; i++)
                {
                    call();
                }
            });
            graph.Replay();
            cuda.synchronize();
            var start = time.GetTimestamp();
            for (var r = 0; r < Replays; r++)
            {
                graph.Replay();
            }
            cuda.synchronize();
            microseconds = time.GetElapsedTime(start).TotalMicroseconds / (Calls * Replays);
        }
        // Each timing graph has a private pool (a dequantize candidate's holds a 16-bit weight slice) that the caching
        // allocator may keep reserved after the graph is gone: the 7B int4 server's reserved memory peaked 3.8 GiB above
        // its allocated before its decode graphs, over load and kernel selection (H100 run 14), these pools the suspect.
        // Hand the cache back before the next measurement (a no-op without liblowbit_memory.so).
        CudaMemory.EmptyCache();
        return microseconds;
    }
}

/// <summary>Time per call from <see cref="Iterations"/> eager calls after a warm-up, between device synchronizations (host launch cost included).</summary>
public sealed class StopwatchKernelTimer(TimeProvider time, Device device) : IKernelTimer
{
    public int Iterations { get; init; } = 50;

    public double MicrosecondsPerCall(Action call)
    {
        call();
        Synchronize();
        var start = time.GetTimestamp();
        for (var i = 0; i < Iterations; i++)
        {
            call();
        }
        Synchronize();
        return time.GetElapsedTime(start).TotalMicroseconds / Iterations;
    }

    private void Synchronize()
    {
        if (device.type == DeviceType.CUDA)
        {
            cuda.synchronize();
        }
    }
}

/// <summary>
/// Chooses each decode projection's kernel by measurement when a <see cref="FastDecoder"/> builds: per distinct
/// projection shape and rows bucket, every candidate the projection offers runs once on a fixed input and is compared
/// with the first candidate (the eager reference: <c>linear</c>, or dequantize + <c>linear</c>); those within
/// <see cref="Tolerance"/> are timed and the fastest is chosen. A candidate that throws or is wrong is never chosen, so a
/// slow or broken new kernel costs only its trial.
/// </summary>
public static class KernelSelector
{
    /// <summary>The fewest projection calls one timing covers (a shape with fewer copies is cycled through again).</summary>
    public const int MinimumTimedCalls = 32;

    /// <summary>Largest relative error (bf16 outputs against the bf16 eager reference) a candidate may have.</summary>
    public const double Tolerance = 2e-2;

    public static string Name(ProjectionKernel kernel) => kernel switch
    {
        ProjectionKernel.Linear => "linear",
        ProjectionKernel.NativeGemv => "native-gemv",
        ProjectionKernel.NativeGemvV2 => "native-gemv-v2",
        ProjectionKernel.Int4V1 => "int4-v1",
        ProjectionKernel.Int4V2 => "int4-v2",
        ProjectionKernel.Int4V2Wide => "int4-v2-wide",
        ProjectionKernel.Int4V2Occupancy => "int4-v2-occ",
        ProjectionKernel.Int4V2Shared => "int4-v2-shared",
        ProjectionKernel.Int4Mma => "int4-mma",
        ProjectionKernel.Int4Dequant => "int4-dequant",
        ProjectionKernel.Int4Mma16 => "int4-mma16",
        ProjectionKernel.Int4V2Half2 => "int4-v2-h2",
        ProjectionKernel.Int4V2Half2Subnormal => "int4-v2-h2s",
        ProjectionKernel.Int4V2Half2Block => "int4-v2-h2b",
        ProjectionKernel.Int4V2Half2Cluster => "int4-v2-h2c",
        _ => kernel.ToString(),
    };

    /// <summary>
    /// A diagnostic: <c>OUTxIN=kernel</c> entries, comma-separated (e.g. <c>4096x11008=int4-v2-h2b</c>), each naming the
    /// kernel to take for projections of that shape whenever it passes its trial, however fast the others (for measuring
    /// one kernel inside the decode step, where the cold timing may rank it otherwise).
    /// </summary>
    public const string PreferEnv = "LOWBIT_KERNEL_PREFER";

    /// <summary>
    /// Parses <see cref="PreferEnv"/>'s value: (out features, in features) → kernel. A malformed entry or an unknown kernel
    /// name throws an <see cref="EngineInputException"/> naming the entry and the accepted names.
    /// </summary>
    public static IReadOnlyDictionary<(long Out, long In), ProjectionKernel> ParsePreferences(string? value)
    {
        var preferences = new Dictionary<(long, long), ProjectionKernel>();
        foreach (var entry in (value ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var parts = entry.Split('=', 2, StringSplitOptions.TrimEntries);
            var dims = parts[0].Split('x');
            var kernel = Enum.GetValues<ProjectionKernel>().Where(k => parts.Length == 2 && Name(k) == parts[1]).Select(k => (ProjectionKernel?)k).FirstOrDefault();
            if (dims.Length != 2 || !long.TryParse(dims[0], CultureInfo.InvariantCulture, out var outFeatures)
                || !long.TryParse(dims[1], CultureInfo.InvariantCulture, out var inFeatures) || kernel is null)
            {
                throw new EngineInputException(
                    $"{PreferEnv}: '{entry}' is not OUTxIN=kernel (e.g. 4096x11008=int4-v2-h2b); kernels: {string.Join(", ", Enum.GetValues<ProjectionKernel>().Select(Name))}");
            }
            preferences[(outFeatures, inFeatures)] = kernel.Value;
        }
        return preferences;
    }

    /// <summary>
    /// The pure choice: the fastest candidate whose trial succeeded and (unless it is the reference, the first)
    /// is within <see cref="Tolerance"/>; the reference when none is. A <paramref name="preferred"/> kernel whose trial
    /// succeeded is chosen whatever its time (<see cref="PreferEnv"/>).
    /// </summary>
    public static KernelChoice Choose(ProjectionShape shape, int rows, IReadOnlyList<ProjectionKernel> candidates, Func<ProjectionKernel, KernelTrial> trial, ProjectionKernel? preferred = null)
    {
        ArgumentOutOfRangeException.ThrowIfZero(candidates.Count);
        var trials = new Dictionary<ProjectionKernel, KernelTrial>();
        foreach (var candidate in candidates)
        {
            var result = trial(candidate);
            if (result.Failure is null && candidate != candidates[0] && !(result.RelativeError <= Tolerance))
            {
                result = result with { Failure = string.Create(CultureInfo.InvariantCulture, $"relative error {result.RelativeError:E2} over {Tolerance:E0}") };
            }
            trials[candidate] = result;
        }
        var chosen = trials.Where(t => t.Value.Failure is null && t.Value.Microseconds is not null)
            .OrderBy(t => t.Key == preferred ? 0 : 1)
            .ThenBy(t => t.Value.Microseconds!.Value)
            .Select(t => (ProjectionKernel?)t.Key)
            .FirstOrDefault() ?? candidates[0];
        return new KernelChoice { Shape = shape, Rows = rows, Chosen = chosen, Trials = trials, Preferred = preferred };
    }

    /// <summary>
    /// Measures every distinct shape of <paramref name="projections"/> at each of <paramref name="rows"/> (only where
    /// the projection offers more than one candidate) on <paramref name="device"/> in <paramref name="dtype"/>. The first
    /// projection of a shape checks each candidate against the reference; the timed call runs the candidate over every
    /// projection of that shape in turn (one per layer), at least <see cref="MinimumTimedCalls"/> calls, and the time is
    /// per call. So each weight is read cold, as in the decode step, where a layer's weight was last read a whole model
    /// ago: a 7B's 32 copies of one shape are 0.3-5.8 GB, far beyond a 50 MB L2. (Timed back to back on one weight, a
    /// weight under 50 MB came from the L2; flushing the L2 before each call and subtracting the flush, as session 11 did,
    /// left a difference of two ~40 µs timings for 5-30 µs kernels, and chose dequantize + cuBLAS for the 7B's int4
    /// 4,096 × 4,096 at one row, which reads 8 times the bytes: 309.8 → 251.5 tokens/s on the H100, docs/gpu.md run 18.)
    /// </summary>
    public static KernelTable Measure(IEnumerable<Projection> projections, IReadOnlyList<int> rows, DecodeKernels kernels, IKernelTimer timer, ScalarType dtype, Device device)
    {
        var choices = new List<KernelChoice>();
        var preferences = ParsePreferences(Environment.GetEnvironmentVariable(PreferEnv));
        using var noGrad = no_grad();
        foreach (var group in projections.Where(p => p.Shape is not null).GroupBy(p => p.Shape!))
        {
            var (shape, projection, members) = (group.Key, group.First(), group.ToList());
            var cycles = (MinimumTimedCalls + members.Count - 1) / members.Count;
            foreach (var count in rows)
            {
                var candidates = projection.Candidates(count, kernels);
                if (candidates.Count < 2)
                {
                    continue;
                }
                using var scope = NewDisposeScope();
                // A fixed, reproducible input (the global random generator is left alone).
                var x = arange(Scalars.Of(0), Scalars.Of(count * shape.InFeatures), Scalars.One, ScalarType.Float32, device)
                    .mul(Scalars.Of(0.37)).sin().reshape(count, shape.InFeatures).to(dtype);
                var reference = projection.Run(x, candidates[0]).to(ScalarType.Float32);
                var referenceNorm = Math.Max(1e-30, reference.norm().item<float>());
                var preferred = preferences.TryGetValue((shape.OutFeatures, shape.InFeatures), out var p) ? p : (ProjectionKernel?)null;
                choices.Add(Choose(shape, count, candidates, kernel =>
                {
                    try
                    {
                        using var trialScope = NewDisposeScope();
                        var error = (projection.Run(x, kernel).to(ScalarType.Float32) - reference).norm().item<float>() / referenceNorm;
                        if (!double.IsFinite(error))
                        {
                            return new KernelTrial { RelativeError = error, Failure = "non-finite output" };
                        }
                        var microseconds = timer.MicrosecondsPerCall(() =>
                        {
                            for (var c = 0; c < cycles; c++)
                            {
                                foreach (var member in members)
                                {
                                    using var callScope = NewDisposeScope();
                                    member.Run(x, kernel);
                                }
                            }
                        }) / (cycles * members.Count);
                        return new KernelTrial { Microseconds = microseconds, RelativeError = error };
                    }
                    catch (Exception e) when (e is InvalidOperationException or ExternalException or ArgumentException)
                    {
                        return new KernelTrial { Failure = e.Message };
                    }
                }, preferred));
            }
        }
        return new KernelTable(choices);
    }
}
