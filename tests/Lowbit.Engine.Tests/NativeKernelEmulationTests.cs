using System.Globalization;

namespace Lowbit.Engine.Tests;

public class NativeKernelEmulationTests
{
    /// <summary>
    /// The v2 kernels (src/Lowbit.Engine/native/lowbit_kernels_v2.cu) compiled with g++ against headers that emulate
    /// the CUDA subset they use (native/emulate): the int4 and dense GEMVs against a float64 reference for 1-8 rows, tail
    /// rows, several blocks, K up to 16,384, and the (rows, K) they refuse; the int4 dequantize bit for bit against the
    /// fp32 arithmetic; the one-launch decode attention against a float64 softmax (1-16 splits merged by the last block,
    /// grouped heads, a row past the bucket, the cache NaN past each row's position, launched twice: its split counters back at zero) and its fused RoPE version
    /// bit for bit against RoPE + KV write followed by it (output and cache); the fused decode step's int4 variants (RMSNorm or SiLU·mul prologue, residual add, both geometries)
    /// against the separate kernels' arithmetic, the tensor-core int4 GEMV (int4-mma: 1-8 rows in one launch, 9-20 in slices of 8 and 8 rows at
    /// K = 14,336 in slices of 4, each on its rows of x, output and residual; int4-mma16's 16 rows per launch, tails of 8 or
    /// fewer as int4-mma; both dtypes, the fused variants at 1-8 rows; its mma.sync emulated as a warp collective from the PTX fragment layout), RoPE + KV write bit for bit
    /// with nothing else in the cache written, the greedy-step kernel against torch.argmax's rules (ties, NaN, −∞), and the
    /// packed-fp16 one-row GEMVs (int4-v2-h2, -h2s) in every variant, on activations past fp16's range, the one-row RMSNorm
    /// prologues (int4-v2, -wide, -h2, -h2s; one to four chunks per thread) both deferred (the default) and rounded as
    /// rmsnorm_kernel (LOWBIT_NORM_DEFER=0); every fused variant within
    /// 1e-2 of the exact float64 result and 2e-2 of the separate kernels' roundings.
    /// Six minutes: alone it takes ~45 s, but the other test classes run beside it on CI's two cores.
    /// No GPU here; the bundle's self-check runs the real ones.
    /// </summary>
    [Fact]
    public async Task Does_match_the_references_when_the_v2_kernels_run_emulated_on_the_cpu()
    {
        var (exitCode, stdout, stderr) = await RepositoryScript.RunAsync("src/Lowbit.Engine/native/emulate/run.sh", TimeSpan.FromMinutes(6));

        Assert.True(exitCode == 0, $"exit {exitCode}: {stdout} {stderr}");
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(27, lines.Count(l => l.Contains("rel err", StringComparison.Ordinal) && l.EndsWith("padding untouched 1", StringComparison.Ordinal) && !l.StartsWith("fused ", StringComparison.Ordinal)));
        Assert.Equal(104, lines.Count(l => l.StartsWith("fused ", StringComparison.Ordinal) && l.EndsWith("padding untouched 1", StringComparison.Ordinal)));
        // int4-v2-h2 and -h2s (packed fp16 products): every variant, fp16 activations, chunks from 1e-6 to 1e6, and (a
        // second pass with LOWBIT_INT4_HALF2=2) 2-3 chunks per thread; a third (LOWBIT_NORM_DEFER=0) their RMSNorm
        // prologues with rmsnorm_kernel's roundings (deferred by default).
        Assert.Equal(13, lines.Count(l => l.Contains(" geometry 13", StringComparison.Ordinal) && l.EndsWith("padding untouched 1", StringComparison.Ordinal)));
        Assert.Equal(12, lines.Count(l => l.Contains(" geometry 15", StringComparison.Ordinal) && l.EndsWith("padding untouched 1", StringComparison.Ordinal)));
        Assert.Equal(3, lines.Count(l => l.StartsWith("h2 range ", StringComparison.Ordinal)));
        Assert.Equal(5, lines.Count(l => l.Contains(" geometry 17", StringComparison.Ordinal) && l.EndsWith("padding untouched 1", StringComparison.Ordinal)));
        Assert.Equal(26, lines.Count(l => l.Contains(" geometry 9", StringComparison.Ordinal) && l.EndsWith("padding untouched 1", StringComparison.Ordinal)));
        Assert.Equal(5, lines.Count(l => l.Contains(" geometry 11", StringComparison.Ordinal) && l.EndsWith("padding untouched 1", StringComparison.Ordinal)));
        // int4-mma16 past K = 4,096 in K splits (4,352, 11,008, 5,120 in bf16; 4,608 in fp16): right, and every tile's counter reset.
        Assert.Equal(4, lines.Count(l => l.Contains(" geometry 11", StringComparison.Ordinal) && l.EndsWith("padding untouched 1, K splits, counters left zero", StringComparison.Ordinal)));
        Assert.Equal(2, lines.Count(l => l.StartsWith("rope_kv ", StringComparison.Ordinal) && l.Contains(": 0 wrong", StringComparison.Ordinal)));
        Assert.Equal(3, lines.Count(l => l.StartsWith("dequantize ", StringComparison.Ordinal) && l.Contains(": 0 of ", StringComparison.Ordinal)));
        Assert.Equal(8, lines.Count(l => l.StartsWith("attention ", StringComparison.Ordinal) && l.EndsWith("all written 1; fused RoPE: 0 elements differ", StringComparison.Ordinal)));
        Assert.Equal(2, lines.Count(l => l.StartsWith("greedy step ", StringComparison.Ordinal) && l.EndsWith(": ok", StringComparison.Ordinal)));
        // int4-v2-shared past three chunks per thread (a fourth pass; the first runs with LOWBIT_INT4_SHARED_LONG=0): K = 13,824 to 32,768 at
        // one row, plain and with the residual, bf16 and fp16.
        static int KOf(string line) => int.Parse(line.Split(" k ", 2)[1].Split(' ', 2)[0], CultureInfo.InvariantCulture);
        Assert.Equal(6, lines.Count(l => l.Contains(" geometry 7:", StringComparison.Ordinal) | l.Contains(" geometry 7 ", StringComparison.Ordinal)
                                         && l.Contains(" k ", StringComparison.Ordinal) && KOf(l) > 12_288 && l.EndsWith("padding untouched 1", StringComparison.Ordinal)));
        // int4-v2-h2c (a fifth pass, LOWBIT_INT4_CLUSTER=1): K split over a cluster's 2-7 blocks, several clusters and tiles,
        // plain in both dtypes, with the residual and with SiLU·mul + residual; not offered without the setting.
        Assert.Equal(8, lines.Count(l => l.Contains(" geometry 19", StringComparison.Ordinal) && l.EndsWith("padding untouched 1", StringComparison.Ordinal)));
        Assert.DoesNotContain(lines, l => l.Contains("int4-v2-h2c offered without", StringComparison.Ordinal));
        Assert.Equal(5, lines.Count(l => l == "ok"));
        Assert.Equal("ok", lines[^1]);
    }
}
