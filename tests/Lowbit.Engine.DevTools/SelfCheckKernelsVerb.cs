using System.Text.Json;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.DevTools;

/// <summary>
/// Hidden <c>selfcheck-kernels</c>: each native decode kernel against its eager torch reference on the GPU, on fresh
/// random inputs with the outputs poisoned (NaN) first; one JSON line per check with ‖out − ref‖ / ‖ref‖ (the reference
/// in float64 for the GEMVs, the eager bf16 ops otherwise) and pass/fail against the bf16 tolerance 1e-2.
/// Exit 1 when a check fails or the library is missing.
/// </summary>
internal static class SelfCheckKernelsVerb
{
    private const double Tolerance = 1e-2;

    public static int Run(TextWriter stdout, TextWriter stderr)
    {
        var device = TorchRuntime.ResolveDevice(Protocol.ComputeDevice.Cuda);
        if (!NativeKernels.Available)
        {
            stderr.WriteLine($"selfcheck-kernels: {NativeKernels.Status}");
            return 1;
        }
        using var noGrad = no_grad();
        var failed = 0;
        // One result line (and a failure counted unless it passed); `extra` adds a key such as the reason it failed.
        void Record(string check, double relativeError, bool allWritten, bool pass, (string Key, string Value)? extra = null)
        {
            failed += pass ? 0 : 1;
            var line = new Dictionary<string, object>
            {
                ["event"] = "selfcheck-kernel", ["check"] = check, ["relativeError"] = relativeError, ["allWritten"] = allWritten, ["pass"] = pass,
            };
            if (extra is { } e)
            {
                line[e.Key] = e.Value;
            }
            stdout.WriteLine(JsonSerializer.Serialize(line));
        }
        void Report(string name, Tensor output, Tensor reference)
        {
            using var scope = NewDisposeScope();
            var o = output.to(ScalarType.Float64);
            var r = reference.to(ScalarType.Float64);
            var error = (o - r).norm().item<double>() / Math.Max(1e-30, r.norm().item<double>());
            var finite = o.isfinite().all().item<bool>();
            // JSON has no NaN: a non-finite error (NaN or unwritten outputs) is written as -1 and fails.
            Record(name, double.IsFinite(error) ? error : -1.0, finite, finite && error < Tolerance);
        }
        // Elements that differ, NaN counting as equal to NaN (the bit-exact checks run on NaN-poisoned buffers).
        static long Differing(Tensor got, Tensor want) => got.isnan().ne(want.isnan()).sum().item<long>()
            + got.nan_to_num().ne(want.nan_to_num()).sum().item<long>();
        var bf16 = ScalarType.BFloat16;
        manual_seed(1234);
        foreach (var rows in new[] { 1, 7, 128 })
        {
            using var scope = NewDisposeScope();
            var x = randn([rows, 4096], bf16, device);
            var residual = randn([rows, 4096], bf16, device);
            var weight = (rand([4096], bf16, device) + 0.5).to(bf16);
            var output = full([rows, 4096], Scalars.Of(double.NaN), bf16, device);
            var sum = full([rows, 4096], Scalars.Of(double.NaN), bf16, device);
            NativeKernels.RmsNorm(x, residual, weight, 1e-5, sum, output);
            var h = residual.add(x, Scalars.One);
            var hf = h.to(ScalarType.Float32);
            var reference = weight * (hf * rsqrt(hf.pow(Scalars.Of(2)).mean([-1], keepdim: true).add(Scalars.Of(1e-5), Scalars.One))).to(bf16);
            Report($"rmsnorm+residual rows={rows}", output, reference);
            Report($"residual sum rows={rows}", sum, h);
        }
        foreach (var rows in new[] { 1, 128 })
        {
            using var scope = NewDisposeScope();
            int heads = 64, d = 128;
            var fused = randn([rows, heads * d + 32 * d], bf16, device);
            var input = fused.narrow(1, 0, heads * d);
            var angles = rand([rows, d / 2], ScalarType.Float32, device) * 100;
            var emb = cat([angles, angles], -1);
            var cos = emb.cos().to(bf16);
            var sin = emb.sin().to(bf16);
            var output = full([rows, heads * d], Scalars.Of(double.NaN), bf16, device);
            NativeKernels.Rope(input, heads, cos, sin, output);
            var v = input.reshape(rows, heads, d);
            var rotated = cat([-v.narrow(-1, d / 2, d / 2), v.narrow(-1, 0, d / 2)], -1);
            var reference = (v * cos.unsqueeze(1)).add(rotated * sin.unsqueeze(1), Scalars.One).reshape(rows, heads * d);
            Report($"rope rows={rows}", output, reference);
        }
        {
            using var scope = NewDisposeScope();
            var gateUp = randn([5, 2 * 11008], bf16, device) * 3;
            var output = full([5, 11008], Scalars.Of(double.NaN), bf16, device);
            NativeKernels.SiluMul(gateUp, output);
            var reference = nn.functional.silu(gateUp.narrow(1, 0, 11008)) * gateUp.narrow(1, 11008, 11008);
            Report("silu_mul", output, reference);
        }
        foreach (var (batch, n, k) in new[] { (1, 4096, 4096), (4, 11008 * 2, 4096), (16, 4096, 11008) })
        {
            using var scope = NewDisposeScope();
            var x = randn([batch, k], bf16, device);
            var w = (randn([n, k], bf16, device) * 0.02).to(bf16);
            var output = full([batch, n], Scalars.Of(double.NaN), bf16, device);
            NativeKernels.Gemv(x, w, output);
            var reference = x.to(ScalarType.Float64).matmul(w.to(ScalarType.Float64).t());
            Report($"gemv bf16 B={batch} N={n} K={k}", output, reference);
            Report($"cublas bf16 B={batch} N={n} K={k} (for comparison)", nn.functional.linear(x, w), reference);
        }
        foreach (var (batch, n, k, group) in new[] { (1, 4096, 4096, 64), (5, 11008, 4096, 128), (16, 4096, 11008, 64), (1, 22016, 4096, 128) })
        {
            using var scope = NewDisposeScope();
            var w = randn([n, k], ScalarType.Float32, device) * 0.02;
            using var q = Rtn.Quantize(w, new RtnOptions { Bits = 4, GroupSize = group });
            using var packed = Int4Weight.From(q);
            var x = randn([batch, k], bf16, device);
            var output = full([batch, n], Scalars.Of(double.NaN), bf16, device);
            NativeKernels.Int4Linear(x, packed.Packed, packed.Scales, packed.Zeros, group, output);
            var reference = x.to(ScalarType.Float64).matmul(q.Dequantize(ScalarType.Float64).t());
            Report($"int4 g{group} B={batch} N={n} K={k}", output, reference);
            Report($"int4 packing round trip g{group}", packed.Codes(), q.Codes);
        }
        // The second int4 GEMV (liblowbit_kernels_v2.so, optional): a missing library is reported as a failed check so
        // that a build failure shows here (decoding then measures and uses the other kernels).
        if (!NativeKernelsV2.Available)
        {
            Record("v2 kernels library (int4-v2, native-gemv-v2)", -1.0, false, false, ("status", NativeKernelsV2.Status));
        }
        else
        {
            // Row counts 1 to 4 (3-4 at K = 4096 only), N not a multiple of the tile, K from one to four chunks per
            // thread, both groups, a padded activation row stride, and float16.
            foreach (var (batch, n, k, group, dtype) in new[]
            {
                (1, 4096, 4096, 64, bf16), (2, 4096, 4096, 128, bf16), (1, 1001, 11008, 64, bf16), (2, 4093, 11008, 128, bf16),
                (1, 22016, 4096, 64, bf16), (2, 12288, 4096, 64, bf16), (1, 333, 5120, 128, bf16), (2, 77, 16384, 64, bf16),
                (1, 4096, 4096, 64, ScalarType.Float16), (2, 1000, 11008, 128, ScalarType.Float16),
                (3, 4093, 4096, 64, bf16), (4, 22016, 4096, 128, bf16), (4, 999, 4096, 64, ScalarType.Float16),
            })
            {
                using var scope = NewDisposeScope();
                var w = randn([n, k], ScalarType.Float32, device) * 0.02;
                using var q = Rtn.Quantize(w, new RtnOptions { Bits = 4, GroupSize = group });
                using var packed = Int4Weight.From(q);
                var x = randn([batch, k + 8], dtype, device).narrow(1, 0, k);
                var output = full([batch, n], Scalars.Of(double.NaN), dtype, device);
                NativeKernelsV2.Int4Linear(x, packed.Packed, packed.Scales, packed.Zeros, group, output);
                var reference = x.to(ScalarType.Float64).matmul(q.Dequantize(ScalarType.Float64).t());
                Report($"int4-v2 {(dtype == bf16 ? "bf16" : "fp16")} g{group} B={batch} N={n} K={k}", output, reference);
                // The decode path's own reference: dequantize to the model dtype, then linear (what the selection compares with).
                var eager = nn.functional.linear(x, packed.Dequantize(dtype));
                Report($"int4-v2 against dequantize+linear g{group} B={batch} N={n} K={k}", output, eager);
                foreach (var (geometry, kernel) in new[] { (3, ProjectionKernel.Int4V2Wide), (5, ProjectionKernel.Int4V2Occupancy), (7, ProjectionKernel.Int4V2Shared), (9, ProjectionKernel.Int4Mma), (13, ProjectionKernel.Int4V2Half2), (15, ProjectionKernel.Int4V2Half2Subnormal), (17, ProjectionKernel.Int4V2Half2Block) })
                {
                    if ((geometry != 7 || group % 64 == 0) && NativeKernelsV2.Int4XSupports(dtype, batch, k, geometry, Int4Prologue.None, residual: false))
                    {
                        // The other geometries (kernel-selection candidates) on the same shapes.
                        var other = full([batch, n], Scalars.Of(double.NaN), dtype, device);
                        NativeKernelsV2.Int4LinearX(x, packed, other, geometry, Int4Prologue.None, null, 0, null);
                        Report($"{KernelSelector.Name(kernel)} {(dtype == bf16 ? "bf16" : "fp16")} g{group} B={batch} N={n} K={k}", other, reference);
                    }
                }
            }
            // One row past three chunks per thread: int4-v2-shared (session 32; H200 run 80; offered by default since session
            // 33) at K = 13,824 (a 13B's down projection), 14,336 (Llama-3-8B's), 28,672 (a 70B's: 112 KB of activations in
            // shared memory) and 32,768; int4-v2-h2c (LOWBIT_INT4_CLUSTER=1: K split over a cluster's blocks) at a 7B's down
            // projection (3 splits), a 13B's (4), a 70B's (7) and K = 4,160 (2), with a second launch that must give the same
            // bits (the splits add in split order). Plain in both dtypes, the residual add and, where offered, SiLU·mul +
            // residual (the decode step's down projection); a kernel the library does not offer (LOWBIT_INT4_SHARED_LONG=0,
            // no LOWBIT_INT4_CLUSTER=1) is not checked.
            foreach (var (geometry, n, k, group, dtype) in new[]
            {
                (7, 1001, 13824, 64, bf16), (7, 4096, 14336, 128, bf16), (7, 8192, 28672, 64, bf16), (7, 515, 32768, 128, ScalarType.Float16),
                (19, 4096, 11008, 64, bf16), (19, 4093, 11008, 128, ScalarType.Float16), (19, 5120, 13824, 64, bf16), (19, 8192, 28672, 128, bf16), (19, 1001, 4160, 64, bf16),
            })
            {
                if (!NativeKernelsV2.Int4XSupports(dtype, 1, k, geometry, Int4Prologue.None, residual: false))
                {
                    continue;
                }
                using var scope = NewDisposeScope();
                var w = randn([n, k], ScalarType.Float32, device) * 0.02;
                using var q = Rtn.Quantize(w, new RtnOptions { Bits = 4, GroupSize = group });
                using var packed = Int4Weight.From(q);
                var x = randn([1, k + 8], dtype, device).narrow(1, 0, k);
                var reference = x.to(ScalarType.Float64).matmul(q.Dequantize(ScalarType.Float64).t());
                var name = $"{(geometry == 7 ? "int4-v2-shared" : "int4-v2-h2c")} {(dtype == bf16 ? "bf16" : "fp16")} g{group} B=1 N={n} K={k}";
                var output = full([1, n], Scalars.Of(double.NaN), dtype, device);
                try
                {
                    NativeKernelsV2.Int4LinearX(x, packed, output, geometry, Int4Prologue.None, null, 0, null);
                    if (geometry == 19)
                    {
                        var again = full([1, n], Scalars.Of(double.NaN), dtype, device);
                        NativeKernelsV2.Int4LinearX(x, packed, again, geometry, Int4Prologue.None, null, 0, null);
                        var differing = Differing(again, output);
                        Record($"{name}: a second launch", differing, true, differing == 0, ("detail", $"{differing} elements differ from the first launch"));
                    }
                }
                catch (InvalidOperationException e)
                {
                    // A launch the device refuses (a cluster, the shared memory): a failed check, reported, and the checks
                    // after it still run.
                    Record(name, -1.0, false, false, ("error", e.Message));
                    continue;
                }
                Report(name, output, reference);
                Report($"{name} against dequantize+linear", output, nn.functional.linear(x, packed.Dequantize(dtype)));
                if (NativeKernelsV2.Int4XSupports(dtype, 1, k, geometry, Int4Prologue.None, residual: true))
                {
                    // T(T(x·Wᵀ) + r): the residual added to the rounded product.
                    var residual = randn([1, n], dtype, device);
                    var added = full([1, n], Scalars.Of(double.NaN), dtype, device);
                    NativeKernelsV2.Int4LinearX(x, packed, added, geometry, Int4Prologue.None, null, 0, residual);
                    Report($"{name} + residual", added, residual.to(ScalarType.Float64).add(reference.to(dtype).to(ScalarType.Float64), Scalars.One));
                }
                if (NativeKernelsV2.Int4XSupports(dtype, 1, k, geometry, Int4Prologue.SiluMul, residual: true))
                {
                    var gateUp = (randn([1, 2 * k], dtype, device) * 2).to(dtype);
                    var activated = empty([1, k], dtype, device);
                    NativeKernels.SiluMul(gateUp, activated);
                    var residual = randn([1, n], dtype, device);
                    var fused = full([1, n], Scalars.Of(double.NaN), dtype, device);
                    NativeKernelsV2.Int4LinearX(gateUp, packed, fused, geometry, Int4Prologue.SiluMul, null, 0, residual);
                    Report($"{name} silu-mul + residual", fused, residual.add(nn.functional.linear(activated, packed.Dequantize(dtype)), Scalars.One));
                }
            }
            // int4-mma at the rows only it takes among the GEMVs (5-8: one tensor-core column per row; 9-32: slices of 8
            // rows, one launch each) and int4-mma16 (9-32 rows, 16 per launch; past K = 4,096 in K splits: a 7B's down
            // projection in 3, a 13B's in 4), both dtypes.
            foreach (var (batch, n, k, group, dtype, geometry) in new[]
            {
                (5, 4093, 4096, 64, bf16, 9), (8, 12288, 4096, 128, bf16, 9), (8, 4096, 11008, 64, bf16, 9), (6, 1001, 11008, 128, ScalarType.Float16, 9),
                (16, 12288, 4096, 64, bf16, 9), (12, 4096, 11008, 64, bf16, 9), (32, 22016, 4096, 64, bf16, 9), (20, 1001, 4096, 128, ScalarType.Float16, 9),
                (16, 12288, 4096, 64, bf16, 11), (20, 4093, 4096, 128, bf16, 11), (32, 22016, 4096, 64, bf16, 11), (24, 1001, 4096, 64, ScalarType.Float16, 11),
                (16, 4096, 11008, 64, bf16, 11), (32, 4093, 11008, 128, bf16, 11), (12, 5120, 13824, 64, ScalarType.Float16, 11),
            })
            {
                if (!NativeKernelsV2.Int4XSupports(dtype, batch, k, geometry, Int4Prologue.None, residual: false))
                {
                    continue;
                }
                using var scope = NewDisposeScope();
                var w = randn([n, k], ScalarType.Float32, device) * 0.02;
                using var q = Rtn.Quantize(w, new RtnOptions { Bits = 4, GroupSize = group });
                using var packed = Int4Weight.From(q);
                var x = randn([batch, k + 8], dtype, device).narrow(1, 0, k);
                var output = full([batch, n], Scalars.Of(double.NaN), dtype, device);
                var name = $"{(geometry == 9 ? "int4-mma" : "int4-mma16")} {(dtype == bf16 ? "bf16" : "fp16")} g{group} B={batch} N={n} K={k}";
                // int4-mma16's K splits count arrivals per 16 output rows; the last block of a tile leaves its counter zero.
                var arrivals = zeros([(n + 15) / 16], ScalarType.Int32, device);
                try
                {
                    NativeKernelsV2.Int4LinearX(x, packed, output, geometry, Int4Prologue.None, null, 0, null, arrivals);
                    if (geometry == 11 && k > 4096)
                    {
                        // Again on the same counters: the same bits (the splits add in split order, whichever block arrives
                        // last), and the counters zero after both launches.
                        var again = full([batch, n], Scalars.Of(double.NaN), dtype, device);
                        NativeKernelsV2.Int4LinearX(x, packed, again, geometry, Int4Prologue.None, null, 0, null, arrivals);
                        var differing = Differing(again, output);
                        var left = arrivals.count_nonzero().item<long>();
                        Record($"{name} K splits: a second launch", differing, left == 0, differing == 0 && left == 0,
                            ("detail", $"{differing} elements differ from the first launch, {left} counters left nonzero"));
                    }
                }
                catch (InvalidOperationException e)
                {
                    // A shape the host side takes but the device refuses at launch (its shared memory): a failed check,
                    // reported, and the checks after it still run.
                    Record(name, -1.0, false, false, ("error", e.Message));
                    continue;
                }
                var reference = x.to(ScalarType.Float64).matmul(q.Dequantize(ScalarType.Float64).t());
                Report(name, output, reference);
            }
            // Identical activation rows should give identical output rows, bit for bit (a decode batch of one prompt): int4-mma
            // puts the rows in different lanes' tensor-core columns, dequantize + linear in one cuBLAS GEMM. Session 15's
            // int4 graph:8 run saw row 1 of one prompt leave row 0 (tokens 18 and 5 in two runs); this says which kernel.
            // int4-mma16 at 16 rows, K = 11,008 (three K splits).
            foreach (var (n, k, kernel) in new[]
            {
                (4096, 4096, ProjectionKernel.Int4Mma), (4096, 11008, ProjectionKernel.Int4Mma), (4096, 11008, ProjectionKernel.Int4Dequant),
                (12288, 4096, ProjectionKernel.Int4Dequant), (4096, 11008, ProjectionKernel.Int4Mma16),
            })
            {
                using var scope = NewDisposeScope();
                var w = randn([n, k], ScalarType.Float32, device) * 0.02;
                using var q = Rtn.Quantize(w, new RtnOptions { Bits = 4, GroupSize = 64 });
                using var packed = Int4Weight.From(q);
                var rows = kernel == ProjectionKernel.Int4Mma16 ? 16 : 8;
                var x = randn([1, k], bf16, device).expand(rows, k).contiguous();
                var output = full([rows, n], Scalars.Of(double.NaN), bf16, device);
                if (kernel is ProjectionKernel.Int4Mma or ProjectionKernel.Int4Mma16)
                {
                    var geometry = kernel == ProjectionKernel.Int4Mma ? 9 : 11;
                    if (!NativeKernelsV2.Int4XSupports(bf16, rows, k, geometry, Int4Prologue.None, residual: false))
                    {
                        continue;
                    }
                    try
                    {
                        NativeKernelsV2.Int4LinearX(x, packed, output, geometry, Int4Prologue.None, null, 0, null, zeros([(n + 15) / 16], ScalarType.Int32, device));
                    }
                    catch (InvalidOperationException)
                    {
                        continue;   // refused at launch: the int4-mma check above has failed and says why
                    }
                }
                else
                {
                    output = nn.functional.linear(x, packed.Dequantize(bf16));
                }
                // A finding, not a pass/fail check: cuBLAS does not promise identical rows, and a difference here is not a
                // wrong result (each row is within the tolerance above); the driver prints these lines.
                var differing = output.to(ScalarType.Float32).ne(output.narrow(0, 0, 1).to(ScalarType.Float32)).sum(dim: 1).gt(0).sum().item<long>();
                stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
                {
                    ["event"] = "selfcheck-rows", ["check"] = $"{KernelSelector.Name(kernel)} {rows} identical rows N={n} K={k}",
                    ["rowsDifferingFromRow0"] = differing, ["allWritten"] = output.isfinite().all().item<bool>(),
                }));
            }
            if (NativeKernelsV2.FusedAvailable)
            {
                // The decode step's fused variants (bf16, 1-2 rows, and int4-mma's up to 8, both geometries) against the separate native kernels
                // followed by dequantize + linear (ForwardFused's fallback): the q/k/v and gate/up projections with the
                // RMSNorm inside, the output projection with the residual add, the down projection with SiLU·mul and the add.
                foreach (var (batch, n, k, group, geometry) in new[]
                {
                    (1, 12288, 4096, 64, 1), (2, 22016, 4096, 128, 3), (1, 22016, 4096, 64, 3), (1, 4096, 11008, 64, 3), (2, 4093, 11008, 128, 1), (1, 1001, 8192, 64, 3),
                    // One row past K = 4,096 (a 13B's 5,120, a 70B's 8,192): the deferred norm with its weight loaded after the wait.
                    (1, 15360, 5120, 128, 1), (1, 2050, 8192, 64, 1), (1, 27648, 5120, 64, 3),
                    (1, 4096, 4096, 64, 5), (1, 22016, 4096, 128, 5), (1, 12288, 4096, 64, 7), (2, 22016, 4096, 128, 7), (1, 1001, 2048, 64, 7), (1, 4096, 11008, 64, 7), (1, 999, 8192, 128, 7),
                    (1, 12288, 4096, 64, 9), (2, 22016, 4096, 128, 9), (1, 4096, 11008, 64, 9), (2, 1001, 11008, 128, 9),
                    // int4-v2-h2 and -h2s: one row, one chunk per thread (K <= 4,096).
                    (1, 12288, 4096, 64, 13), (1, 22016, 4096, 128, 13), (1, 1001, 2048, 64, 13), (1, 4096, 4096, 128, 13),
                    (1, 12288, 4096, 64, 15), (1, 22016, 4096, 128, 15), (1, 1001, 2048, 64, 15), (1, 4096, 4096, 128, 15),
                    // A quantized lm_head with the final RMSNorm in its prologue (32,000 × 4,096).
                    (1, 32000, 4096, 64, 15), (1, 32000, 4096, 64, 7), (1, 32000, 4096, 128, 13),
                    // int4-mma's fused variants at 3-8 rows: offered with LOWBIT_MMA_FUSED_ROWS (up to 8), checked then.
                    (4, 12288, 4096, 64, 9), (5, 22016, 4096, 128, 9), (8, 4096, 11008, 64, 9),
                })
                {
                    if (!NativeKernelsV2.Int4XSupports(bf16, batch, k, geometry, Int4Prologue.RmsNorm, residual: false))
                    {
                        // 3-8 rows are opt-in; any other listed shape the library does not offer is a failed check, and
                        // the checks after it still run (run 58 aborted here when the packed-fp16 kernels lost K = 11,008).
                        if (batch <= 2)
                        {
                            Record($"int4-v2 fused g{group} B={batch} N={n} K={k} geometry={geometry}", -1.0, false, false, ("error", "variant not offered by the library"));
                        }
                        continue;
                    }
                    using var scope = NewDisposeScope();
                    var w = randn([n, k], ScalarType.Float32, device) * 0.02;
                    using var q = Rtn.Quantize(w, new RtnOptions { Bits = 4, GroupSize = group });
                    using var packed = Int4Weight.From(q);
                    var dense = packed.Dequantize(bf16);
                    var stream = (randn([batch, k], bf16, device) * 3).to(bf16);
                    var normWeight = (rand([k], bf16, device) + 0.5).to(bf16);
                    var gateUp = (randn([batch, 2 * k], bf16, device) * 2).to(bf16);
                    var residual = randn([batch, n], bf16, device);
                    var name = $"g{group} B={batch} N={n} K={k} geometry={geometry}";

                    // The RMSNorm prologues against the exact product (float64, no intermediate rounding): int4-v2, -wide,
                    // -h2 and -h2s at one row defer the norm's factor to their sums (closer to it than rmsnorm_kernel's
                    // roundings are, and up to ~1e-2 from the rounded reference in the paired SiLU·mul), the others round
                    // as rmsnorm_kernel.
                    var x64 = stream.to(ScalarType.Float64);
                    var normedExact = x64 * (x64.square().mean([-1L], keepdim: true) + 1e-5).rsqrt() * normWeight.to(ScalarType.Float64);
                    var exact = nn.functional.linear(normedExact, dense.to(ScalarType.Float64));
                    var output = full([batch, n], Scalars.Of(double.NaN), bf16, device);
                    NativeKernelsV2.Int4LinearX(stream, packed, output, geometry, Int4Prologue.RmsNorm, normWeight, 1e-5, null);
                    Report($"int4-v2 fused rmsnorm {name}", output, exact);

                    var activated = empty([batch, k], bf16, device);
                    NativeKernels.SiluMul(gateUp, activated);
                    output = full([batch, n], Scalars.Of(double.NaN), bf16, device);
                    NativeKernelsV2.Int4LinearX(gateUp, packed, output, geometry, Int4Prologue.SiluMul, null, 0, residual);
                    Report($"int4-v2 fused silu-mul + residual {name}", output, residual.add(nn.functional.linear(activated, dense), Scalars.One));

                    // The fused gate/up projection's variant (one row, int4-v2 and -wide): RMSNorm in, SiLU(first half)·second
                    // half out, against the RMSNorm, the GEMM and the SiLU·mul kernel.
                    if (n % 2 == 0 && NativeKernelsV2.Int4XSupports(bf16, batch, k, geometry, Int4Prologue.RmsNormSiluMul, residual: false))
                    {
                        var paired = full([batch, n / 2], Scalars.Of(double.NaN), bf16, device);
                        NativeKernelsV2.Int4LinearX(stream, packed, paired, geometry, Int4Prologue.RmsNormSiluMul, normWeight, 1e-5, null);
                        var gate = exact.narrow(1, 0, n / 2);
                        Report($"int4-v2 fused rmsnorm + paired silu-mul {name}", paired, gate * gate.sigmoid() * exact.narrow(1, n / 2, n / 2));
                    }

                    output = full([batch, n], Scalars.Of(double.NaN), bf16, device);
                    NativeKernelsV2.Int4LinearX(stream, packed, output, geometry, Int4Prologue.None, null, 0, residual);
                    Report($"int4-v2 fused residual {name}", output, residual.add(nn.functional.linear(stream, dense), Scalars.One));
                }
                // RoPE + KV-cache write against the RoPE kernel and index_copy_ (bit-exact): rows at different positions
                // (one past the cache, clamped), grouped heads, head dims 128 and 64, the other cache rows untouched.
                foreach (var (batch, heads, kvHeads, headDim, maxLength) in new[] { (1, 32, 32, 128, 2049), (4, 32, 8, 128, 300), (3, 8, 2, 64, 17) })
                {
                    using var scope = NewDisposeScope();
                    var all = heads + (2 * kvHeads);
                    var qkv = randn([batch, all * headDim], bf16, device);
                    var cos = randn([batch, headDim], bf16, device).cos();
                    var sin = randn([batch, headDim], bf16, device).sin();
                    var positions = tensor(Enumerable.Range(0, batch).Select(b => b == batch - 1 ? (long)maxLength + 3 : (b * 37L) % maxLength).ToArray(), device: device);
                    var keys = full([batch + 1, maxLength, kvHeads, headDim], Scalars.Of(double.NaN), bf16, device);
                    var values = full([batch + 1, maxLength, kvHeads, headDim], Scalars.Of(double.NaN), bf16, device);
                    var query = full([batch, heads * headDim], Scalars.Of(double.NaN), bf16, device);
                    NativeKernelsV2.RopeKv(qkv, cos, sin, positions, query, keys, values);
                    var rotated = empty([batch, (heads + kvHeads) * headDim], bf16, device);
                    NativeKernels.Rope(qkv.narrow(1, 0, (heads + kvHeads) * headDim), heads + kvHeads, cos, sin, rotated);
                    var clamped = positions.clamp(Scalars.Of(0), Scalars.Of(maxLength - 1));
                    var slotsAt = arange(Scalars.Of(0), Scalars.Of(batch), Scalars.One, ScalarType.Int64, device).mul(Scalars.Of(maxLength)).add(clamped, Scalars.One);
                    var wantKeys = full([batch + 1, maxLength, kvHeads, headDim], Scalars.Of(double.NaN), bf16, device);
                    var wantValues = full([batch + 1, maxLength, kvHeads, headDim], Scalars.Of(double.NaN), bf16, device);
                    wantKeys.view(-1, kvHeads * headDim).index_copy_(0, slotsAt, rotated.narrow(1, heads * headDim, kvHeads * headDim));
                    wantValues.view(-1, kvHeads * headDim).index_copy_(0, slotsAt, qkv.narrow(1, (heads + kvHeads) * headDim, kvHeads * headDim));
                    var differing = Differing(query, rotated.narrow(1, 0, heads * headDim)) + Differing(keys, wantKeys) + Differing(values, wantValues);
                    Record($"rope+kv write B={batch} heads={heads}/{kvHeads} D={headDim} (bit-exact)", differing, true, differing == 0);
                }
            }
        }
        if (NativeKernelsV2.Available)
        {
            // The int4 dequantize (prefill, and decode batches the GEMVs do not take): bit-identical to the CPU's fp32
            // arithmetic on the same packed codes, fp16 scales and zeros, every element written.
            foreach (var (n, k, group, dtype) in new[] { (4096, 4096, 64, bf16), (22016, 4096, 128, bf16), (1001, 11008, 64, ScalarType.Float16), (77, 28672, 64, bf16) })
            {
                using var scope = NewDisposeScope();
                var w = randn([n, k], ScalarType.Float32, device) * 0.02;
                using var q = Rtn.Quantize(w, new RtnOptions { Bits = 4, GroupSize = group });
                using var packed = Int4Weight.From(q);
                var native = packed.Dequantize(dtype).cpu();
                var host = new Int4Weight { Packed = packed.Packed.cpu(), Scales = packed.Scales.cpu(), Zeros = packed.Zeros.cpu(), GroupSize = group };
                var reference = host.Dequantize(dtype);
                var differing = native.to(ScalarType.Float32).ne(reference.to(ScalarType.Float32)).sum().item<long>();
                var finite = native.isfinite().all().item<bool>();
                Record($"int4 dequantize {(dtype == bf16 ? "bf16" : "fp16")} g{group} N={n} K={k} (bit-exact)", differing / (double)native.numel(), finite, differing == 0 && finite);
            }
            // The decode attention (LOWBIT_DECODE_ATTENTION=native): rows at different positions (one past the length
            // bucket), grouped heads, head dims 128 and 64, a query that is a narrow of the fused q/k/v output, fp16;
            // against a float64 softmax over each row's visible positions, launched twice (the split counters must be back
            // at zero, or the second launch's last blocks do not merge and the NaN-poisoned output stays). Then the fused
            // RoPE version against RopeKv followed by it: output and cache bit-identical. The cache rows at and past each
            // row's position are NaN: the kernel loads its range before it knows the position and must mask them.
            foreach (var (batch, heads, kvHeads, headDim, slots, maxLength, length, dtype) in new[]
            {
                (1, 32, 32, 128, 1, 2049, 256, bf16), (4, 32, 8, 128, 8, 4097, 4096, bf16), (3, 8, 2, 64, 4, 300, 128, bf16),
                (32, 32, 32, 128, 32, 513, 512, bf16), (2, 16, 4, 128, 2, 1025, 1024, ScalarType.Float16), (1, 32, 8, 128, 1, 2049, 64, bf16),
            })
            {
                if (!NativeKernelsV2.AttentionSupports(batch, heads, kvHeads, headDim, length))
                {
                    failed++;
                    stderr.WriteLine($"selfcheck-kernels: decode attention not available for D={headDim} group {heads / kvHeads}");
                    continue;
                }
                using var scope = NewDisposeScope();
                var keys = randn([slots, maxLength, kvHeads, headDim], dtype, device);
                var values = randn([slots, maxLength, kvHeads, headDim], dtype, device);
                var fused = randn([batch, (heads + (2 * kvHeads)) * headDim], dtype, device);
                var q = fused.narrow(1, 0, heads * headDim);
                var positions = tensor(Enumerable.Range(0, batch).Select(b => b == batch - 1 ? (long)length + 5 : (b * 37L) % length).ToArray(), device: device);
                for (var b = 0; b < batch; b++)
                {
                    var attend = (int)Math.Min(positions[b].item<long>(), length - 1) + 1;
                    keys[b].narrow(0, attend, maxLength - attend).fill_(Scalars.Of(double.NaN));
                    values[b].narrow(0, attend, maxLength - attend).fill_(Scalars.Of(double.NaN));
                }
                var arrivals = zeros([batch * kvHeads], ScalarType.Int32, device);
                var name = $"{(dtype == bf16 ? "bf16" : "fp16")} B={batch} heads={heads}/{kvHeads} D={headDim} length={length}";
                var output = full([batch, heads * headDim], Scalars.Of(double.NaN), dtype, device);
                NativeKernelsV2.DecodeAttention(q, keys, values, positions, arrivals, length, output);
                output.fill_(Scalars.Of(double.NaN));
                NativeKernelsV2.DecodeAttention(q, keys, values, positions, arrivals, length, output);
                var reference = zeros([batch, heads * headDim], ScalarType.Float64, device);
                var group = heads / kvHeads;
                for (var b = 0; b < batch; b++)
                {
                    var attend = (int)Math.Min(positions[b].item<long>(), length - 1) + 1;
                    var k = keys[b].narrow(0, 0, attend).to(ScalarType.Float64).repeat_interleave(group, 1).transpose(0, 1);   // [heads, attend, D]
                    var v = values[b].narrow(0, 0, attend).to(ScalarType.Float64).repeat_interleave(group, 1).transpose(0, 1);
                    var qb = q[b].to(ScalarType.Float64).view(heads, 1, headDim);
                    var weights = qb.matmul(k.transpose(1, 2)).div(Math.Sqrt(headDim)).softmax(-1);
                    reference[b].copy_(weights.matmul(v).view(heads * headDim));
                }
                Report($"decode attention {name}", output, reference);

                var cos = randn([batch, headDim], dtype, device).cos();
                var sin = randn([batch, headDim], dtype, device).sin();
                var (ropeKeys, ropeValues) = (keys.clone(), values.clone());
                var query = empty([batch, heads * headDim], dtype, device);
                NativeKernelsV2.RopeKv(fused, cos, sin, positions, query, keys, values);
                NativeKernelsV2.DecodeAttention(query, keys, values, positions, arrivals, length, output);
                var attended = full([batch, heads * headDim], Scalars.Of(double.NaN), dtype, device);
                NativeKernelsV2.RopeAttention(fused, cos, sin, positions, ropeKeys, ropeValues, arrivals, length, attended);
                // The cache's poisoned rows are NaN in both: Differing counts NaN as equal to NaN.
                var differing = attended.ne(output).sum().item<long>() + Differing(ropeKeys, keys) + Differing(ropeValues, values)
                    + arrivals.ne(Scalars.Of(0)).sum().item<long>();
                Record($"rope + decode attention {name} (bit-exact against rope+kv write, then decode attention)", differing,
                    attended.isfinite().all().item<bool>(), differing == 0);
            }
            // The greedy-step kernel against torch's argmax, index_copy_ and add_ (what it replaced in the decode step):
            // rows with a tie for the largest value, a NaN, the largest value last, a row of −∞, and a position past the
            // history's end; next tokens, history and positions equal.
            if (NativeKernelsV2.GreedyStepAvailable)
            {
                using var scope = NewDisposeScope();
                const int batch = 6, vocab = 32000, maxLength = 300;
                var logits = randn([batch, vocab], bf16, device);
                logits[0, 7] = tensor(40f).to(bf16);
                logits[0, vocab - 9] = tensor(40f).to(bf16);
                logits[1, 3] = tensor(50f).to(bf16);
                logits[1, 1234] = tensor(float.NaN).to(bf16);
                logits[2, vocab - 1] = tensor(60f).to(bf16);
                logits[3].fill_(Scalars.Of(double.NegativeInfinity));
                var start = tensor(new long[] { 0, 5, 298, 299, 400, -3 }, device: device);
                var (next, history, positions) = (full([batch], Scalars.Of(-1), ScalarType.Int64, device), full([batch, maxLength], Scalars.Of(-1), ScalarType.Int64, device), start.clone());
                NativeKernelsV2.GreedyStep(logits, next, history, positions);
                var expected = logits.argmax(-1);
                var expectedHistory = full([batch, maxLength], Scalars.Of(-1), ScalarType.Int64, device);
                var rows = arange(Scalars.Of(0), Scalars.Of(batch), Scalars.One, ScalarType.Int64, device).mul(Scalars.Of(maxLength));
                var at = rows.add(start.clamp(Scalars.Of(0), Scalars.Of(maxLength - 1)).add(Scalars.Of(1), Scalars.One).clamp_max(Scalars.Of(maxLength - 1)), Scalars.One);
                expectedHistory.view(-1).index_copy_(0, at, expected);
                var differing = next.ne(expected).sum().item<long>() + history.ne(expectedHistory).sum().item<long>()
                    + positions.ne(start.add(Scalars.Of(1), Scalars.One)).sum().item<long>();
                Record($"greedy step B={batch} vocab={vocab} (exact against argmax + index_copy_ + add_)", differing, true, differing == 0);
            }
            // The second dense GEMV: 1 to 8 rows (row counts between the kernel's 1/2/4/8), K with one to four chunks per
            // thread (512 threads × 8 values each), N not a multiple of the tile, a padded activation stride, float16. A
            // (rows, K) the kernel does not take (a 70B's down projection, K = 28,672) is not launched: the engine asks
            // GemvSupports before it times the kernel (KernelSelection) and keeps cuBLAS or the first GEMV there.
            foreach (var (batch, n, k, dtype) in new[]
            {
                (1, 4096, 4096, bf16), (2, 12288, 4096, bf16), (3, 4093, 4096, bf16), (4, 22016, 4096, bf16), (5, 1001, 4096, bf16),
                (8, 32000, 4096, bf16), (1, 4096, 11008, bf16), (2, 4095, 11008, bf16), (4, 777, 8192, bf16), (1, 515, 16384, bf16), (1, 515, 28672, bf16),
                (8, 4096, 4096, ScalarType.Float16), (2, 999, 11008, ScalarType.Float16),
            })
            {
                if (!NativeKernelsV2.GemvSupports(batch, k))
                {
                    stderr.WriteLine($"selfcheck-kernels: native-gemv-v2 B={batch} K={k} not taken (the engine keeps cuBLAS or the first GEMV there)");
                    continue;
                }
                using var scope = NewDisposeScope();
                var x = randn([batch, k + 8], dtype, device).narrow(1, 0, k);
                var w = (randn([n, k], dtype, device) * 0.02).to(dtype);
                var output = full([batch, n], Scalars.Of(double.NaN), dtype, device);
                NativeKernelsV2.Gemv(x, w, output);
                var reference = x.to(ScalarType.Float64).matmul(w.to(ScalarType.Float64).t());
                Report($"native-gemv-v2 {(dtype == bf16 ? "bf16" : "fp16")} B={batch} N={n} K={k}", output, reference);
            }
        }
        stderr.WriteLine($"selfcheck-kernels: {(failed == 0 ? "all passed" : $"{failed} failed")}; v2 kernels: {NativeKernelsV2.Status}");
        return failed == 0 ? 0 : 1;
    }
}
