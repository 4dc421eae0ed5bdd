using Lowbit.Engine.Decoding;
using Lowbit.Engine.Quantization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests;

public class KernelSelectionTests
{
    private static readonly ProjectionShape Dense = new() { Weight = ProjectionWeight.Dense, OutFeatures = 12, InFeatures = 16 };

    private static readonly ProjectionShape Int4 = new() { Weight = ProjectionWeight.Int4, OutFeatures = 12, InFeatures = 64, GroupSize = 32 };

    private static KernelTrial Timed(double microseconds, double error = 1e-3) => new() { Microseconds = microseconds, RelativeError = error };

    [Fact]
    public void Does_choose_the_fastest_candidate_that_matches_the_reference()
    {
        var trials = new Dictionary<ProjectionKernel, KernelTrial>
        {
            [ProjectionKernel.Int4Dequant] = Timed(900, 0),
            [ProjectionKernel.Int4V1] = Timed(40),
            [ProjectionKernel.Int4V2] = Timed(25),
        };

        var choice = KernelSelector.Choose(Int4, 1, [.. trials.Keys], k => trials[k]);

        Assert.Equal(ProjectionKernel.Int4V2, choice.Chosen);
        Assert.Equal(3, choice.Trials.Count);
        Assert.Contains("int4-v2 25.0 us", choice.Describe(), StringComparison.Ordinal);
        Assert.EndsWith("-> int4-v2", choice.Describe(), StringComparison.Ordinal);
    }

    [Fact]
    public void Does_never_choose_a_wrong_or_failing_kernel_however_fast()
    {
        var trials = new Dictionary<ProjectionKernel, KernelTrial>
        {
            [ProjectionKernel.Int4Dequant] = Timed(900, 0),
            [ProjectionKernel.Int4V1] = new() { Failure = "launch failed" },
            [ProjectionKernel.Int4V2] = Timed(1, error: 0.5),
        };

        var choice = KernelSelector.Choose(Int4, 2, [.. trials.Keys], k => trials[k]);

        Assert.Equal(ProjectionKernel.Int4Dequant, choice.Chosen);
        Assert.Contains("relative error", choice.Trials[ProjectionKernel.Int4V2].Failure, StringComparison.Ordinal);
        Assert.Contains("int4-v1 rejected (launch failed)", choice.Describe(), StringComparison.Ordinal);
    }

    [Fact]
    public void Does_take_a_preferred_kernel_that_passed_its_trial_but_never_a_failed_one()
    {
        var trials = new Dictionary<ProjectionKernel, KernelTrial>
        {
            [ProjectionKernel.Int4Dequant] = Timed(900, 0),
            [ProjectionKernel.Int4V2Shared] = Timed(10),
            [ProjectionKernel.Int4V2Half2Block] = Timed(12),
            [ProjectionKernel.Int4V2Half2] = Timed(5, error: 0.5),
        };

        var preferred = KernelSelector.Choose(Int4, 1, [.. trials.Keys], k => trials[k], ProjectionKernel.Int4V2Half2Block);
        Assert.Equal(ProjectionKernel.Int4V2Half2Block, preferred.Chosen);
        Assert.EndsWith("-> int4-v2-h2b (LOWBIT_KERNEL_PREFER)", preferred.Describe(), StringComparison.Ordinal);
        var refused = KernelSelector.Choose(Int4, 1, [.. trials.Keys], k => trials[k], ProjectionKernel.Int4V2Half2);
        Assert.Equal(ProjectionKernel.Int4V2Shared, refused.Chosen);
        Assert.EndsWith("-> int4-v2-shared", refused.Describe(), StringComparison.Ordinal);
        Assert.Equal(ProjectionKernel.Int4V2Shared, KernelSelector.Choose(Int4, 1, [.. trials.Keys], k => trials[k], ProjectionKernel.Int4Mma).Chosen);
    }

    [Fact]
    public void Does_parse_kernel_preferences_and_name_a_bad_entry()
    {
        var preferences = KernelSelector.ParsePreferences(" 4096x11008=int4-v2-h2b, 12288x4096=int4-v2-h2s");

        Assert.Equal(ProjectionKernel.Int4V2Half2Block, preferences[(4096, 11008)]);
        Assert.Equal(ProjectionKernel.Int4V2Half2Subnormal, preferences[(12288, 4096)]);
        Assert.Empty(KernelSelector.ParsePreferences(null));
        var error = Assert.Throws<EngineInputException>(() => KernelSelector.ParsePreferences("4096x11008=int4-v9"));
        Assert.Contains("LOWBIT_KERNEL_PREFER: '4096x11008=int4-v9'", error.Message, StringComparison.Ordinal);
        Assert.Contains("int4-v2-h2b", error.Message, StringComparison.Ordinal);
        Assert.Throws<EngineInputException>(() => KernelSelector.ParsePreferences("4096=int4-v2"));
    }

    [Fact]
    public void Does_keep_the_reference_when_nothing_could_be_timed()
    {
        var choice = KernelSelector.Choose(Dense, 4, [ProjectionKernel.Linear, ProjectionKernel.NativeGemv], _ => new KernelTrial { Failure = "no graph" });

        Assert.Equal(ProjectionKernel.Linear, choice.Chosen);
    }

    [Fact]
    public void Does_look_up_the_smallest_measured_bucket_that_holds_the_rows()
    {
        KernelChoice At(int rows, ProjectionKernel kernel) => new()
        {
            Shape = Dense, Rows = rows, Chosen = kernel, Trials = new Dictionary<ProjectionKernel, KernelTrial>(),
        };
        var table = new KernelTable([At(1, ProjectionKernel.NativeGemv), At(2, ProjectionKernel.NativeGemv), At(4, ProjectionKernel.Linear), At(16, ProjectionKernel.Linear)]);

        Assert.Equal(ProjectionKernel.NativeGemv, table.Lookup(Dense, 1));
        Assert.Equal(ProjectionKernel.NativeGemv, table.Lookup(Dense with { }, 2));
        Assert.Equal(ProjectionKernel.Linear, table.Lookup(Dense, 3));
        Assert.Equal(ProjectionKernel.Linear, table.Lookup(Dense, 9));
        Assert.Null(table.Lookup(Dense, 17));
        Assert.Null(table.Lookup(Int4, 1));
    }

    [Fact]
    public void Does_measure_each_shape_once_per_bucket_and_choose_by_the_timer()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var weight = randn(12, 16);
        // Two projections of one shape (measured once) and one of another.
        using var first = new FakeProjection(weight, fastest: ProjectionKernel.NativeGemv);
        using var same = new FakeProjection(weight.clone(), fastest: ProjectionKernel.NativeGemv);
        using var other = new FakeProjection(randn(8, 16), fastest: ProjectionKernel.Linear);
        var timer = new LastKernelTimer([first, same, other]);

        var table = KernelSelector.Measure([first, same, other], [1, 2, 4], DecodeKernels.Eager, timer, ScalarType.Float32, CPU);

        Assert.Equal(6, table.Choices.Count());
        // The second copy of a shape is timed (cycled through with the first) but not checked against the reference.
        Assert.Equal(3 * 2 * KernelSelector.MinimumTimedCalls / 2, same.Runs);
        Assert.Equal(same.Runs + (3 * (1 + 2)), first.Runs);
        Assert.Equal(ProjectionKernel.NativeGemv, table.Lookup(first.Shape, 3));
        Assert.Equal(ProjectionKernel.Linear, table.Lookup(other.Shape, 1));
        Assert.All(table.Choices, c => Assert.Equal(0, c.Trials[ProjectionKernel.Linear].RelativeError));
    }

    [Fact]
    public void Does_reject_a_kernel_whose_output_differs_from_the_reference()
    {
        using var scope = NewDisposeScope();
        using var broken = new FakeProjection(randn(12, 16), fastest: ProjectionKernel.NativeGemv, brokenGemv: true);

        var table = KernelSelector.Measure([broken], [1], DecodeKernels.Eager, new LastKernelTimer([broken]), ScalarType.Float32, CPU);

        var choice = Assert.Single(table.Choices);
        Assert.Equal(ProjectionKernel.Linear, choice.Chosen);
        Assert.NotNull(choice.Trials[ProjectionKernel.NativeGemv].Failure);
    }

    [Fact]
    public void Does_force_cublas_when_the_native_gemv_is_off_whatever_was_measured()
    {
        using var scope = NewDisposeScope();
        using var projection = new DenseProjection(zeros(12, 16), null);
        var table = new KernelTable(
        [
            new KernelChoice { Shape = projection.Shape, Rows = 1, Chosen = ProjectionKernel.Linear, Trials = new Dictionary<ProjectionKernel, KernelTrial>() },
            new KernelChoice { Shape = projection.Shape, Rows = 8, Chosen = ProjectionKernel.NativeGemv, Trials = new Dictionary<ProjectionKernel, KernelTrial>() },
            new KernelChoice { Shape = projection.Shape, Rows = 16, Chosen = ProjectionKernel.NativeGemvV2, Trials = new Dictionary<ProjectionKernel, KernelTrial>() },
        ]);
        var measured = new DecodeKernels { Native = true, NativeGemv = true, Table = table };

        Assert.Equal(ProjectionKernel.Linear, projection.Choose(1, cuda: true, measured));
        Assert.Equal(ProjectionKernel.NativeGemv, projection.Choose(5, cuda: true, measured));
        Assert.Equal(ProjectionKernel.Linear, projection.Choose(5, cuda: true, measured with { NativeGemv = false }));
        Assert.Equal(ProjectionKernel.Linear, projection.Choose(5, cuda: false, measured));
        Assert.Equal(ProjectionKernel.Linear, projection.Choose(32, cuda: true, measured));
        // The v2 library is not loaded here: a measured v2 choice it cannot take falls back to the default.
        Assert.False(NativeKernelsV2.GemvSupports(12, 16));
        Assert.Equal(ProjectionKernel.Linear, projection.Choose(12, cuda: true, measured));
        // Unmeasured: the fixed default.
        var unmeasured = measured with { Table = null };
        Assert.Equal(ProjectionKernel.NativeGemv, projection.Choose(DenseProjection.NativeGemvMaxRows, cuda: true, unmeasured));
        Assert.Equal(ProjectionKernel.Linear, projection.Choose(DenseProjection.NativeGemvMaxRows + 1, cuda: true, unmeasured));
    }

    [Fact]
    public void Does_use_only_an_int4_kernel_that_takes_the_rows()
    {
        using var scope = NewDisposeScope();
        using var q = Rtn.Quantize(randn(12, 64), new RtnOptions { Bits = 4, GroupSize = 32 });
        using var projection = new Int4Projection(Int4Weight.From(q), null);
        KernelChoice At(int rows, ProjectionKernel kernel) => new()
        {
            Shape = projection.Shape, Rows = rows, Chosen = kernel, Trials = new Dictionary<ProjectionKernel, KernelTrial>(),
        };
        var kernels = new DecodeKernels { Native = true, NativeGemv = true, Table = new KernelTable([At(1, ProjectionKernel.Int4V2), At(4, ProjectionKernel.Int4Dequant)]) };

        // v2 is not loaded here (no native library): its measured choice falls back to the first int4 GEMV.
        Assert.False(NativeKernelsV2.Int4Supports(1, 64));
        Assert.Equal(ProjectionKernel.Int4V1, projection.Choose(1, cuda: true, kernels));
        Assert.Equal(ProjectionKernel.Int4Dequant, projection.Choose(3, cuda: true, kernels));
        Assert.Equal(ProjectionKernel.Int4V1, projection.Choose(16, cuda: true, kernels));
        Assert.Equal(ProjectionKernel.Int4Dequant, projection.Choose(17, cuda: true, kernels));
        Assert.Equal(ProjectionKernel.Int4Dequant, projection.Choose(1, cuda: false, kernels));
        Assert.Equal([ProjectionKernel.Int4Dequant], projection.Candidates(1, kernels));
    }

    /// <summary>A dense projection offering <c>linear</c> and a "native GEMV" (torch's matmul, or a wrong result).</summary>
    private sealed class FakeProjection(Tensor weight, ProjectionKernel fastest, bool brokenGemv = false) : Projection
    {
        public ProjectionKernel Fastest { get; } = fastest;

        public ProjectionKernel? Last { get; private set; }

        public int Runs { get; private set; }

        public Action? Ran { get; set; }

        public void ResetLast() => Last = null;

        public override long OutFeatures => weight.shape[0];

        public override ProjectionShape Shape => new() { Weight = ProjectionWeight.Dense, OutFeatures = weight.shape[0], InFeatures = weight.shape[1] };

        public override IReadOnlyList<ProjectionKernel> Candidates(int rows, DecodeKernels kernels) => [ProjectionKernel.Linear, ProjectionKernel.NativeGemv];

        public override Tensor Run(Tensor x, ProjectionKernel kernel)
        {
            Last = kernel;
            Runs++;
            Ran?.Invoke();
            var output = x.matmul(weight.t());
            return kernel == ProjectionKernel.NativeGemv && brokenGemv ? output.mul(Scalars.Of(2)) : output;
        }

        public override Tensor Forward(Tensor x, DecodeKernels kernels) => Run(x, ProjectionKernel.Linear);

        public override void Dispose() => weight.Dispose();
    }

    [Fact]
    public void Does_time_a_shape_over_all_its_copies_in_turn_and_report_per_call()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var copies = Enumerable.Range(0, 3).Select(_ => new FakeProjection(randn(12, 16), fastest: ProjectionKernel.NativeGemv)).ToList();
        var order = new List<int>();
        foreach (var (copy, i) in copies.Select((c, i) => (c, i)))
        {
            copy.Ran = () => order.Add(i);
        }
        // 5 µs per projection call in the timed action, whatever the action is.
        var timer = new PerRunTimer(copies, 5.0);

        var table = KernelSelector.Measure(copies, [1], DecodeKernels.Eager, timer, ScalarType.Float32, CPU);

        var choice = Assert.Single(table.Choices);
        Assert.All(choice.Trials.Values, t => Assert.Equal(5.0, t.Microseconds!.Value, 6));
        // Each timing: the copies in order, cycled until at least MinimumTimedCalls calls (32 → 11 cycles of 3).
        var cycles = (KernelSelector.MinimumTimedCalls + 2) / 3;
        Assert.Equal(cycles * 3, timer.LastRuns);
        var timed = order.TakeLast(cycles * 3).ToList();
        Assert.Equal(Enumerable.Range(0, cycles).SelectMany(_ => new[] { 0, 1, 2 }), timed);
        copies.ForEach(c => c.Dispose());
    }

    /// <summary>Runs the call once and answers <paramref name="perRun"/> µs for each projection run it made.</summary>
    private sealed class PerRunTimer(IReadOnlyList<FakeProjection> projections, double perRun) : IKernelTimer
    {
        public int LastRuns { get; private set; }

        public double MicrosecondsPerCall(Action call)
        {
            var before = projections.Sum(p => p.Runs);
            call();
            LastRuns = projections.Sum(p => p.Runs) - before;
            return perRun * LastRuns;
        }
    }

    /// <summary>Runs the call once and answers 10 µs for the projection's fastest kernel, 50 µs for any other.</summary>
    private sealed class LastKernelTimer(IReadOnlyList<FakeProjection> projections) : IKernelTimer
    {
        public double MicrosecondsPerCall(Action call)
        {
            foreach (var p in projections)
            {
                p.ResetLast();
            }
            call();
            var ran = projections.First(p => p.Last is not null);
            return ran.Last == ran.Fastest ? 10 : 50;
        }
    }
}
