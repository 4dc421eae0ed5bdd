using System.Globalization;
using System.Text.Json;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.DevTools;

/// <summary>
/// Hidden <c>bench-kernels [--device cuda|cpu] [--shapes 7b|13b|70b|tiny] [--rows 1,2,4,8,16,32] [--groups 64,128]
/// [--iterations 50] [--dtype bfloat16] [--warm]</c>: the decode step's kernels one by one, each projection timed
/// over copies of its weight in turn (<see cref="RotationBytes"/> of them), so each read is cold as in the decode step,
/// where a layer's weights were last read a whole model ago, unless <c>--warm</c>. For each projection shape (7B: QKV
/// 12288×4096, O 4096×4096, gate/up 22016×4096, down 4096×11008, lm_head 32000×4096; 13B and 70B on request) and rows, every kernel a decode
/// projection can run (<see cref="ProjectionKernel"/>: <c>linear</c> = cuBLAS, the native GEMVs v1 and v2, the int4 GEMVs v1 and v2,
/// dequantize + <c>linear</c>), then attention at context 256, RMSNorm, RoPE, SiLU·mul at 1 and 32 rows, and a device copy.
/// One JSON line each: microseconds per call, the weight bytes read, effective GB/s and its fraction of the reference
/// bandwidth (the H200's measured 4,280 GB/s device copy), and for the GEMVs the relative error against the eager
/// reference. Timing: CUDA graphs of 10 calls replayed after a warm-up (≥ <c>--iterations</c> calls; device time, no host
/// launch cost) with the native library, else synchronize + stopwatch. On CPU it runs tiny shapes (the tests' check).
/// </summary>
public static class BenchKernelsVerb
{
    /// <summary>The H200's measured device-to-device copy bandwidth (docs/gpu.md), the reference for GB/s.</summary>
    public const double ReferenceGbPerSecond = 4280;

    private sealed record Shape(string Name, long Out, long In);

    private static readonly Shape[] Llama7B =
    [
        new("qkv", 12288, 4096), new("o", 4096, 4096), new("gate_up", 22016, 4096), new("down", 4096, 11008), new("lm_head", 32000, 4096),
    ];

    // Llama-2-13B (hidden 5,120, 40 heads, intermediate 13,824) and Llama-2-70B (8,192, 64 heads over 8 kv heads,
    // 28,672): the one-row GEMVs past K = 4,096 (--shapes 13b, 70b).
    private static readonly Shape[] Llama13B =
    [
        new("qkv", 15360, 5120), new("o", 5120, 5120), new("gate_up", 27648, 5120), new("down", 5120, 13824), new("lm_head", 32000, 5120),
    ];

    private static readonly Shape[] Llama70B =
    [
        new("qkv", 10240, 8192), new("o", 8192, 8192), new("gate_up", 57344, 8192), new("down", 8192, 28672), new("lm_head", 32000, 8192),
    ];

    private static readonly Shape[] Tiny =
    [
        new("qkv", 384, 128), new("o", 128, 128), new("gate_up", 704, 128), new("down", 128, 384), new("lm_head", 256, 128),
    ];

    private sealed record Dims(int Hidden, int Heads, int KvHeads, int HeadDim, int Intermediate, int Context);

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        string? Get(string flag) => Array.IndexOf(args, flag) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        int[] Ints(string flag, int[] fallback)
        {
            if (Get(flag) is not { } text)
            {
                return fallback;
            }
            var values = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(v => int.TryParse(v, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : -1).ToArray();
            return values.Length > 0 && values.All(v => v > 0) ? values : throw new ProtocolArgumentException(flag, text, "comma-separated positive integers");
        }
        var device = TorchRuntime.ResolveDevice(Get("--device") is { } d ? ProtocolNames.TryParse<ComputeDevice>(d, out var parsed) ? parsed : throw new ProtocolArgumentException("--device", d, "cuda, cpu") : null);
        var cuda = device.type == DeviceType.CUDA;
        var shapesName = Get("--shapes") ?? (cuda ? "7b" : "tiny");
        var (shapes, dims) = shapesName switch
        {
            "7b" => (Llama7B, new Dims(4096, 32, 32, 128, 11008, 256)),
            "13b" => (Llama13B, new Dims(5120, 40, 40, 128, 13824, 256)),
            "70b" => (Llama70B, new Dims(8192, 64, 8, 128, 28672, 256)),
            "tiny" => (Tiny, new Dims(128, 4, 2, 32, 192, 16)),
            _ => throw new ProtocolArgumentException("--shapes", shapesName, "7b, 13b, 70b, tiny"),
        };
        var rows = Ints("--rows", cuda ? [1, 2, 4, 8, 16, 32] : [1, 2]);
        var groups = Ints("--groups", [64, 128]);
        var iterations = Ints("--iterations", [50])[0];
        var dtype = Get("--dtype") is { } name ? ModelIo.ParseDtype(name) : ScalarType.BFloat16;
        if (groups.Any(g => g % 32 != 0 || shapes.Any(s => s.In % g != 0)))
        {
            throw new ProtocolArgumentException("--groups", string.Join(",", groups), "multiples of 32 that divide every shape's input width");
        }
        var native = cuda && NativeKernels.Available;
        var kernels = new DecodeKernels { Native = native, NativeGemv = native };
        IKernelTimer timer = native
            ? new GraphKernelTimer(TimeProvider.System) { Calls = 10, Replays = Math.Max(1, (iterations + 9) / 10) }
            : new StopwatchKernelTimer(TimeProvider.System, device) { Iterations = iterations };
        // Cold by default, as the decode step reads a projection's weight (last read a whole model ago): each timing cycles
        // through copies of the weight, RotationBytes in all; --warm times one copy back to back (under ~50 MB: the L2).
        var cold = native && !args.Contains("--warm");
        int Copies(long bytes) => cold ? (int)Math.Max(1, (RotationBytes + bytes - 1) / bytes) : 1;
        var timing = native ? (cold ? $"cuda-graph, each call on the next of {RotationBytes >> 20} MiB of weight copies (L2 cold)" : "cuda-graph, warm L2") : "stopwatch";
        var common = new Dictionary<string, object>
        {
            ["device"] = cuda ? "cuda" : "cpu", ["dtype"] = ModelIo.DtypeName(dtype), ["timing"] = timing, ["iterations"] = iterations,
        };
        Emit(stdout, new Dictionary<string, object>(common)
        {
            ["event"] = "bench-kernels", ["shapes"] = shapesName, ["native"] = NativeKernels.Status, ["v2"] = NativeKernelsV2.Status,
            ["referenceGbPerSecond"] = ReferenceGbPerSecond,
        });
        using var noGrad = no_grad();
        manual_seed(20261205);
        foreach (var shape in shapes)
        {
            using var scope = NewDisposeScope();
            var master = randn([shape.Out, shape.In], ScalarType.Float32, device).mul_(Scalars.Of(0.02));
            var denseBytes = shape.Out * shape.In * ElementSize(dtype);
            var dense = Enumerable.Range(0, Copies(denseBytes)).Select(_ => new DenseProjection(master.to(dtype).clone(), null)).ToList();
            var int4 = groups.Select(g =>
            {
                var bytes = Int4Bytes(shape, g);
                return Enumerable.Range(0, Copies(bytes)).Select(_ =>
                {
                    using var q = Rtn.Quantize(master, new RtnOptions { Bits = 4, GroupSize = g });
                    return new Int4Projection(Int4Weight.From(q).MoveToOuterDisposeScope(), null);
                }).ToList();
            }).ToList();
            try
            {
                foreach (var count in rows)
                {
                    using var rowScope = NewDisposeScope();
                    var x = randn([count, shape.In], dtype, device);
                    GemvLines(stdout, common, shape, count, 0, dense, x, kernels, timer, denseBytes);
                    foreach (var copies in int4)
                    {
                        var group = copies[0].Weight.GroupSize;
                        GemvLines(stdout, common, shape, count, group, copies, x, kernels, timer, Int4Bytes(shape, group));
                        FusedLines(stdout, common, shape, count, group, copies, kernels, timer, Int4Bytes(shape, group));
                    }
                }
            }
            finally
            {
                dense.ForEach(p => p.Dispose());
                int4.SelectMany(c => c).ToList().ForEach(p => p.Dispose());
            }
        }
        StepLines(stdout, common, dims, (rows.Contains(32) ? new[] { 1, 32 } : [1, rows.Max()]).Distinct().ToArray(), native, timer, dtype, device);
        stderr.WriteLine($"bench-kernels: {shapes.Length} shapes x {rows.Length} row counts, timing {timing}; native: {NativeKernels.Status}; v2 kernels: {NativeKernelsV2.Status}");
        return EngineExitCodes.Ok;
    }

    /// <summary>Weight bytes timings cycle through per kernel (copies of one weight): 5 × the 50 MB L2 of an H100/H200.</summary>
    public const long RotationBytes = 256L << 20;

    /// <summary>Packed 4-bit weights plus a 16-bit scale and zero per group.</summary>
    private static long Int4Bytes(Shape shape, int group) => (shape.Out * shape.In / 2) + (2 * shape.Out * (shape.In / group) * 2);

    /// <summary>
    /// Each candidate of <paramref name="copies"/>[0] checked against its reference, then timed over every copy in turn
    /// (the same weight, so the same output; each read cold when the copies outgrow the L2), per call.
    /// </summary>
    private static void GemvLines(TextWriter stdout, Dictionary<string, object> common, Shape shape, int rows, int group, IReadOnlyList<Projection> copies, Tensor x, DecodeKernels kernels, IKernelTimer timer, long bytes)
    {
        var projection = copies[0];
        var candidates = projection.Candidates(rows, kernels);
        var reference = projection.Run(x, candidates[0]).to(ScalarType.Float32);
        var norm = Math.Max(1e-30, reference.norm().item<float>());
        foreach (var kernel in candidates)
        {
            using var scope = NewDisposeScope();
            var line = new Dictionary<string, object>(common)
            {
                ["event"] = "bench-kernel", ["kernel"] = KernelSelector.Name(kernel), ["shape"] = shape.Name, ["n"] = shape.Out, ["k"] = shape.In,
                ["group"] = group, ["rows"] = rows, ["weightBytes"] = bytes, ["copies"] = copies.Count,
            };
            try
            {
                line["relativeError"] = Math.Round((projection.Run(x, kernel).to(ScalarType.Float32) - reference).norm().item<float>() / norm, 6);
                AddRate(line, ColdMicroseconds(timer, copies, copy => copy.Run(x, kernel)), bytes);
            }
            catch (Exception e) when (e is InvalidOperationException or System.Runtime.InteropServices.ExternalException)
            {
                line["error"] = e.Message;
            }
            Emit(stdout, line);
        }
    }

    /// <summary>
    /// The fused variant the decode step runs for this shape's role (the Llama step with the gate/up epilogue on: q/k/v
    /// with the RMSNorm prologue, the output and down projections with the residual add, gate/up with the RMSNorm
    /// prologue and the SiLU·mul epilogue at one row, else the RMSNorm prologue), through each int4 kernel that has it,
    /// timed cold like <see cref="GemvLines"/> (<c>"event":"bench-kernel-fused"</c>, with the plain kernel's line beside
    /// it the difference is the prologue's and epilogue's cost per call; docs/gpu.md plan item 1). The reference is the
    /// same fusion done by torch around dequantize + <c>linear</c>. No line for lm_head; a kernel without the variant gets
    /// an <c>error</c> line.
    /// </summary>
    private static void FusedLines(TextWriter stdout, Dictionary<string, object> common, Shape shape, int rows, int group, IReadOnlyList<Int4Projection> copies, DecodeKernels kernels, IKernelTimer timer, long bytes)
    {
        (Int4Prologue, bool)? role = shape.Name switch
        {
            "qkv" => (Int4Prologue.RmsNorm, false),
            "o" or "down" => (Int4Prologue.None, true),
            "gate_up" => (rows == 1 ? Int4Prologue.RmsNormSiluMul : Int4Prologue.RmsNorm, false),
            _ => null,
        };
        if (role is not var (prologue, residual))
        {
            return;
        }
        using var scope = NewDisposeScope();
        var device = copies[0].Weight.Packed.device;
        var dtype = ScalarType.BFloat16; // the fused variants' one dtype, whatever --dtype the plain lines take
        var x = randn([rows, shape.In], dtype, device);
        var normWeight = prologue == Int4Prologue.None ? null : rand([shape.In], ScalarType.Float32, device).add_(Scalars.Of(0.5)).to(dtype);
        var residualInput = residual ? randn([rows, shape.Out], dtype, device) : null;
        const double eps = 1e-5;
        var projection = copies[0];
        var candidates = projection.Candidates(rows, kernels);
        DecodeKernels With(ProjectionKernel kernel, bool emulate) => kernels with
        {
            Table = new KernelTable([new KernelChoice { Shape = projection.Shape, Rows = rows, Chosen = kernel, Trials = new Dictionary<ProjectionKernel, KernelTrial>() }]),
            EmulateFusion = emulate,
        };
        var reference = projection.RunFused(x, With(candidates[0], emulate: true), prologue, normWeight, eps, residualInput)!.to(ScalarType.Float32);
        var norm = Math.Max(1e-30, reference.norm().item<float>());
        foreach (var kernel in candidates)
        {
            using var callScope = NewDisposeScope();
            var line = new Dictionary<string, object>(common)
            {
                ["event"] = "bench-kernel-fused", ["kernel"] = KernelSelector.Name(kernel), ["shape"] = shape.Name, ["n"] = shape.Out, ["k"] = shape.In,
                ["group"] = group, ["rows"] = rows, ["prologue"] = prologue.ToString(), ["residual"] = residual, ["weightBytes"] = bytes, ["copies"] = copies.Count,
            };
            var fused = With(kernel, emulate: false);
            if (projection.FusedVariant(rows, dtype, fused, prologue, residual) == 0)
            {
                line["error"] = "no fused variant for these rows";
                Emit(stdout, line);
                continue;
            }
            try
            {
                var output = projection.RunFused(x, fused, prologue, normWeight, eps, residualInput) ?? throw new InvalidOperationException("the fused variant refused its input");
                line["relativeError"] = Math.Round((output.to(ScalarType.Float32) - reference).norm().item<float>() / norm, 6);
                AddRate(line, ColdMicroseconds(timer, copies, copy => copy.RunFused(x, fused, prologue, normWeight, eps, residualInput)), bytes);
            }
            catch (Exception e) when (e is InvalidOperationException or System.Runtime.InteropServices.ExternalException)
            {
                line["error"] = e.Message;
            }
            Emit(stdout, line);
        }
    }

    /// <summary><paramref name="call"/> over every copy in turn inside one timing (each read cold once the copies outgrow the L2), µs per call.</summary>
    private static double ColdMicroseconds<T>(IKernelTimer timer, IReadOnlyList<T> copies, Action<T> call) => timer.MicrosecondsPerCall(() =>
    {
        foreach (var copy in copies)
        {
            using var scope = NewDisposeScope();
            call(copy);
        }
    }) / copies.Count;

    /// <summary>The decode step's other parts at <paramref name="batches"/> rows: attention over the cache, RMSNorm, RoPE, SiLU·mul, and a device copy.</summary>
    private static void StepLines(TextWriter stdout, Dictionary<string, object> common, Dims dims, int[] batches, bool native, IKernelTimer timer, ScalarType dtype, Device device)
    {
        var kind = native ? "native" : "eager";
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            var size = ElementSize(dtype);
            // Attention as the decode step runs it: grouped queries against the cache slice [batch, kv, context, d].
            var keys = randn([batch, dims.Context, dims.KvHeads, dims.HeadDim], dtype, device);
            var values = randn([batch, dims.Context, dims.KvHeads, dims.HeadDim], dtype, device);
            var (cacheK, cacheV) = (keys.transpose(1, 2), values.transpose(1, 2));
            var query = randn([batch, dims.KvHeads, dims.Heads / dims.KvHeads, dims.HeadDim], dtype, device);
            var mask = zeros([batch, 1, 1, dims.Context], dtype, device);
            Part(stdout, common, "attention-sdpa", batch, dims.Context, 2L * batch * dims.Context * dims.KvHeads * dims.HeadDim * size, timer,
                () => nn.functional.scaled_dot_product_attention(query, cacheK, cacheV, attn_mask: mask));
            if (native && NativeKernelsV2.AttentionSupports(batch, dims.Heads, dims.KvHeads, dims.HeadDim, dims.Context))
            {
                // The native decode attention on the same cache (every row at the last position), and fused with RoPE and
                // the cache write as the fused decode step runs it.
                var positions = full([batch], Scalars.Of(dims.Context - 1), ScalarType.Int64, device);
                var arrivals = zeros([batch * dims.KvHeads], ScalarType.Int32, device);
                var q = randn([batch, dims.Heads * dims.HeadDim], dtype, device);
                var qkv = randn([batch, (dims.Heads + (2 * dims.KvHeads)) * dims.HeadDim], dtype, device);
                var (ropeCos, ropeSin) = (randn([batch, dims.HeadDim], dtype, device), randn([batch, dims.HeadDim], dtype, device));
                var attended = empty([batch, dims.Heads * dims.HeadDim], dtype, device);
                var bytes = 2L * batch * dims.Context * dims.KvHeads * dims.HeadDim * size;
                Part(stdout, common, "attention-native", batch, dims.Context, bytes, timer,
                    () => NativeKernelsV2.DecodeAttention(q, keys, values, positions, arrivals, dims.Context, attended));
                Part(stdout, common, "rope-attention-native", batch, dims.Context, bytes, timer,
                    () => NativeKernelsV2.RopeAttention(qkv, ropeCos, ropeSin, positions, keys, values, arrivals, dims.Context, attended));
            }
            var x = randn([batch, dims.Hidden], dtype, device);
            var residual = randn([batch, dims.Hidden], dtype, device);
            var weight = ones([dims.Hidden], dtype, device);
            Part(stdout, common, $"rmsnorm-{kind}", batch, 0, 5L * batch * dims.Hidden * size, timer, () =>
            {
                if (native)
                {
                    NativeKernels.RmsNorm(x, residual, weight, 1e-5, empty_like(x), empty_like(x));
                    return;
                }
                var h = residual.add(x, Scalars.One).to(ScalarType.Float32);
                _ = weight * (h * rsqrt(h.pow(Scalars.Of(2)).mean([-1], keepdim: true).add(Scalars.Of(1e-5), Scalars.One))).to(dtype);
            });
            var heads = dims.Heads + dims.KvHeads;
            var qk = randn([batch, heads * dims.HeadDim], dtype, device);
            var cos = randn([batch, dims.HeadDim], dtype, device);
            var sin = randn([batch, dims.HeadDim], dtype, device);
            Part(stdout, common, $"rope-{kind}", batch, 0, 2L * batch * heads * dims.HeadDim * size, timer, () =>
            {
                if (native)
                {
                    NativeKernels.Rope(qk, heads, cos, sin, empty([batch, heads * dims.HeadDim], dtype, device));
                    return;
                }
                var v = qk.reshape(batch, heads, dims.HeadDim);
                var half = dims.HeadDim / 2;
                var rotated = cat([-v.narrow(-1, half, half), v.narrow(-1, 0, half)], -1);
                _ = (v * cos.unsqueeze(1)).add(rotated * sin.unsqueeze(1), Scalars.One);
            });
            var gateUp = randn([batch, 2 * dims.Intermediate], dtype, device);
            Part(stdout, common, $"silu-mul-{kind}", batch, 0, 3L * batch * dims.Intermediate * size, timer, () =>
            {
                if (native)
                {
                    NativeKernels.SiluMul(gateUp, empty([batch, dims.Intermediate], dtype, device));
                    return;
                }
                _ = nn.functional.silu(gateUp.narrow(1, 0, dims.Intermediate)) * gateUp.narrow(1, dims.Intermediate, dims.Intermediate);
            });
        }
        {
            using var scope = NewDisposeScope();
            var elements = device.type == DeviceType.CUDA ? 128L << 20 : 1L << 18;
            var source = ones([elements], ScalarType.Float32, device);
            var target = empty([elements], ScalarType.Float32, device);
            // Read plus write, as the reference copy bandwidth counts them.
            Part(stdout, common, "copy", 1, 0, 2 * elements * 4, timer, () => target.copy_(source));
        }
    }

    private static void Part(TextWriter stdout, Dictionary<string, object> common, string kernel, int rows, int context, long bytes, IKernelTimer timer, Action call)
    {
        var line = new Dictionary<string, object>(common) { ["event"] = "bench-kernel", ["kernel"] = kernel, ["rows"] = rows, ["bytes"] = bytes };
        if (context > 0)
        {
            line["context"] = context;
        }
        try
        {
            AddRate(line, timer.MicrosecondsPerCall(() =>
            {
                using var scope = NewDisposeScope();
                call();
            }), bytes);
        }
        catch (Exception e) when (e is InvalidOperationException or System.Runtime.InteropServices.ExternalException)
        {
            line["error"] = e.Message;
        }
        Emit(stdout, line);
    }

    private static void AddRate(Dictionary<string, object> line, double microseconds, long bytes)
    {
        var gbPerSecond = bytes / Math.Max(1e-9, microseconds) / 1000;
        line["microseconds"] = Math.Round(microseconds, 2);
        line["gbPerSecond"] = Math.Round(gbPerSecond, 1);
        line["fractionOfReference"] = Math.Round(gbPerSecond / ReferenceGbPerSecond, 4);
    }

    private static int ElementSize(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => 4,
        ScalarType.Float64 => 8,
        _ => 2,
    };

    private static void Emit(TextWriter stdout, Dictionary<string, object> line) => stdout.WriteLine(JsonSerializer.Serialize(line));
}
