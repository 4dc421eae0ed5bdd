using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Lowbit.Engine.Decoding;

/// <summary>
/// The optional <c>liblowbit_kernels_v2.so</c> next to the native decode library (src/Lowbit.Engine/native/
/// lowbit_kernels_v2.cu): the second int4 dequantize-GEMV (1-2 rows at K ≤ 16,384, 3-4 rows at K ≤ 4,096), the second
/// dense GEMV (1-8 rows, at most 64 activation floats per thread) and the int4 → 16-bit dequantize that
/// <see cref="Int4Weight.Dequantize"/> uses on a GPU (prefill, and decode batches the GEMVs do not take). Built apart from
/// the decode library, so a compile failure there only removes these kernels; <see cref="KernelSelector"/> measures them
/// against the first kernels, cuBLAS and dequantize + <c>linear</c>, and uses them only where they are fastest.
/// </summary>
public static unsafe class NativeKernelsV2
{
    /// <summary>The file name, looked up in the folder of <see cref="NativeKernels.LibraryEnv"/>.</summary>
    public const string LibraryName = "liblowbit_kernels_v2.so";

    /// <summary>
    /// Set to <c>0</c> to leave the v2 kernels unloaded (the first kernels, cuBLAS and the eager dequantize remain). On by
    /// default since their self-check and decode benchmarks passed on the H100 and the H200 (2026-12-05, docs/gpu.md).
    /// </summary>
    public const string SwitchEnv = "LOWBIT_KERNELS_V2";

    private static readonly Lock Gate = new();
    private static bool _tried;
    private static string _status = "not loaded";
    private static delegate* unmanaged<IntPtr> _lastError;
    private static delegate* unmanaged<int, int, int> _int4Supports;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, int, IntPtr, int> _int4Linear;
    private static delegate* unmanaged<int, int, int> _gemvSupports;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, int> _gemv;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, int, IntPtr, int> _int4Dequantize;
    private static delegate* unmanaged<int, int, int, int, int, int> _attentionSupports;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, int, IntPtr, int> _attention;
    private static delegate* unmanaged<int, int, int, int, int, int, int> _int4XSupports;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, int, IntPtr, int, int, IntPtr, double, IntPtr, IntPtr, int> _int4LinearX;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, int> _ropeKv;
    private static delegate* unmanaged<IntPtr, int, int> _stepMark;
    private static delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, int> _greedyStep;

    /// <summary>True when the library is loaded.</summary>
    public static bool Available
    {
        get
        {
            EnsureLoaded();
            return _lastError != null;
        }
    }

    /// <summary>Why the kernels are or are not available (for logs and the self-check).</summary>
    public static string Status
    {
        get
        {
            EnsureLoaded();
            return _status;
        }
    }

    /// <summary>True when the int4 GEMV v2 takes <paramref name="rows"/> activation rows of width <paramref name="inFeatures"/>.</summary>
    public static bool Int4Supports(long rows, long inFeatures) =>
        Available && rows is >= 1 and <= 32 && inFeatures is > 0 and <= int.MaxValue && _int4Supports((int)rows, (int)inFeatures) == 1;

    /// <summary>True when the dense GEMV v2 takes <paramref name="rows"/> activation rows of width <paramref name="inFeatures"/>.</summary>
    public static bool GemvSupports(long rows, long inFeatures) =>
        Available && rows is >= 1 and <= 32 && inFeatures is > 0 and <= int.MaxValue && _gemvSupports((int)rows, (int)inFeatures) == 1;

    /// <summary><paramref name="output"/> <c>[B, N]</c> = x · dequant(packed, scales, zeros)ᵀ (see <see cref="Int4Supports"/>).</summary>
    public static void Int4Linear(Tensor x, Tensor packed, Tensor scales, Tensor zeros, int groupSize, Tensor output)
    {
        Require();
        Check(_int4Linear(x.Handle, packed.Handle, scales.Handle, zeros.Handle, groupSize, output.Handle), "int4 v2 linear");
    }

    /// <summary><paramref name="output"/> <c>[B, N]</c> = x · Wᵀ (see <see cref="GemvSupports"/>).</summary>
    public static void Gemv(Tensor x, Tensor weight, Tensor output)
    {
        Require();
        Check(_gemv(x.Handle, weight.Handle, output.Handle), "gemv v2");
    }

    /// <summary>
    /// <paramref name="output"/> <c>[N, K]</c> (bf16/fp16, contiguous) = (q − z) · s of the packed codes, with
    /// <see cref="Int4Weight.Dequantize"/>'s arithmetic (fp32, one rounding): bit-identical to it.
    /// </summary>
    public static void Int4Dequantize(Tensor packed, Tensor scales, Tensor zeros, int groupSize, Tensor output)
    {
        Require();
        Check(_int4Dequantize(packed.Handle, scales.Handle, zeros.Handle, groupSize, output.Handle), "int4 dequantize");
    }

    /// <summary>
    /// True when the library has the int4 GEMV's variants (<see cref="Int4LinearX"/>: the wide geometry, the decode step's
    /// prologues and residual add) and the fused RoPE + KV-cache write (<see cref="RopeKv"/>).
    /// </summary>
    public static bool FusedAvailable => Available && _int4LinearX != null && _ropeKv != null;

    /// <summary>
    /// True when <see cref="Int4LinearX"/> takes this variant: <paramref name="geometry"/> 1 (int4-v2: 256 threads, 16 codes
    /// per chunk), 3 (int4-v2-wide: 128 threads, 32 codes per chunk), 5 (int4-v2-occ: int4-v2 at four blocks per SM),
    /// 7 (int4-v2-shared: activations in shared memory, scales per quad; group % 64 == 0, checked at launch) or 9
    /// (int4-mma: tensor cores, 1-32 rows, 8 per launch; groups of 64 or 128, checked at launch) or 11 (int4-mma16: 9-32
    /// rows, 16 per launch, plain; past K = 4,096 in K splits, which need arrival counters: <see cref="Int4LinearX"/>),
    /// 13 or 15 (int4-v2-h2 and -h2s: the wide geometry at one row with packed fp16 products, K ≤ 4,096, or ≤ 12,288 with
    /// LOWBIT_INT4_HALF2=2; off with LOWBIT_INT4_HALF2=0), 17 (int4-v2-h2b: -h2s in 384-thread blocks, K ≤ 12,288, with
    /// LOWBIT_INT4_HALF2=2), 19 (int4-v2-h2c: -h2s at one row with K split over a cluster's 2-8 blocks, 4,096 &lt; K ≤
    /// 32,768; plain, the residual add, SiLU·mul + residual; with LOWBIT_INT4_CLUSTER=1).
    /// </summary>
    public static bool Int4XSupports(ScalarType dtype, long rows, long inFeatures, int geometry, Int4Prologue prologue, bool residual) =>
        FusedAvailable && dtype is ScalarType.BFloat16 or ScalarType.Float16 && rows is >= 1 and <= 32 && inFeatures is > 0 and <= int.MaxValue
        && _int4XSupports(dtype == ScalarType.BFloat16 ? 0 : 1, (int)rows, (int)inFeatures, geometry, (int)prologue, residual ? 1 : 0) == 1;

    /// <summary>
    /// <paramref name="output"/> <c>[B, N]</c> = P(x) · dequant(W)ᵀ (+ <paramref name="residual"/>): P is nothing, the
    /// RMSNorm with <paramref name="normWeight"/> (x the residual stream <c>[B, K]</c>), or SiLU·mul (x the fused gate/up
    /// output <c>[B, 2K]</c>), each with the separate kernel's roundings; the residual add is <c>T(T(x·Wᵀ) + r)</c>.
    /// With <see cref="Int4Prologue.RmsNormSiluMul"/> the output is <c>[B, N/2]</c>: SiLU·mul of the two halves' outputs.
    /// <paramref name="arrivals"/>: int32 <c>[⌈N / 16⌉]</c>, zero, on the weight's device (the kernel leaves it zero), for
    /// int4-mma16's K splits; the launches of one counter buffer must be ordered on one stream.
    /// </summary>
    public static void Int4LinearX(Tensor x, Int4Weight weight, Tensor output, int geometry, Int4Prologue prologue, Tensor? normWeight, double eps, Tensor? residual,
        Tensor? arrivals = null)
    {
        Require();
        if (_int4LinearX == null)
        {
            throw new InvalidOperationException("the int4 GEMV variants are unavailable: the v2 library lacks them");
        }
        Check(_int4LinearX(x.Handle, weight.Packed.Handle, weight.Scales.Handle, weight.Zeros.Handle, weight.GroupSize, output.Handle, geometry,
            (int)prologue, normWeight?.Handle ?? IntPtr.Zero, eps, residual?.Handle ?? IntPtr.Zero, arrivals?.Handle ?? IntPtr.Zero), "int4 v2x linear");
    }

    /// <summary>
    /// The decode step's RoPE and KV-cache write in one kernel: the query heads of <paramref name="qkv"/>
    /// <c>[B, (H + 2·KVH)·D]</c> rotated into <paramref name="query"/> <c>[B, H·D]</c>, its key heads rotated and value
    /// heads as they are into row <c>b</c>, position <c>clamp(positions[b])</c> of <paramref name="keys"/>/<paramref name="values"/>
    /// <c>[slots, max, KVH, D]</c> (what <c>Rope</c> and two <c>index_copy_</c> did), cos/sin <c>[B, D]</c>.
    /// </summary>
    public static void RopeKv(Tensor qkv, Tensor cos, Tensor sin, Tensor positions, Tensor query, Tensor keys, Tensor values)
    {
        Require();
        if (_ropeKv == null)
        {
            throw new InvalidOperationException("the fused RoPE + KV write is unavailable: the v2 library lacks it");
        }
        Check(_ropeKv(qkv.Handle, cos.Handle, sin.Handle, positions.Handle, query.Handle, keys.Handle, values.Handle), "rope kv");
    }

    /// <summary>
    /// The decode step's attention runs <see cref="DecodeAttention"/> (in the fused step <see cref="RopeAttention"/>) up to
    /// batch <c>FastDecoder.NativeAttentionDefaultMaxBatch</c> and SDPA above; set to <c>native</c> for every batch,
    /// <c>sdpa</c> for none (docs/gpu.md, *Native decode attention*).
    /// </summary>
    public const string AttentionEnv = "LOWBIT_DECODE_ATTENTION";

    /// <summary>True when the decode attention is loaded and takes this shape (head dim 64 or 128, 1-8 query heads per kv head).</summary>
    public static bool AttentionSupports(long rows, long heads, long kvHeads, long headDim, long length) =>
        Available && _attentionSupports != null && rows is >= 1 and <= int.MaxValue && length is >= 1 and <= int.MaxValue
        && _attentionSupports((int)rows, (int)heads, (int)kvHeads, (int)headDim, (int)length) == 1;

    /// <summary>
    /// <paramref name="output"/> <c>[B, heads·D]</c> = softmax(q·Kᵀ/√D)·V over slots <c>0..B−1</c> of the cache
    /// <c>[slots, max, kv_heads, D]</c>, row b attending positions <c>0..min(positions[b], length − 1)</c> (the decode
    /// step's SDPA with its additive mask), in one launch split over the positions. <paramref name="arrivals"/>: int32
    /// zeros, at least <c>B·kv_heads</c> (the kernel's split counters; it leaves them zero).
    /// </summary>
    public static void DecodeAttention(Tensor q, Tensor keys, Tensor values, Tensor positions, Tensor arrivals, int length, Tensor output)
    {
        RequireAttention();
        Check(_attention(q.Handle, IntPtr.Zero, IntPtr.Zero, keys.Handle, values.Handle, positions.Handle, arrivals.Handle, length, output.Handle), "decode attention");
    }

    /// <summary>
    /// <see cref="RopeKv"/> followed by <see cref="DecodeAttention"/> in one kernel: the query heads and new key of the
    /// fused q/k/v output <paramref name="qkv"/> <c>[B, (H + 2·KVH)·D]</c> rotated with cos/sin <c>[B, D]</c>, the key and
    /// value written to the cache at <c>clamp(positions[b])</c>, and the attention of the rotated queries into
    /// <paramref name="output"/> <c>[B, H·D]</c>. Bit-identical to the two (the self-check compares them).
    /// </summary>
    public static void RopeAttention(Tensor qkv, Tensor cos, Tensor sin, Tensor positions, Tensor keys, Tensor values, Tensor arrivals, int length, Tensor output)
    {
        RequireAttention();
        Check(_attention(qkv.Handle, cos.Handle, sin.Handle, keys.Handle, values.Handle, positions.Handle, arrivals.Handle, length, output.Handle), "rope attention");
    }

    /// <summary>True when the library has the decode step's greedy sampling kernel (<see cref="GreedyStep"/>).</summary>
    public static bool GreedyStepAvailable => Available && _greedyStep != null;

    /// <summary>
    /// The decode step's greedy sampling in one kernel: for each row b of <paramref name="logits"/> <c>[B, vocab]</c>,
    /// <c>next[b] = argmax(logits[b])</c> (torch's choice: the first largest value, a NaN counting as largest), the same
    /// token into <c>history[b, min(clamp(positions[b]) + 1, max − 1)]</c> (<paramref name="history"/> int64
    /// <c>[slots, max]</c>), then <c>positions[b] += 1</c>: what argmax, <c>index_copy_</c>, <c>copy_</c> and <c>add_</c> did.
    /// </summary>
    public static void GreedyStep(Tensor logits, Tensor next, Tensor history, Tensor positions)
    {
        if (!GreedyStepAvailable)
        {
            throw new InvalidOperationException("the greedy step kernel is unavailable: the v2 library lacks it");
        }
        Check(_greedyStep(logits.Handle, next.Handle, history.Handle, positions.Handle), "greedy step");
    }

    /// <summary>True when the library has the decode step's trace mark (<see cref="StepMark"/>).</summary>
    public static bool StepMarkAvailable => Available && _stepMark != null;

    /// <summary>
    /// The decode step's trace (a diagnostic): once the work queued before it has finished, adds the nanoseconds since
    /// the previous mark to <c>trace[1 + index]</c> (<paramref name="trace"/> int64 on the GPU; <c>trace[0]</c> is the
    /// previous mark's time, 0 for none). A mark is one more launch in the step.
    /// </summary>
    public static void StepMark(Tensor trace, int index)
    {
        if (!StepMarkAvailable)
        {
            throw new InvalidOperationException("the step trace mark is unavailable: the v2 library lacks it");
        }
        Check(_stepMark(trace.Handle, index), "step mark");
    }

    private static void RequireAttention()
    {
        Require();
        if (_attention == null)
        {
            throw new InvalidOperationException("native decode attention unavailable: the v2 library lacks it");
        }
    }

    private static void Require()
    {
        if (!Available)
        {
            throw new InvalidOperationException($"native v2 kernels unavailable: {_status}");
        }
    }

    private static void Check(int rc, string what)
    {
        if (rc != 0)
        {
            throw new InvalidOperationException($"native {what} failed: {Marshal.PtrToStringUTF8(_lastError()) ?? "unknown"}");
        }
    }

    private static void EnsureLoaded()
    {
        lock (Gate)
        {
            if (_tried)
            {
                return;
            }
            _tried = true;
            if (Environment.GetEnvironmentVariable(SwitchEnv) == "0")
            {
                _status = $"off ({SwitchEnv}=0)";
                return;
            }
            var native = Environment.GetEnvironmentVariable(NativeKernels.LibraryEnv);
            if (string.IsNullOrEmpty(native) || Path.GetDirectoryName(native) is not { } folder)
            {
                _status = $"{NativeKernels.LibraryEnv} is not set";
                return;
            }
            var path = Path.Combine(folder, LibraryName);
            if (!NativeLibrary.TryLoad(path, out var handle))
            {
                _status = $"cannot load {path} (see the native build.log next to it)";
                return;
            }
            if (NativeLibrary.TryGetExport(handle, "lowbit_v2_int4_linear", out var int4Linear)
                && NativeLibrary.TryGetExport(handle, "lowbit_v2_supports", out var int4Supports)
                && NativeLibrary.TryGetExport(handle, "lowbit_v2_gemv", out var gemv)
                && NativeLibrary.TryGetExport(handle, "lowbit_v2_gemv_supports", out var gemvSupports)
                && NativeLibrary.TryGetExport(handle, "lowbit_v2_int4_dequantize", out var int4Dequantize)
                && NativeLibrary.TryGetExport(handle, "lowbit_v2_last_error", out var lastError))
            {
                _int4Linear = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, int, IntPtr, int>)int4Linear;
                _int4Supports = (delegate* unmanaged<int, int, int>)int4Supports;
                _gemv = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, int>)gemv;
                _gemvSupports = (delegate* unmanaged<int, int, int>)gemvSupports;
                _int4Dequantize = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, int, IntPtr, int>)int4Dequantize;
                if (NativeLibrary.TryGetExport(handle, "lowbit_v2_decode_attention_x", out var attention)
                    && NativeLibrary.TryGetExport(handle, "lowbit_v2_attention_supports", out var attentionSupports))
                {
                    _attention = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, int, IntPtr, int>)attention;
                    _attentionSupports = (delegate* unmanaged<int, int, int, int, int, int>)attentionSupports;
                }
                if (NativeLibrary.TryGetExport(handle, "lowbit_v2_int4_linear_x", out var int4LinearX)
                    && NativeLibrary.TryGetExport(handle, "lowbit_v2_int4_x_supports", out var int4XSupports)
                    && NativeLibrary.TryGetExport(handle, "lowbit_v2_rope_kv", out var ropeKv))
                {
                    _int4LinearX = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, int, IntPtr, int, int, IntPtr, double, IntPtr, IntPtr, int>)int4LinearX;
                    _int4XSupports = (delegate* unmanaged<int, int, int, int, int, int, int>)int4XSupports;
                    _ropeKv = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, int>)ropeKv;
                }
                if (NativeLibrary.TryGetExport(handle, "lowbit_v2_step_mark", out var stepMark))
                {
                    _stepMark = (delegate* unmanaged<IntPtr, int, int>)stepMark;
                }
                if (NativeLibrary.TryGetExport(handle, "lowbit_v2_greedy_step", out var greedyStep))
                {
                    _greedyStep = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, int>)greedyStep;
                }
                _lastError = (delegate* unmanaged<IntPtr>)lastError;
                _status = $"loaded {path}";
            }
            else
            {
                _status = $"{path} lacks an export";
            }
        }
    }
}

/// <summary>What the int4 GEMV variants (<see cref="NativeKernelsV2.Int4LinearX"/>) do to their activations first.</summary>
public enum Int4Prologue
{
    /// <summary>Nothing: x as given.</summary>
    None = 0,

    /// <summary>HF RMSNorm of x (the residual stream) with the layer's norm weight.</summary>
    RmsNorm = 1,

    /// <summary>SiLU(gate) · up of x = the fused gate/up output <c>[B, 2K]</c>.</summary>
    SiluMul = 2,

    /// <summary>
    /// The fused gate/up projection: <see cref="RmsNorm"/> in, and out <c>[B, N/2]</c> = SiLU(gate)·up of the weight's
    /// halves (rows <c>0..N/2</c> gate, <c>N/2..N</c> up), each rounded as the separate SiLU·mul kernel rounds; the
    /// kernel's tiles pair gate row i with up row i. One row, int4-v2 and int4-v2-wide.
    /// </summary>
    RmsNormSiluMul = 3,
}
