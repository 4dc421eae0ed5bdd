using System.Globalization;

namespace Lowbit.Engine.Tests;

public class NativeKernelCompileTests
{
    /// <summary>
    /// The native decode kernels (lowbit_kernels.cu, lowbit_kernels_v2.cu) compiled by a real nvcc for sm_90 without a GPU
    /// (tools/nvcc-check.sh; .ci/tools.sh installs Debian's CUDA 11.8): both files compile, every int4 GEMV
    /// instantiation the engine builds is listed, none of the ones a 7B decodes with at one row (int4-v2 and
    /// int4-v2-wide at 1 and 3 chunks per thread: K = 4,096 and 11,008) spills registers to local memory, and
    /// int4-v2-occ, int4-v2-shared and int4-mma keep their register caps (64; 80 or 128; 128), and the decode attention
    /// spills nothing. The GPU bundle
    /// compiles them again on the device (nvcc 13) on first use; this catches what would otherwise surface there.
    /// </summary>
    [NvccFact]
    public async Task Does_compile_the_decode_kernels_for_sm_90_without_spills_in_the_one_row_gemvs()
    {
        var (exitCode, stdout, stderr) = await RepositoryScript.RunAsync("tools/nvcc-check.sh", TimeSpan.FromMinutes(5));

        Assert.True(exitCode == 0, $"exit {exitCode}: {stderr}");
        var kernels = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t')).Where(f => f.Length == 6)
            .Select(f => (File: f[0], Registers: int.Parse(f[1], CultureInfo.InvariantCulture), SpillStores: int.Parse(f[2], CultureInfo.InvariantCulture),
                Stack: int.Parse(f[4], CultureInfo.InvariantCulture), Name: f[5]))
            .ToList();
        Assert.Contains(kernels, k => k.File == "lowbit_kernels.cu" && k.Name.Contains("rmsnorm_kernel", StringComparison.Ordinal));
        var int4 = kernels.Where(k => k.Name.Contains("int4_gemv_v2_kernel<", StringComparison.Ordinal)).ToList();
        // bf16 and fp16 plain (int4-v2: 9 row/chunk pairs, wide: 4, occupancy: 1), the bf16 fused variants (3 each), and
        // the paired gate/up rows with the SiLU·mul epilogue at one row (int4-v2: 1-4 chunks, wide: 1-3).
        // int4-v2-h2 and -h2s (packed fp16 products, one row, 1-3 chunks per thread): plain in both dtypes, the three fused
        // variants and the paired gate/up rows, each. At one row (bf16) int4-v2 (1-4 chunks), -wide, -h2 and -h2s (1-3
        // chunks each) also build the RMSNorm prologue with the norm's factor deferred to the sums, and at one chunk per
        // thread the paired gate/up rows' (the default at one row since sessions 29-31).
        Assert.Equal((2 * (9 + 4 + 1)) + (3 * (8 + 4 + 1)) + (4 + 3) + (2 * ((2 * 3) + (3 * 3) + 3)) + (2 + 3) + (4 + 3 + 3 + 3) + 4, int4.Count);
        // int4-v2-h2b (384 threads, one chunk, plain in both dtypes and the three fused variants): two blocks per SM, so
        // at most 85 registers, nothing spilled.
        var block = int4.Where(k => k.Name.Contains(", 17, 1, 1,", StringComparison.Ordinal)).ToList();
        Assert.Equal(5, block.Count);
        Assert.All(block, k => Assert.True(k.Registers <= 85 && k.SpillStores == 0, $"{k.Name}: {k.Registers} registers, {k.SpillStores} bytes of spill stores"));
        // The packed fp16 kernels: nothing spilled; one chunk per thread in 128 registers (four 128-thread blocks per SM).
        var half2 = int4.Where(k => k.Name.Contains("_kernel<__nv_bfloat16, 13, ", StringComparison.Ordinal) || k.Name.Contains("_kernel<__nv_bfloat16, 15, ", StringComparison.Ordinal)
            || k.Name.Contains("_kernel<__half, 13, ", StringComparison.Ordinal) || k.Name.Contains("_kernel<__half, 15, ", StringComparison.Ordinal)).ToList();
        Assert.Equal((2 * 18) + (2 * (3 + 1)), half2.Count);
        Assert.All(half2, k => Assert.True(k.SpillStores == 0 && (!k.Name.Contains(", 1, 1,", StringComparison.Ordinal) || k.Registers <= 128),
            $"{k.Name}: {k.Registers} registers, {k.SpillStores} bytes of spill stores"));
        foreach (var geometry in new[] { 1, 3 })
        {
            foreach (var chunks in new[] { 1, 3 })
            {
                var oneRow = int4.Where(k => k.Name.Contains($"_kernel<__nv_bfloat16, {geometry}, 1, {chunks},", StringComparison.Ordinal)).ToList();
                // plain, the three fused variants, the paired rows, the deferred norm and (one chunk) the deferred paired rows
                Assert.Equal(chunks == 1 ? 7 : 6, oneRow.Count);
                Assert.All(oneRow, k => Assert.True(k.SpillStores == 0, $"{k.Name}: {k.SpillStores} bytes of spill stores, {k.Registers} registers"));
            }
        }
        // int4-v2 and -wide at one chunk per thread keep their launch bounds: int4-v2 one row in 85 registers (three
        // blocks per SM), two in 128 (two), -wide one row in 128 (four 128-thread blocks); unbounded, ptxas took 193-255
        // and half or a third of the blocks, so fewer bytes in flight.
        foreach (var (geometry, rows, limit) in new[] { (1, 1, 85), (1, 2, 128), (3, 1, 128) })
        {
            var bounded = int4.Where(k => k.Name.Contains($"_kernel<__nv_bfloat16, {geometry}, {rows}, 1,", StringComparison.Ordinal)).ToList();
            Assert.Equal(rows == 1 ? 7 : 4, bounded.Count);   // the paired rows and the deferred norms: one row only
            Assert.All(bounded, k => Assert.True(k.Registers <= limit && k.SpillStores == 0, $"{k.Name}: {k.Registers} registers, {k.SpillStores} bytes of spill stores"));
        }
        // int4-v2-occ exists for its register cap: 64 registers (four 256-thread blocks per SM), at most a few spilled words.
        var occupancy = int4.Where(k => k.Name.Contains("_kernel<__nv_bfloat16, 5, 1, 1,", StringComparison.Ordinal)).ToList();
        Assert.Equal(4, occupancy.Count);
        Assert.All(occupancy, k => Assert.True(k.Registers <= 64 && k.SpillStores <= 64, $"{k.Name}: {k.Registers} registers, {k.SpillStores} bytes of spill stores"));
        // int4-v2-shared: (rows, chunks) 1/1, 2/1, 1/2, 1/3, plain (both dtypes) and the three bf16 variants, and at one
        // row the deferred RMSNorm, within their blocks' registers (one chunk: three blocks, 80; two or three: two, 128;
        // four to eight, K up to 32,768: one, 255) and a few spilled words at most (none past three chunks).
        var shared = kernels.Where(k => k.Name.Contains("int4_gemv_shared_kernel<", StringComparison.Ordinal)).ToList();
        Assert.Equal((2 * 4) + (3 * 4) + 3 + (5 * 3), shared.Count);   // + the deferred RMSNorm at one row, 1-3 chunks; + 4-8 chunks: plain (both dtypes) and the bf16 residual add
        Assert.All(shared, k =>
        {
            var chunks = int.Parse(k.Name.Split('<', 2)[1].Split(',')[2].Trim(), CultureInfo.InvariantCulture);
            // The second activation sum per chunk (session 14) costs a few words: one chunk spills 8-40 bytes (2-5
            // stores and loads in the tile loop of ~770 instructions), three chunks with a prologue 72-80 bytes, all
            // outside the tile loop (cuobjdump -sass).
            var (registers, spills) = chunks switch { 1 => (80, 48), <= 3 => (128, 96), _ => (255, 0) };
            Assert.True(k.Registers <= registers && k.SpillStores <= spills, $"{k.Name}: {k.Registers} registers, {k.SpillStores} bytes of spill stores");
        });
        // int4-v2-h2c (-h2s with K split over a cluster's blocks): plain in both dtypes, the bf16 residual add and SiLU·mul +
        // residual; -h2s's four 128-thread blocks per SM: at most 128 registers, nothing spilled.
        var cluster = kernels.Where(k => k.Name.Contains("int4_gemv_cluster_kernel<", StringComparison.Ordinal)).ToList();
        Assert.Equal(4, cluster.Count);
        Assert.All(cluster, k => Assert.True(k.Registers <= 128 && k.SpillStores == 0, $"{k.Name}: {k.Registers} registers, {k.SpillStores} bytes of spill stores"));
        // int4-mma (tensor cores): plain at 1, 2, 4 and 8 columns in both dtypes, the three bf16 variants at 1, 2, 4 and 8
        // (3-8 offered with LOWBIT_MMA_FUSED_ROWS), each for groups of 64 and 128; two blocks per SM (128 registers) with
        // four units in flight and nothing spilled. int4-mma16 (16 columns, plain, both dtypes and groups): one block per
        // SM (its activations take 139 KB at K = 4,096), so up to 255 registers, nothing spilled.
        var mma = kernels.Where(k => k.Name.Contains("int4_gemv_mma_kernel<", StringComparison.Ordinal)).ToList();
        static bool Sixteen(string name) => name.Split('<', 2)[1].Split(',')[1].Trim() == "16";
        Assert.Equal(2 * ((2 * 4) + (3 * 4)), mma.Count(k => !Sixteen(k.Name)));
        Assert.Equal(2 * 2, mma.Count(k => Sixteen(k.Name)));
        Assert.All(mma, k => Assert.True(k.Registers <= (Sixteen(k.Name) ? 255 : 128) && k.SpillStores == 0, $"{k.Name}: {k.Registers} registers, {k.SpillStores} bytes of spill stores"));
        // The one-launch decode attention: both dtypes, D 64 and 128, with and without the fused RoPE, for one or up to
        // eight query heads per kv head, nothing spilled (each head's state and four positions' rows live in registers).
        var attention = kernels.Where(k => k.Name.Contains("decode_attention_kernel<", StringComparison.Ordinal)).ToList();
        Assert.Equal(2 * 2 * 2 * 2, attention.Count);
        Assert.All(attention, k => Assert.True(k.SpillStores == 0, $"{k.Name}: {k.Registers} registers, {k.SpillStores} bytes of spill stores"));
        // No stack frame beyond the spills: a kernel parameter array indexed in a loop (session 17's L2 prefetch ranges,
        // since removed) is copied to local memory by every thread, and that made the one-row GEMVs 30-100 % slower.
        Assert.All(kernels.Where(k => k.File == "lowbit_kernels_v2.cu"),
            k => Assert.True(k.Stack <= k.SpillStores + 16, $"{k.Name}: {k.Stack} bytes of stack frame, {k.SpillStores} of spill stores"));
    }

    /// <summary>
    /// The v2 kernels' C ABI over libtorch (lowbit_kernels_v2.cpp) type-checks with g++ against declaration-only
    /// stand-ins for the libtorch headers it uses (tools/torch-stubs): PyTorch's headers exist only on the device, where
    /// an error would take every v2 kernel away for that run.
    /// </summary>
    [NvccFact]
    public async Task Does_type_check_the_v2_kernels_libtorch_wrapper_against_the_header_stand_ins()
    {
        var (exitCode, stdout, stderr) = await RepositoryScript.RunAsync("tools/native-cpp-check.sh", TimeSpan.FromMinutes(2));

        Assert.True(exitCode == 0, $"exit {exitCode}: {stdout} {stderr}");
        Assert.Contains("type-checks", stdout, StringComparison.Ordinal);
    }
}

/// <summary>A fact that needs nvcc on PATH; skipped, with the reason, when it is missing.</summary>
public sealed class NvccFactAttribute : FactAttribute
{
    public static readonly string? Binary =
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Where(d => d.Length > 0).Select(d => Path.Combine(d, "nvcc")).FirstOrDefault(File.Exists);

    public NvccFactAttribute()
    {
        if (Binary is null)
        {
            Skip = "nvcc is not on PATH (bash .ci/tools.sh installs Debian's nvidia-cuda-toolkit)";
        }
    }
}
