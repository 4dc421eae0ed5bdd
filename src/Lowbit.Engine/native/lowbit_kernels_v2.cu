// Lowbit decode kernels, second generation (CUDA C++, no libtorch headers). Built by build.sh into its own
// liblowbit_kernels_v2.so, apart from liblowbit_native.so, so that a compile or launch problem here only removes these
// kernels: the engine measures them against the first-generation ones and cuBLAS when a decoder builds
// (KernelSelection.cs) and uses whichever is fastest.
//
// int4_gemv_v2: the int4 dequantize-GEMV for 1 to 4 activation rows (3-4 only for K <= 4096) over our `lowbit` packing (packed[n, k/2], byte j =
// code 2j in its low nibble, 2j+1 in its high nibble; fp16 scales/zeros [n, k/group]).
// Why the first kernel (lowbit_kernels.cu, int4_gemv_kernel) reaches only about a quarter of the bandwidth: every warp
// re-reads all of x for each pair of rows (2 bytes of activation from L1 per half byte of weight, in 64-byte-strided,
// badly coalesced loads), converts it again, recomputes its sums, and converts each code with a shift, a mask and an
// add. Here:
//  - a block of 256 threads owns all of K: thread t holds the activations of its 16-code chunks (c = t + 256 j) in
//    registers as floats, with their sums, loaded and converted once per block, then loops over tiles of rows
//    (a persistent grid: about as many blocks as fit on the device at once);
//  - per row a thread reads 8 bytes per chunk (a warp reads 256 contiguous bytes), and the tile's loads for the next
//    rows are issued before the current tile's cross-warp reduction, so memory stays busy across the __syncthreads;
//  - two masks split 8 codes into their low and high nibbles, and one byte permute per code makes an exact float
//    (0.5 + q/256 or 0.5 + q/4096, see code_of), so a code costs a permute and an FMA (2.25 instructions per weight
//    with the masks: above the ~33 weights per clock per SM that 4.28 TB/s asks of an H200, where the first kernel's
//    ~3.5 was at the limit);
//  - per chunk (inside one group, as group % 32 == 0): acc += s * (sum x*q - z * sum x) in fp32 (through the 0.5 + q/256
//    form, see code_of), so results differ from the eager reference (x @ dequant(W)^T) by fp32 summation order and the reference's rounding
//    of the dequantized weight to the model dtype.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <stdlib.h>

#include <type_traits>

// Programmatic dependent launch (sm_90): the int4 GEMVs and the RoPE + KV write are launched so that they may start
// while the kernel before them finishes; each issues the loads that do not depend on it (its first weight tile) and
// then waits for it (griddepcontrol.wait: the previous grid complete, its writes visible) before reading activations.
// Each also lets its own dependents start at once (launch_dependents): they wait the same way. A kernel launched
// without the attribute (or by torch) does not start early, and the wait returns at once. On by default since measured
// (H200, session 15: 7B int4 g64 batch 1 446.2 tokens/s with it, 400.4 without, bf16 237.7 / 237.6, graphs captured);
// LOWBIT_PDL=0 turns it off. build.sh compiles without it (LOWBIT_NO_PDL) if the first compile fails.
// The shared kernel's dynamic shared memory (the CPU emulation defines its own).
#ifndef LOWBIT_DYNAMIC_SHARED
#define LOWBIT_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

#if defined(LOWBIT_EMULATED) || defined(LOWBIT_NO_PDL)
#define LOWBIT_PDL_WAIT()
#define LOWBIT_PDL_TRIGGER()
#else
#define LOWBIT_PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#define LOWBIT_PDL_TRIGGER() asm volatile("griddepcontrol.launch_dependents;" :::)
#endif

namespace {

template <typename T> struct Cvt2;
template <> struct Cvt2<__nv_bfloat16> {
  static __device__ __forceinline__ float f(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 t(float v) { return __float2bfloat16(v); }
};
template <> struct Cvt2<__half> {
  static __device__ __forceinline__ float f(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half t(float v) { return __float2half(v); }
};

__device__ __forceinline__ float warp_sum2(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Byte B of `bytes` as an exact float, one instruction per code and no add. A low nibble (byte q, 0..15) becomes
// 0.5 + q/256: the permute builds 0x3F0q0000 (selector nibbles, low to high: result bytes 0 and 1 <- 0x00 (byte 0 of
// 0x3F000000), byte 2 <- bytes[B], byte 3 <- 0x3F). A high nibble left in place (byte 16h, masked by 0xF0, no shift)
// goes to result byte 1 instead, 0x3F00(16h)00 = 0.5 + 16h/2^16 = 0.5 + h/4096 (in byte 2 its top bit would reach the
// exponent). The products are exact in fp32: x (8 or 11 significant bits) times 0.5 + q/256 (a span of 8 bits) or,
// for the high codes, 16x times 0.5 + h/4096 (12 bits). With the odd codes' activations stored as 16x (x'):
// sum x'*(code float) = sum x*q / 256 + sum x' / 2, so sum x*q = 256 d - 128 sum x' (chunk_term).
template <int B>
__device__ __forceinline__ float code_of(uint32_t bytes) {
  return __uint_as_float(__byte_perm(bytes, 0x3F000000u, 0x7044u | ((unsigned)B << 8)));
}
template <int B>
__device__ __forceinline__ float code_of_high(uint32_t bytes) {
  return __uint_as_float(__byte_perm(bytes, 0x3F000000u, 0x7404u | ((unsigned)B << 4)));
}

// The code floats of one 32-bit word: codes 8w..8w+7 of its chunk, code 2i in the low nibble of byte i, 2i + 1 in its
// high nibble (a caller that uses half of them leaves the other half's permutes to dead-code elimination).
__device__ __forceinline__ void word_codes(uint32_t word, float (&q)[8]) {
  const uint32_t lo = word & 0x0F0F0F0Fu;
  const uint32_t hi = word & 0xF0F0F0F0u;
  q[0] = code_of<0>(lo); q[1] = code_of_high<0>(hi); q[2] = code_of<1>(lo); q[3] = code_of_high<1>(hi);
  q[4] = code_of<2>(lo); q[5] = code_of_high<2>(hi); q[6] = code_of<3>(lo); q[7] = code_of_high<3>(hi);
}

// A chunk's activation sums: sum x (for the zero) and 128 sum x' (the offset of the code floats, see code_of).
struct ChunkSum {
  float x;
  float offset;
};

// What the kernel does to its activations before the product (the decode step's fusions, FusedDecode in
// FastDecoder.cs), and what it adds to its output:
//  - kPlain: x as given;
//  - kNorm: HF RMSNorm of x with weight w (rmsnorm_kernel's arithmetic: T(w * T(x * rsqrt(mean(x^2) + eps))));
//    every block sums the squares of all of x itself (it holds all of K anyway), so the norm needs no kernel of its own;
//  - kSiluMul: x is the fused gate/up output [B, 2K]: T(T(silu(g)) * u) (silu_mul_kernel's arithmetic);
//  - residual (RES): out = T(T(x W^T) + residual), the residual add that the next RMSNorm kernel did (T(o + r));
//  - kNormSiluPairs (the fused gate/up projection, one row, int4-v2 and -wide): kNorm's prologue, and the rows paired
//    so that a tile holds gate row i next to up row n/2 + i (tile row 2i' and 2i' + 1): the epilogue writes
//    out[b, i] = T(T(silu(T(g))) * T(u)) (silu_mul_kernel's arithmetic on the rounded outputs), out [B, n/2]. The down
//    projection then reads the activations as they are, where kSiluMul made each of its blocks load the whole gate/up
//    output (2K values per row) and take K exponentials.
constexpr int kPlain = 0;
constexpr int kNorm = 1;
constexpr int kSiluMul = 2;
constexpr int kNormSiluPairs = 3;
// kNorm and kNormSiluPairs with the RMSNorm's factor deferred (template values only; the launch maps kNorm to it for
// int4-v2, -wide, -h2, -h2s and -shared at one row, and kNormSiluPairs for the first four at one chunk per thread: the
// q/k/v and gate/up kernels of a one-row step, unless LOWBIT_NORM_DEFER=0): the products start on w·x as soon as x is
// in (no block reduction and no barrier before them; at one chunk per thread the norm weight is loaded with the first
// tile, before the wait, at 2-4 chunks and in -shared with x after it, where its 8-16 registers a chunk would be held
// across the first tile's loads), each warp leaves its sum of squares in shared memory, and the tile's sums are
// multiplied by rsqrt(mean(x^2) + eps) after the tile's barrier. Not
// rmsnorm_kernel's roundings (T(w · T(x · r)) becomes r · (w · x) in fp32): closer to the exact product than the
// eager path's own roundings are (the CPU emulation prints both: 1.9e-3 to 4.9e-3 normwise against 2.1e-3 to 6.7e-3),
// 1.1-1.6 µs per call faster cold and +4.7 % int4 batch-1 tokens/s on the H100 (docs/gpu.md, run 73).
constexpr int kDefer = 4;
__host__ __device__ constexpr int base_prologue(int pro) { return pro >= kDefer ? pro - kDefer : pro; }

struct Fusion {
  const void* norm_w;    // [K] in the model dtype (kNorm)
  float eps;             // kNorm
  const void* residual;  // [B, N] rows at res_stride (RES)
  int64_t res_stride;
  // int4-mma16's K splits (mma::splits16): more than 1 when 16 rows' activations over all of K do not fit in shared
  // memory; each split's partial tiles go to `work` (fp32), the last block of a tile to arrive (a counter in
  // `arrivals`, zero before the launch and after it) adds them up in split order and writes the output.
  int splits;
  float* work;
  int* arrivals;
};

template <typename T>
__device__ __forceinline__ float rnd2(float v) { return Cvt2<T>::f(Cvt2<T>::t(v)); }

// The int4 GEMV's two geometries (G): G = 1, "int4-v2": 256 threads, 16 codes (8 bytes) per chunk; G = 3,
// "int4-v2-wide": 128 threads, 32 codes (16 bytes) per chunk, so a thread has twice the bytes in flight per row for the
// same activations per byte (the first geometry reached 1.3-2.1 TB/s of the H200's 4.28 at one row, docs/gpu.md run
// 22; a cp.async pipeline through shared memory, tried as G = 2, was slower at every 7B shape: run 23). Both cover
// 4,096 codes of K per chunk per thread, so K <= 16384 takes at most four chunks per thread.
//
// G = 5, "int4-v2-occ": int4-v2's layout with __launch_bounds__(256, 4), so ptxas fits 64 registers (75 without, with
// 24 bytes of spills) and four blocks fit per SM instead of three: a third more bytes in flight. One row, one chunk
// per thread only (K <= 4096): forced to two blocks, the three- and four-chunk kernels spill 300 bytes and more.
//
// G = 13 and 15, "int4-v2-h2" and "-h2s": int4-v2-wide's layout at one row with the products in packed fp16 (see
// tile_products_h2): 2.70 and 2.18 instructions per code in the tile loop where -wide takes 3.08 (docs/gpu.md, session
// 22: the one-row GEMV is bound by instruction issue, not by DRAM).
//
// G = 17, "int4-v2-h2b": -h2s's products in a block of 384 threads (12 warps), one chunk of 32 codes per thread up to
// K = 12,288, so a 7B's down projection (K = 11,008) takes 32 activations per thread through the prologue like the
// K = 4,096 projections, not 96 at three chunks (which lost in the step, run 57b); 4 rows per tile, two blocks per SM.
__host__ __device__ constexpr bool wide_layout(int g) { return g == 3 || g == 13 || g == 15 || g == 17; }
__host__ __device__ constexpr bool half2_products(int g) { return g == 13 || g == 15 || g == 17; }

// The geometries with the deferred RMSNorm (kDefer) at one row.
__host__ __device__ constexpr bool defer_built(int g) { return g == 1 || g == 3 || g == 13 || g == 15; }

__host__ __device__ constexpr int threads_of(int g) { return g == 17 ? 384 : wide_layout(g) ? 128 : 256; }
__host__ __device__ constexpr int codes_of(int g) { return wide_layout(g) ? 32 : 16; }

template <int G>
struct Geo {
  static constexpr int kThreads = threads_of(G);
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kCodes = codes_of(G);                // codes per chunk
  static constexpr int kWords = kCodes / 8;                 // 32-bit words of codes per chunk
};

struct Chunk2 { uint32_t w[2]; };
struct Chunk4 { uint32_t w[4]; };
template <int G> using ChunkOf = typename std::conditional<wide_layout(G), Chunk4, Chunk2>::type;

// Rows per tile: fewer when the activations take many registers (int4-v2-h2's take half of -wide's).
template <int G, int NB, int CH>
struct Tile {
  static constexpr int R = G == 17 ? 4 : half2_products(G) ? (CH <= 2 ? 8 : 4)
                         : G != 3 ? (NB * CH >= 4 ? 4 : 8) : (NB * CH == 1 ? 8 : NB * CH == 2 ? 4 : 2);
};

template <int G>
__device__ __forceinline__ ChunkOf<G> load_chunk(const uint8_t* __restrict__ p) {
  ChunkOf<G> v;
  if constexpr (!wide_layout(G)) {
    const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
    v.w[0] = u.x;
    v.w[1] = u.y;
  } else {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    v.w[0] = u.x;
    v.w[1] = u.y;
    v.w[2] = u.z;
    v.w[3] = u.w;
  }
  return v;
}

// Where a thread's chunk j lives in every row: its codes' byte offset (`code`) and its group (`group`). A dead chunk
// (past K) points at the row's last chunk: its loads stay in bounds and need no branch, and its product is exactly 0
// because its activations are (d = 0 and sum x = 0 in chunk_term). Offsets are 32-bit: the host launches only
// matrices with n * K / 2 < 2^31 (int4_linear).
template <int CH>
struct ChunkAt {
  uint32_t code[CH];
  uint32_t group[CH];
};

// `first`, `count`: the chunks of a K split (int4-v2-h2c's block of a cluster), all of K by default.
template <int CH>
__device__ __forceinline__ ChunkAt<CH> chunk_at(int tid, int threads, int codes, int k, int group, int first = 0,
                                                int count = 0) {
  ChunkAt<CH> at;
  const int chunks = count > 0 ? count : k / codes;
#pragma unroll
  for (int j = 0; j < CH; j++) {
    const int c = first + min(tid + j * threads, chunks - 1);
    at.code[j] = (uint32_t)c * (uint32_t)(codes / 2);
    at.group[j] = (uint32_t)((c * codes) / group);
  }
  return at;
}

// Loads a tile's codes, scales and zeros into registers: per row one 32-bit multiply-add for the codes' offset and one
// for the scales' (rows past n repeat the last row; their outputs are not written).
// PAIRS (kNormSiluPairs): tile row v = r0 + r is weight row v / 2 for even v and n / 2 + v / 2 for odd v.
template <int G, int R, int CH, bool PAIRS = false>
__device__ __forceinline__ void load_tile(const uint8_t* __restrict__ packed, const unsigned short* __restrict__ scales,
                                          const unsigned short* __restrict__ zeros, int r0, int n, int row_bytes,
                                          int groups, const ChunkAt<CH>& at, ChunkOf<G> (&wv)[R][CH],
                                          unsigned short (&sv)[R][CH], unsigned short (&zv)[R][CH]) {
  const int last = n - 1 - r0;
  const uint32_t code0 = (uint32_t)r0 * (uint32_t)row_bytes;
  const uint32_t group0 = (uint32_t)r0 * (uint32_t)groups;
#pragma unroll
  for (int r = 0; r < R; r++) {
    uint32_t code_row, group_row;
    if constexpr (PAIRS) {
      const int v = r0 + min(r, last);
      const uint32_t row = (uint32_t)((v & 1) ? n / 2 + (v >> 1) : (v >> 1));
      code_row = row * (uint32_t)row_bytes;
      group_row = row * (uint32_t)groups;
    } else {
      const uint32_t rr = (uint32_t)min(r, last);
      code_row = code0 + rr * (uint32_t)row_bytes;
      group_row = group0 + rr * (uint32_t)groups;
    }
#pragma unroll
    for (int j = 0; j < CH; j++) {
      wv[r][j] = load_chunk<G>(packed + (code_row + at.code[j]));
      sv[r][j] = __ldg(scales + (group_row + at.group[j]));
      zv[r][j] = __ldg(zeros + (group_row + at.group[j]));
    }
  }
}

// A chunk's contribution s * sum x (q - z) from d = sum x' * (code float) and the chunk's sums (see code_of):
// sum x*(q - z) = 256 d - 128 sum x' - z sum x.
__device__ __forceinline__ float chunk_term(float s, float z, float d, const ChunkSum& sum, float acc) {
  return fmaf(s, fmaf(256.f, d, -fmaf(z, sum.x, sum.offset)), acc);
}

// One tile's products of its R rows with this thread's activations.
template <int G, int NB, int CH, int R>
__device__ __forceinline__ void tile_products(const ChunkOf<G> (&wv)[R][CH], const unsigned short (&sv)[R][CH],
                                              const unsigned short (&zv)[R][CH],
                                              const float (&xv)[CH][NB][Geo<G>::kCodes], const ChunkSum (&xs)[CH][NB],
                                              float (&acc)[R][NB]) {
#pragma unroll
  for (int r = 0; r < R; r++) {
#pragma unroll
    for (int b = 0; b < NB; b++) acc[r][b] = 0.f;
#pragma unroll
    for (int j = 0; j < CH; j++) {
      float d[NB];
#pragma unroll
      for (int b = 0; b < NB; b++) d[b] = 0.f;
#pragma unroll
      for (int w = 0; w < Geo<G>::kWords; w++) {
        float q[8];
        word_codes(wv[r][j].w[w], q);
#pragma unroll
        for (int b = 0; b < NB; b++) {
#pragma unroll
          for (int i = 0; i < 8; i++) d[b] = fmaf(xv[j][b][8 * w + i], q[i], d[b]);
        }
      }
      const float s = __half2float(__ushort_as_half(sv[r][j]));
      const float z = __half2float(__ushort_as_half(zv[r][j]));
#pragma unroll
      for (int b = 0; b < NB; b++) acc[r][b] = chunk_term(s, z, d[b], xs[j][b], acc[r][b]);
    }
  }
}

// int4-v2-h2's products (G = 13, 15 and 17: one activation row, chunks of 32 codes, packed fp16 math). The
// activations are held as fp16 pairs (x0, x4), (x1, x5), (x2, x6), (x3, x7) per word of 8 codes, scaled per chunk by
// a power of two (exact for bf16 and fp16 values), and each pair of codes goes into an fp16 partial sum by one HFMA2.
// Each lane of a partial sums 8 codes (two partials per chunk and row), then goes to fp32 for the scale and zero
// terms, per chunk as in chunk_term. The codes as fp16 pairs:
//  - G = 13, centred: (q0, q4) = (word & 0x000F000F) | 0x6400 6400 = (1024 + q0, 1024 + q4), minus 1032; (q1, q5)
//    from (word & 0x00F000F0) | 0x6400 6400 = 1024 + 16 q, times 1/16 minus 72; (q2, q6) and (q3, q7) the same from
//    word >> 8: one LOP3 and one conversion per pair, exact q - 8. The chunk's largest |x| scaled into [64, 128).
//  - G = 15 and 17, subnormal: word & 0x000F000F is the pair (q0, q4) * 2^-24 as fp16 subnormals (exact; HFMA2 takes
//    subnormals at full rate unless .ftz), word & 0x00F000F0 the pair (q1, q5) * 2^-20: one LOP3 per pair and no
//    conversion, codes not centred. The activations scaled so the chunk's largest |x| is in [2^14, 2^15), those of the
//    high nibbles divided by 16 more: every product is x' q 2^-24, a partial of 8 at most 2^-1.
// The fp16 partials cost precision (tools/int4-fp16-partials.cpp, K = 4,096, g64, against float64, normwise: fp32
// products 1.4e-7; 8 centred codes 2.7e-4, 8 uncentred 5.6e-4), against the bf16 output's own rounding of ~1e-3.
__host__ __device__ constexpr bool subnormal_codes(int g) { return g == 15 || g == 17; }

constexpr int kHalfPairs = 16;  // fp16 pairs per chunk of 32 codes

__device__ __forceinline__ __half2 half2_bits(uint32_t u) { return *reinterpret_cast<const __half2*>(&u); }
__device__ __forceinline__ uint32_t bits_of(__half2 h) { return *reinterpret_cast<const uint32_t*>(&h); }

// (word & MASK) | 0x64006400 as one LOP3: written in C, the compiler splits it into an AND and an OR (a LOP3 takes
// one immediate), twice the instructions.
template <uint32_t MASK>
__device__ __forceinline__ __half2 magic_pair(uint32_t word) {
#if defined(LOWBIT_EMULATED)
  return half2_bits((word & MASK) | 0x64006400u);
#else
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(word), "n"(MASK), "n"(0x64006400u));  // (a & b) | c
  return half2_bits(r);
#endif
}

// This thread's activations (one row) as int4-v2-h2 holds them: chunk j's pairs, the factor xe[j] that takes its
// fp16 partials back to sum x q (or x (q - 8)) and, in xs, sum x and the zero term's offset (8 sum x centred, else 0).
template <int G, int CH>
__device__ __forceinline__ void half2_activations(const float (&xv)[CH][1][32], uint32_t (&xh)[CH][kHalfPairs],
                                                  float (&xe)[CH], ChunkSum (&xs)[CH][1]) {
  constexpr bool SUB = subnormal_codes(G);
#pragma unroll
  for (int j = 0; j < CH; j++) {
    float m = 0.f;
#pragma unroll
    for (int i = 0; i < 32; i++) m = fmaxf(m, fabsf(xv[j][0][i]));
    // m in [2^(e - 127), 2^(e - 126)). Centred: x' = x 2^(133 - e), xe = 2^(e - 133); an all-zero chunk (or one below
    // 2^-120) keeps 1. Subnormal: x' = x 2^(141 - e), xe = 2^24 / 2^(141 - e), e clamped to [14, 244] (|x| < 2^118).
    const uint32_t e = __float_as_uint(m) >> 23;
    float inv, high;
    if constexpr (SUB) {
      const uint32_t c = e < 14 ? 14 : e > 244 ? 244 : e;
      inv = __uint_as_float((268 - c) << 23);
      high = __uint_as_float((264 - c) << 23);  // inv / 16
      xe[j] = __uint_as_float((c + 10) << 23);
    } else {
      const bool scaled = e >= 7;
      inv = scaled ? __uint_as_float((260 - e) << 23) : 1.f;
      high = inv;
      xe[j] = scaled ? __uint_as_float((e - 6) << 23) : 1.f;
    }
#pragma unroll
    for (int w = 0; w < 4; w++) {
#pragma unroll
      for (int p = 0; p < 4; p++) {
        const float f = p % 2 == 0 ? inv : high;
        xh[j][4 * w + p] = bits_of(__floats2half2_rn(xv[j][0][8 * w + p] * f, xv[j][0][8 * w + p + 4] * f));
      }
    }
    xs[j][0].offset = SUB ? 0.f : 8.f * xs[j][0].x;
  }
}

template <int G, int CH, int R>
__device__ __forceinline__ void tile_products_h2(const Chunk4 (&wv)[R][CH], const unsigned short (&sv)[R][CH],
                                                 const unsigned short (&zv)[R][CH], const uint32_t (&xh)[CH][kHalfPairs],
                                                 const float (&xe)[CH], const ChunkSum (&xs)[CH][1], float (&acc)[R][1]) {
  constexpr bool SUB = subnormal_codes(G);
  const __half2 low_offset = half2_bits(0x64086408u);   // (1032, 1032)
  const __half2 high_scale = half2_bits(0x2C002C00u);   // (1/16, 1/16)
  const __half2 high_offset = half2_bits(0xD480D480u);  // (-72, -72)
#pragma unroll
  for (int r = 0; r < R; r++) {
    acc[r][0] = 0.f;
#pragma unroll
    for (int j = 0; j < CH; j++) {
      __half2 part[2] = {half2_bits(0u), half2_bits(0u)};
#pragma unroll
      for (int w = 0; w < Geo<G>::kWords; w++) {
        const uint32_t word = wv[r][j].w[w];
        const uint32_t shifted = word >> 8;
        __half2 c[4];
        if constexpr (SUB) {
          c[0] = half2_bits(word & 0x000F000Fu);
          c[1] = half2_bits(word & 0x00F000F0u);
          c[2] = half2_bits(shifted & 0x000F000Fu);
          c[3] = half2_bits(shifted & 0x00F000F0u);
        } else {
          c[0] = __hsub2(magic_pair<0x000F000Fu>(word), low_offset);
          c[1] = __hfma2(magic_pair<0x00F000F0u>(word), high_scale, high_offset);
          c[2] = __hsub2(magic_pair<0x000F000Fu>(shifted), low_offset);
          c[3] = __hfma2(magic_pair<0x00F000F0u>(shifted), high_scale, high_offset);
        }
        __half2& d = part[w / 2];
#pragma unroll
        for (int p = 0; p < 4; p++) d = __hfma2(half2_bits(xh[j][4 * w + p]), c[p], d);
      }
      const float d = (__low2float(part[0]) + __high2float(part[0])) + (__low2float(part[1]) + __high2float(part[1]));
      const float s = __half2float(__ushort_as_half(sv[r][j]));
      const float z = __half2float(__ushort_as_half(zv[r][j]));
      acc[r][0] = fmaf(s, fmaf(xe[j], d, fmaf(-z, xs[j][0].x, xs[j][0].offset)), acc[r][0]);
    }
  }
}

// One step of warp_sum_many: H values kept of 2H, exchanged with lane ^ (32 H / V); recursion unrolls it at compile time.
template <int V, int H>
__device__ __forceinline__ void transpose_step(float (&v)[V], int lane) {
  if constexpr (H >= 1) {
    constexpr int o = 32 * H / V;
    const bool upper = (lane & o) != 0;
#pragma unroll
    for (int i = 0; i < H; i++) {
      const float keep = upper ? v[i + H] : v[i];
      const float send = upper ? v[i] : v[i + H];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
    transpose_step<V, H / 2>(v, lane);
  }
}

// The warp sums of V values per lane (V a power of two <= 32) by a transpose reduction: each step halves the values a
// lane holds and doubles the lanes each stands for (lane bit o picks the upper or lower half, the other half goes to
// lane ^ o), then a butterfly over the lanes left. log2(V) + log2(32 / V) steps, V - 1 + log2(32 / V) shuffles in all
// (9 for V = 8, where eight butterflies take 40). Lane l returns the sum of value l / (32 / V).
template <int V>
__device__ __forceinline__ float warp_sum_many(float (&v)[V], int lane) {
  static_assert(V >= 1 && V <= 32 && (V & (V - 1)) == 0, "V: a power of two up to 32");
  transpose_step<V, V / 2>(v, lane);
#pragma unroll
  for (int o = 16 / V; o > 0; o >>= 1) v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
  return v[0];
}

__host__ __device__ constexpr int pow2_at_least(int v) { return v <= 1 ? 1 : 2 * pow2_at_least((v + 1) / 2); }

// One output element from its fp32 sum: T(sum), or with the residual add T(T(sum) + residual) (RES).
template <typename T, bool RES>
__device__ __forceinline__ void store_output(float t, T* __restrict__ out, int64_t out_stride, const T* __restrict__ residual,
                                             int64_t res_stride, int b, int row) {
  if constexpr (RES) t = rnd2<T>(t) + Cvt2<T>::f(residual[b * res_stride + row]);
  out[b * out_stride + row] = Cvt2<T>::t(t);
}

// After the barrier: thread i < R·NB adds the W warps' partial sums of (row i / NB, column i % NB) of a tile and writes
// that output element. PAIRS: thread i < R/2 · NB takes the pair of tile rows 2p and 2p + 1 (gate and up, p = i / NB)
// and writes SiLU(gate)·up to output row row0 / 2 + p.
// `scale` multiplies the sums (the deferred RMSNorm factor; 1 otherwise, folded away).
template <typename T, int W, int NB, int R, bool RES, bool PAIRS = false>
__device__ __forceinline__ void store_tile(const float (&red)[W][R * NB], int tid, int row0, int n, int batch,
                                           T* __restrict__ out, int64_t out_stride, const T* __restrict__ residual,
                                           int64_t res_stride, float scale = 1.f) {
  if constexpr (PAIRS) {
    static_assert(R % 2 == 0 && !RES, "paired rows: an even tile, no residual");
    if (tid < R / 2 * NB) {
      const int p = tid / NB;
      const int b = tid % NB;
      float g = 0.f, u = 0.f;
#pragma unroll
      for (int w = 0; w < W; w++) {
        g += red[w][2 * p * NB + b];
        u += red[w][(2 * p + 1) * NB + b];
      }
      if (row0 + 2 * p < n && b < batch) {
        g = rnd2<T>(g * scale);
        u *= scale;
        out[b * out_stride + row0 / 2 + p] = Cvt2<T>::t(rnd2<T>(g / (1.f + expf(-g))) * rnd2<T>(u));
      }
    }
    return;
  }
  if (tid < R * NB) {
    const int r = tid / NB;
    const int b = tid % NB;
    float t = 0.f;
#pragma unroll
    for (int w = 0; w < W; w++) t += red[w][tid];
    if (row0 + r < n && b < batch) store_output<T, RES>(t * scale, out, out_stride, residual, res_stride, b, row0 + r);
  }
}

// A tile's sums reduced across the block and written (the residual added when RES): the R x NB sums of each warp by
// one transpose reduction (padded to a power of two), then across the W warps through shared memory. `red` alternates
// between two buffers, so one barrier per tile suffices: the readers of a buffer two tiles ago passed the barrier of
// the tile in between before anyone writes it again.
// DEFER (one row): the output is multiplied by rsqrt(mean(x^2) + eps) from the warps' sums of squares in
// `norm_partial` (written before the block's first tile, so visible after this barrier).
template <typename T, int W, int NB, int R, bool RES, bool PAIRS = false, bool DEFER = false>
__device__ __forceinline__ void tile_reduce(const float (&acc)[R][NB], float (*red)[W][R * NB], int& buf, int row0,
                                            int n, int batch, T* __restrict__ out, int64_t out_stride,
                                            const T* __restrict__ residual, int64_t res_stride, int tid, int lane,
                                            int warp, const float (*norm_partial)[NB] = nullptr, int k = 1,
                                            float eps = 0.f) {
  constexpr int V = pow2_at_least(R * NB);
  static_assert(V <= 32, "at most 32 sums per tile");
  float v[V];
#pragma unroll
  for (int i = 0; i < R * NB; i++) v[i] = acc[i / NB][i % NB];
#pragma unroll
  for (int i = R * NB; i < V; i++) v[i] = 0.f;
  const float sum = warp_sum_many<V>(v, lane);
  const int index = lane / (32 / V);
  if (lane % (32 / V) == 0 && index < R * NB) red[buf][warp][index] = sum;
  __syncthreads();
  float scale = 1.f;
  if constexpr (DEFER) {
    static_assert(NB == 1, "deferred norm: one row");
    float total = 0.f;
#pragma unroll
    for (int i = 0; i < W; i++) total += norm_partial[i][0];
    scale = rsqrtf(total / (float)k + eps);
  }
  store_tile<T, W, NB, R, RES, PAIRS>(red[buf], tid, row0, n, batch, out, out_stride, residual, res_stride, scale);
  buf ^= 1;
}

// The chunk sums of a thread's activations (sum x for the zero, 128 sum x' for the code floats' offset). The odd codes'
// activations become 16x (exact): see code_of_high. int4-v2-h2 keeps them as they are (half2_activations packs them
// and sets the offset).
template <int G, int NB, int CH>
__device__ __forceinline__ void chunk_sums(float (&xv)[CH][NB][Geo<G>::kCodes], ChunkSum (&xs)[CH][NB]) {
#pragma unroll
  for (int j = 0; j < CH; j++) {
#pragma unroll
    for (int b = 0; b < NB; b++) {
      float sum = 0.f;
      float scaled = 0.f;
#pragma unroll
      for (int i = 0; i < Geo<G>::kCodes; i++) {
        sum += xv[j][b][i];
        if constexpr (!half2_products(G)) {
          if (i % 2 == 1) xv[j][b][i] *= 16.f;
          scaled += xv[j][b][i];
        }
      }
      xs[j][b] = {sum, 128.f * scaled};
    }
  }
}

// This thread's activations after the prologue (floats, zero past K and past `batch`) and their per-chunk sums.
template <typename T, int G, int NB, int CH, int PRO>
__device__ __forceinline__ void load_activations(const T* __restrict__ x, int64_t x_stride, int batch, int k,
                                                 const Fusion& fusion, int tid, int lane, int warp,
                                                 const bool (&live)[CH], float (*norm_partial)[NB],
                                                 float (&xv)[CH][NB][Geo<G>::kCodes], ChunkSum (&xs)[CH][NB]) {
  constexpr int C = Geo<G>::kCodes;
#pragma unroll
  for (int j = 0; j < CH; j++) {
    const int c = tid + j * Geo<G>::kThreads;
#pragma unroll
    for (int b = 0; b < NB; b++) {
      if (live[j] && b < batch) {
        const uint4* xp = reinterpret_cast<const uint4*>(x + b * x_stride + (int64_t)c * C);
#pragma unroll
        for (int p = 0; p < C / 8; p++) {
          const uint4 u = xp[p];
          const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
          for (int i = 0; i < 8; i++) xv[j][b][8 * p + i] = Cvt2<T>::f(t[i]);
        }
        if constexpr (PRO == kSiluMul) {
          const uint4* up = reinterpret_cast<const uint4*>(x + b * x_stride + k + (int64_t)c * C);
#pragma unroll
          for (int p = 0; p < C / 8; p++) {
            const uint4 u = up[p];
            const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
            for (int i = 0; i < 8; i++) {
              const float g = xv[j][b][8 * p + i];
              xv[j][b][8 * p + i] = rnd2<T>(rnd2<T>(g / (1.f + expf(-g))) * Cvt2<T>::f(t[i]));
            }
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < C; i++) xv[j][b][i] = 0.f;
      }
    }
  }
  if constexpr (PRO == kNorm) {
    float ss[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) {
      ss[b] = 0.f;
#pragma unroll
      for (int j = 0; j < CH; j++) {
#pragma unroll
        for (int i = 0; i < C; i++) ss[b] = fmaf(xv[j][b][i], xv[j][b][i], ss[b]);
      }
      ss[b] = warp_sum2(ss[b]);
      if (lane == 0) norm_partial[warp][b] = ss[b];
    }
    __syncthreads();
    const T* w = static_cast<const T*>(fusion.norm_w);
#pragma unroll
    for (int b = 0; b < NB; b++) {
      float total = 0.f;
#pragma unroll
      for (int i = 0; i < Geo<G>::kWarps; i++) total += norm_partial[i][b];
      const float inv = rsqrtf(total / (float)k + fusion.eps);
#pragma unroll
      for (int j = 0; j < CH; j++) {
        const int c = tid + j * Geo<G>::kThreads;
        if (!live[j]) continue;
        const uint4* wp = reinterpret_cast<const uint4*>(w + (int64_t)c * C);
#pragma unroll
        for (int p = 0; p < C / 8; p++) {
          const uint4 u = __ldg(wp + p);
          const T* g = reinterpret_cast<const T*>(&u);
#pragma unroll
          for (int i = 0; i < 8; i++) xv[j][b][8 * p + i] = rnd2<T>(Cvt2<T>::f(g[i]) * rnd2<T>(xv[j][b][8 * p + i] * inv));
        }
      }
    }
  }
  chunk_sums<G, NB, CH>(xv, xs);
}

// kDefer's prologue (one row): xv = w·x in fp32, each warp's sum of squares of x to norm_partial[warp][0] (no barrier
// here: tile_reduce's first barrier publishes it), and the chunk sums of w·x. EARLY: the weight's chunks are in `nw`
// (loaded before the wait); otherwise they are loaded here with x.
template <typename T, int G, int CH, bool EARLY>
__device__ __forceinline__ void deferred_norm_activations(const T* __restrict__ x, const T* __restrict__ norm_w, int tid,
                                                          int lane, int warp, const bool (&live)[CH],
                                                          const uint4 (&nw)[CH][Geo<G>::kCodes / 8],
                                                          float (*norm_partial)[1], float (&xv)[CH][1][Geo<G>::kCodes],
                                                          ChunkSum (&xs)[CH][1]) {
  constexpr int C = Geo<G>::kCodes;
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < CH; j++) {
    const int c = tid + j * Geo<G>::kThreads;
#pragma unroll
    for (int p = 0; p < C / 8; p++) {
      uint4 u = make_uint4(0, 0, 0, 0);
      uint4 wu = make_uint4(0, 0, 0, 0);
      if (live[j]) {
        u = reinterpret_cast<const uint4*>(x + (int64_t)c * C)[p];
        if constexpr (!EARLY) wu = __ldg(reinterpret_cast<const uint4*>(norm_w + (int64_t)c * C) + p);
      }
      if constexpr (EARLY) wu = nw[j][p];
      const T* t = reinterpret_cast<const T*>(&u);
      const T* g = reinterpret_cast<const T*>(&wu);
#pragma unroll
      for (int i = 0; i < 8; i++) {
        const float v = Cvt2<T>::f(t[i]);
        ss = fmaf(v, v, ss);
        xv[j][0][8 * p + i] = Cvt2<T>::f(g[i]) * v;
      }
    }
  }
  ss = warp_sum2(ss);
  if (lane == 0) norm_partial[warp][0] = ss;
  chunk_sums<G, 1, CH>(xv, xs);
}

// __launch_bounds__'s blocks per SM. Without a bound ptxas (nvcc 11.8, sm_90) gave int4-v2 at one chunk per thread
// 193-228 registers, one block per SM (16 KB of codes in flight); bounded, one row fits 80 registers at three blocks
// and two rows 128 at two, without spills (three blocks at two rows spill ~200 bytes). int4-v2-wide (128 threads) at one
// row and one chunk: four blocks in 128 registers (unbounded 255, two blocks). int4-v2-occ: four.
__host__ __device__ constexpr int min_blocks(int g, int nb, int ch) {
  return g == 5 ? 4 : g == 1 && ch == 1 ? (nb == 1 ? 3 : nb == 2 ? 2 : 1) : g == 3 && ch == 1 && nb == 1 ? 4
       : g == 17 ? 2 : half2_products(g) ? (ch == 1 ? 4 : 2) : 1;
}

template <typename T, int G, int NB, int CH, int PRO, bool RES>
__global__ void __launch_bounds__(Geo<G>::kThreads, (min_blocks(G, NB, CH))) int4_gemv_v2_kernel(
    const T* __restrict__ x, int64_t x_stride, const uint8_t* __restrict__ packed,
    const unsigned short* __restrict__ scales, const unsigned short* __restrict__ zeros, T* __restrict__ out,
    int64_t out_stride, int batch, int n, int k, int group, Fusion fusion) {
  constexpr int R = Tile<G, NB, CH>::R;
  constexpr int W = Geo<G>::kWarps;
  __shared__ float red[2][W][R * NB];
  __shared__ float norm_partial[W][NB];
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int chunks = k / Geo<G>::kCodes;
  const int groups = k / group;
  const int row_bytes = k / 2;
  const T* residual = static_cast<const T*>(fusion.residual);

  bool live[CH];
#pragma unroll
  for (int j = 0; j < CH; j++) live[j] = tid + j * Geo<G>::kThreads < chunks;
  const ChunkAt<CH> at = chunk_at<CH>(tid, Geo<G>::kThreads, Geo<G>::kCodes, k, group);

  // The first tile's weights go out before the activations: they do not depend on them (nor on the kernel before).
  ChunkOf<G> wv[R][CH];
  unsigned short sv[R][CH];
  unsigned short zv[R][CH];
  const int stride = gridDim.x * R;
  int row0 = blockIdx.x * R;
  LOWBIT_PDL_TRIGGER();
  constexpr bool DEFER = PRO >= kDefer;
  constexpr bool PAIRS = base_prologue(PRO) == kNormSiluPairs;
  static_assert(!DEFER || (defer_built(G) && NB == 1), "deferred norm: int4-v2, -wide, -h2 and -h2s at one row");
  // DEFER at one chunk per thread: the norm weight's chunk goes out with the first tile (it does not depend on the
  // kernel before either); at more, with x after the wait (deferred_norm_activations).
  constexpr bool EARLY = DEFER && CH == 1;
  uint4 nw[CH][Geo<G>::kCodes / 8];
  if constexpr (EARLY) {
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const uint4* wp = reinterpret_cast<const uint4*>(static_cast<const T*>(fusion.norm_w) +
                                                       (int64_t)(tid + j * Geo<G>::kThreads) * Geo<G>::kCodes);
#pragma unroll
      for (int p = 0; p < Geo<G>::kCodes / 8; p++) nw[j][p] = live[j] ? __ldg(wp + p) : make_uint4(0, 0, 0, 0);
    }
  }
  if (row0 < n) load_tile<G, R, CH, PAIRS>(packed, scales, zeros, row0, n, row_bytes, groups, at, wv, sv, zv);
  LOWBIT_PDL_WAIT();

  float xv[CH][NB][Geo<G>::kCodes];
  ChunkSum xs[CH][NB];
  if constexpr (DEFER) deferred_norm_activations<T, G, CH, EARLY>(x, static_cast<const T*>(fusion.norm_w), tid, lane, warp, live, nw, norm_partial, xv, xs);
  else load_activations<T, G, NB, CH, PAIRS ? kNorm : PRO>(x, x_stride, batch, k, fusion, tid, lane, warp, live, norm_partial, xv, xs);
  constexpr bool H2 = half2_products(G);
  static_assert(!H2 || NB == 1, "int4-v2-h2: one activation row");
  uint32_t xh[H2 ? CH : 1][kHalfPairs];
  float xe[H2 ? CH : 1];
  if constexpr (H2) half2_activations<G, CH>(xv, xh, xe, xs);

  int buf = 0;
  float acc[R][NB];
  for (; row0 < n; row0 += stride) {
    if constexpr (H2) tile_products_h2<G, CH, R>(wv, sv, zv, xh, xe, xs, acc);
    else tile_products<G, NB, CH, R>(wv, sv, zv, xv, xs, acc);
    // The next tile's loads go out after this tile's products, before its reduction and barrier.
    const int next = row0 + stride;
    if (next < n) load_tile<G, R, CH, PAIRS>(packed, scales, zeros, next, n, row_bytes, groups, at, wv, sv, zv);
    tile_reduce<T, W, NB, R, RES, PAIRS, DEFER>(acc, red, buf, row0, n, batch, out, out_stride, residual, fusion.res_stride,
                                                tid, lane, warp, norm_partial, k, fusion.eps);
  }
}

// An integer environment variable (a diagnostic or opt-in setting), or `fallback` when it is not set.
inline int env_int(const char* name, int fallback) {
  const char* v = getenv(name);
  return v != nullptr ? atoi(v) : fallback;
}

// An attribute of the current device, or `fallback` when the query fails (or gives less than 1).
inline int device_attribute(cudaDeviceAttr attribute, int fallback) {
  int device = 0;
  int value = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&value, attribute, device) != cudaSuccess || value < 1) {
    cudaGetLastError();
    return fallback;
  }
  return value;
}

// The grid of a persistent kernel over `tiles` row tiles: as many blocks as fit on the device at once, at most one per
// tile (the occupancy of `Kernel` at `threads` per block and `smem` bytes of dynamic shared memory is a host-side query).
template <auto Kernel>
int persistent_blocks(int threads, int64_t tiles, int smem = 0) {
  auto query = [threads](int bytes) {
    int v = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, Kernel, threads, (size_t)bytes) != cudaSuccess || v < 1) {
      cudaGetLastError();
      v = 1;
    }
    return v;
  };
  // Without dynamic shared memory once per process; with it (the shared kernel, sized by K) per call.
  static const int plain = query(0);
  const int per_sm = smem == 0 ? plain : query(smem);
  const int sms = device_attribute(cudaDevAttrMultiProcessorCount, 132);
  const int64_t resident = (int64_t)sms * per_sm;
  return (int)(tiles < resident ? tiles : resident);
}

// Whether launches ask for programmatic stream serialization: unless built without it or LOWBIT_PDL=0 (each launcher keeps
// its own copy, turned off for the rest of the process when the runtime refuses the attribute).
inline bool pdl_setting() {
#if defined(LOWBIT_NO_PDL)
  return false;
#else
  const char* v = getenv("LOWBIT_PDL");
  return v == nullptr || v[0] != '0';
#endif
}

// Launches `kernel` with programmatic stream serialization (see LOWBIT_PDL_WAIT) unless LOWBIT_PDL=0, else plainly (also
// when the runtime refuses the attribute: then plainly for the rest of the process).
template <typename... P, typename... A>
int launch_pdl(void (*kernel)(P...), int blocks, int threads, cudaStream_t st, int smem, A... args) {
#if defined(LOWBIT_EMULATED)
  emul_launch(blocks, threads, [&] { kernel(args...); });
  return 0;
#else
  static bool pdl = pdl_setting();
  if (pdl) {
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3((unsigned)blocks);
    config.blockDim = dim3((unsigned)threads);
    config.dynamicSmemBytes = (size_t)smem;
    config.stream = st;
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
    if (cudaLaunchKernelEx(&config, kernel, args...) == cudaSuccess) return 0;
    cudaGetLastError();
    pdl = false;
  }
  kernel<<<blocks, threads, smem, st>>>(args...);
  return (int)cudaGetLastError();
#endif
}

template <typename T, int G, int NB, int CH, int PRO, bool RES>
int launch_v2(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os, int batch,
              int n, int k, int group, const Fusion& fusion, cudaStream_t st) {
  constexpr int R = Tile<G, NB, CH>::R;
  const int blocks = persistent_blocks<int4_gemv_v2_kernel<T, G, NB, CH, PRO, RES>>(Geo<G>::kThreads, ((int64_t)n + R - 1) / R);
  if (blocks == 0) return 0;
  return launch_pdl(int4_gemv_v2_kernel<T, G, NB, CH, PRO, RES>, blocks, Geo<G>::kThreads, st, 0,
                    static_cast<const T*>(x), xs, static_cast<const uint8_t*>(p), static_cast<const unsigned short*>(s),
                    static_cast<const unsigned short*>(z), static_cast<T*>(out), os, batch, n, k, group, fusion);
}

// G = 7, "int4-v2-shared": the activations in shared memory and each scale/zero pair loaded once per group of threads,
// so the registers go to weights in flight (docs/gpu.md, *Compiling the kernels without a GPU*). int4-v2's thread
// layout (256 threads, 16 codes per chunk; one chunk per thread for 1-2 rows, up to three for one row: K <= 12288):
//  - after the prologue each thread stores its 16 activations as four float4 at [b][i][thread] (consecutive threads,
//    consecutive 16 bytes: no bank conflicts) and keeps only their sum; products read one float4 at a time and use it
//    for every row of the tile (16 bytes of shared memory per 128 of codes);
//  - the four threads of a quad share a group (group % 64 == 0), so thread 4q + j loads the scale and zero of rows
//    j, j + 4, ... of the tile, and the products take row r's from lane 4q + (r % 4) by a shuffle: 2 registers per 4
//    rows in flight instead of 2 per row.
// ptxas (nvcc 11.8): one chunk, 12 rows, three blocks per SM in 80 registers without spills = 72 KB of codes in flight
// per SM at one row (int4-v2: 48; 16 rows took 128 registers, or spilled 108 bytes at three blocks); three chunks
// (K = 11,008), 8 rows, two blocks in 128 registers = 96 KB (int4-v2: 48, at 255 registers and one block).
template <int NB, int CH>
struct SharedTile {
  // One chunk per thread: 12 rows (8 at two rows), three blocks per SM; 2-3 chunks: 8 rows, two blocks, one batch row
  // (its activations take the shared memory: 44 KB at K = 11,008); 4-8 chunks (K up to 32,768: long_shared):
  // 4 rows, one block per SM with up to 128 KB of activations (a 70B's down projection, K = 28,672: 7 chunks, 112 KB).
  static constexpr int R = CH == 1 ? (NB == 1 ? 12 : 8) : CH <= 3 ? 8 : 4;
  static constexpr int kMinBlocks = CH == 1 ? 3 : CH <= 3 ? 2 : 1;
};

// float4 slots of the activations per (row, quarter) in shared memory: the chunks rounded up to a warp's.
__host__ __device__ inline int shared_stride(int k) { return ((k / 16) + 31) / 32 * 32; }

template <typename T, int NB, int CH, int PRO, bool RES>
__global__ void __launch_bounds__(256, (SharedTile<NB, CH>::kMinBlocks)) int4_gemv_shared_kernel(
    const T* __restrict__ x, int64_t x_stride, const uint8_t* __restrict__ packed,
    const unsigned short* __restrict__ scales, const unsigned short* __restrict__ zeros, T* __restrict__ out,
    int64_t out_stride, int batch, int n, int k, int group, Fusion fusion) {
  constexpr int R = SharedTile<NB, CH>::R;
  constexpr int W = 8;
  // DEFER (one row, kDefer + kNorm): int4-v2's deferred prologue (the norm weight loaded with x after the wait).
  constexpr bool DEFER = PRO >= kDefer;
  static_assert(!DEFER || (NB == 1 && base_prologue(PRO) == kNorm), "deferred norm: one row, no paired rows");
  LOWBIT_DYNAMIC_SHARED(xsm_bytes);
  float4* xsm = reinterpret_cast<float4*>(xsm_bytes);   // [NB][4][stride]
  __shared__ float red[2][W][R * NB];
  __shared__ float norm_partial[W][NB];
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int chunks = k / 16;
  const int cstride = shared_stride(k);
  const int groups = k / group;
  const int row_bytes = k / 2;
  const T* residual = static_cast<const T*>(fusion.residual);
  const int quad = tid & 3;
  bool live[CH];
#pragma unroll
  for (int j = 0; j < CH; j++) live[j] = tid + j * 256 < chunks;
  // group % 64 == 0: the four threads of a quad share their chunks' group, so any of them loads it for the others.
  const ChunkAt<CH> at = chunk_at<CH>(tid, 256, 16, k, group);

  // Tile r0's codes (all rows, every chunk) and this thread's share of its scales and zeros (rows quad, quad + 4, ...).
  Chunk2 wv[R][CH];
  unsigned short sv[R / 4][CH];
  unsigned short zv[R / 4][CH];
  auto load = [&](int r0) {
    const int last = n - 1 - r0;
    const uint32_t code0 = (uint32_t)r0 * (uint32_t)row_bytes;
    const uint32_t group0 = (uint32_t)r0 * (uint32_t)groups;
#pragma unroll
    for (int r = 0; r < R; r++) {
      const uint32_t code_row = code0 + (uint32_t)min(r, last) * (uint32_t)row_bytes;
#pragma unroll
      for (int j = 0; j < CH; j++) wv[r][j] = load_chunk<1>(packed + (code_row + at.code[j]));
    }
#pragma unroll
    for (int m = 0; m < R / 4; m++) {
      const uint32_t group_row = group0 + (uint32_t)min(4 * m + quad, last) * (uint32_t)groups;
#pragma unroll
      for (int j = 0; j < CH; j++) {
        sv[m][j] = __ldg(scales + (group_row + at.group[j]));
        zv[m][j] = __ldg(zeros + (group_row + at.group[j]));
      }
    }
  };

  const int stride = gridDim.x * R;
  int row0 = blockIdx.x * R;
  LOWBIT_PDL_TRIGGER();
  if (row0 < n) load(row0);
  LOWBIT_PDL_WAIT();

  ChunkSum xs[CH][NB];
  {
    float xv[CH][NB][16];
    if constexpr (DEFER) {
      const uint4 unused[CH][2] = {};
      deferred_norm_activations<T, 1, CH, false>(x, static_cast<const T*>(fusion.norm_w), tid, lane, warp, live, unused, norm_partial, xv, xs);
    } else {
      load_activations<T, 1, NB, CH, PRO>(x, x_stride, batch, k, fusion, tid, lane, warp, live, norm_partial, xv, xs);
    }
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const int c = tid + j * 256;
      if (!live[j]) continue;
#pragma unroll
      for (int b = 0; b < NB; b++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
          xsm[(b * 4 + i) * cstride + c] = make_float4(xv[j][b][4 * i], xv[j][b][4 * i + 1], xv[j][b][4 * i + 2], xv[j][b][4 * i + 3]);
        }
      }
    }
  }
  // Each thread reads back only what it wrote: no barrier needed before the products.

  int buf = 0;
  float acc[R][NB];
  for (; row0 < n; row0 += stride) {
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
      for (int b = 0; b < NB; b++) acc[r][b] = 0.f;
    }
#pragma unroll
    for (int j = 0; j < CH; j++) {
      const int c = tid + j * 256;
      float d[R][NB];
#pragma unroll
      for (int r = 0; r < R; r++) {
#pragma unroll
        for (int b = 0; b < NB; b++) d[r][b] = 0.f;
      }
      if (live[j]) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
          // Codes 4i..4i+3: word i / 2, bytes 2 (i % 2) and 2 (i % 2) + 1 (low nibble first).
          float4 xq[NB];
#pragma unroll
          for (int b = 0; b < NB; b++) xq[b] = xsm[(b * 4 + i) * cstride + c];
#pragma unroll
          for (int r = 0; r < R; r++) {
            float q[8];
            word_codes(wv[r][j].w[i / 2], q);
            const int h = 4 * (i % 2);
#pragma unroll
            for (int b = 0; b < NB; b++) {
              d[r][b] = fmaf(xq[b].x, q[h], d[r][b]);
              d[r][b] = fmaf(xq[b].y, q[h + 1], d[r][b]);
              d[r][b] = fmaf(xq[b].z, q[h + 2], d[r][b]);
              d[r][b] = fmaf(xq[b].w, q[h + 3], d[r][b]);
            }
          }
        }
      }
      // Every lane takes part in the shuffles (a dead chunk's sums are zero).
#pragma unroll
      for (int r = 0; r < R; r++) {
        const int from = (lane & ~3) | (r & 3);
        const float sc = __half2float(__ushort_as_half((unsigned short)__shfl_sync(0xffffffffu, (unsigned)sv[r / 4][j], from)));
        const float ze = __half2float(__ushort_as_half((unsigned short)__shfl_sync(0xffffffffu, (unsigned)zv[r / 4][j], from)));
#pragma unroll
        for (int b = 0; b < NB; b++) acc[r][b] = chunk_term(sc, ze, d[r][b], xs[j][b], acc[r][b]);
      }
    }
    // The next tile's loads go out after this tile's products, before its reduction and barrier.
    const int next = row0 + stride;
    if (next < n) load(next);
    tile_reduce<T, W, NB, R, RES, false, DEFER>(acc, red, buf, row0, n, batch, out, out_stride, residual, fusion.res_stride, tid,
                                                lane, warp, norm_partial, k, fusion.eps);
  }
}

// The dynamic shared memory a block may opt in to on the current device (227 KB on sm_90), 200 KB if the query fails.
inline int max_dynamic_shared() {
  static const int bytes = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, 200 * 1024);
  return bytes;
}

// Lets Kernel have `smem` bytes of dynamic shared memory: above 48 KB a kernel has to ask, once per instantiation: 200 KB
// first (what every shape asked for until session 18, measured on the H100 and the H200), then, for a shape over that
// (8 rows at K = 11,008), all the opt-in limit leaves beside the kernel's static shared memory. Asking for the whole
// limit fails (session 18's first try at 227 KB: every int4-mma launch over 48 KB refused). 0, or -3 for a shape the
// device cannot take (refused alone: the kernel selection keeps another kernel for it).
template <auto Kernel>
int allow_shared(int smem) {
#if !defined(LOWBIT_EMULATED)
  if (smem > 48 * 1024) {
    constexpr int kBase = 200 * 1024;
    static const bool base = [] {
      if (cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBase) == cudaSuccess) return true;
      cudaGetLastError();
      return false;
    }();
    if (!base) return -3;
    if (smem > kBase) {
      static const int raised = [] {
        cudaFuncAttributes attributes{};
        if (cudaFuncGetAttributes(&attributes, Kernel) != cudaSuccess) {
          cudaGetLastError();
          return kBase;
        }
        const int dynamic = max_dynamic_shared() - (int)attributes.sharedSizeBytes;
        if (dynamic <= kBase) return kBase;
        if (cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic) != cudaSuccess) {
          cudaGetLastError();
          return kBase;
        }
        return dynamic;
      }();
      if (smem > raised) return -3;
    }
  }
#endif
  return 0;
}

// -shared past three chunks per thread (K > 12,288 at one row: a 13B's or Llama-3-8B's down projection at four chunks,
// a 70B's at seven), plain and with the residual add only (session 32). Offered to the kernel selection by default since
// session 33, which times it against int4-mma on the card at hand: slower on the H200 at a 70B's down projection (49.35
// against 44.31 µs cold, docs/gpu.md run 80), faster on the H100 (51.88 against 55.57, run 84).
// LOWBIT_INT4_SHARED_LONG=0 takes it out; those projections then take int4-v2 (K <= 16,384) or int4-mma.
inline bool long_shared() {
  static const bool on = env_int("LOWBIT_INT4_SHARED_LONG", 1) != 0;
  return on;
}

// The shared kernel's dynamic shared memory: NB rows of activations as float4 per 4 codes, at most 44 KB (one row up
// to K = 11,264), or 128 KB at one row with long_shared (K <= 32,768; more than 48 KB is asked for per kernel at its
// first launch): launch_shared refuses more and fused_supports does not offer it.
inline int shared_bytes(int nb, int k) { return nb * 4 * shared_stride(k) * (int)sizeof(float4); }
inline bool shared_fits(int nb, int k) {
  return shared_bytes(nb, k) <= 44 * 1024 || (nb == 1 && long_shared() && shared_bytes(nb, k) <= 128 * 1024);
}

template <typename T, int NB, int CH, int PRO, bool RES>
int launch_shared(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os, int batch,
                  int n, int k, int group, const Fusion& fusion, cudaStream_t st) {
  constexpr int R = SharedTile<NB, CH>::R;
  if (!shared_fits(NB, k)) return -3;
  const int smem = shared_bytes(NB, k);
  // Past 48 KB (long_shared) the kernel asks first, before the occupancy query counts it.
  if (allow_shared<int4_gemv_shared_kernel<T, NB, CH, PRO, RES>>(smem) != 0) return -3;
  const int blocks = persistent_blocks<int4_gemv_shared_kernel<T, NB, CH, PRO, RES>>(256, ((int64_t)n + R - 1) / R, smem);
  if (blocks == 0) return 0;
  return launch_pdl(int4_gemv_shared_kernel<T, NB, CH, PRO, RES>, blocks, 256, st, smem,
                    static_cast<const T*>(x), xs, static_cast<const uint8_t*>(p), static_cast<const unsigned short*>(s),
                    static_cast<const unsigned short*>(z), static_cast<T*>(out), os, batch, n, k, group, fusion);
}

// ---------------------------------------------------------------------------------------------------------------------
// int4-mma (geometry 9): the int4 GEMV on the tensor cores. SASS of
// int4-v2 (docs/gpu.md, *Instructions per tile*) showed it issue-bound: a code costs a permute and an FMA (plus masks,
// scales, reduction), 514 instructions per 2 KB of codes per warp, where the H200's bandwidth asks about 16 bytes per
// SM per clock of four issue slots. Here a warp multiplies 16 rows by up to 8 activation rows with
// mma.sync.m16n8k16 (fp32 accumulation): the weights are the A operand, made from the codes by one mask-and-or per
// two codes (no conversion, no FMA per code), the activations the B operand (one column per batch row, 1-8 taken for
// the same instructions), so a 64-code group of 16 rows costs ~52 instructions per warp, ~10 bytes of codes each.
//  - A "unit" is one 64-code group of 16 rows: lane (g, c) (g = lane / 4, c = lane % 4) loads 8 bytes (16 codes) of
//    rows g and g + 8 at group offset 16 c, and their scales and zeros; the four lanes of a row read 32 contiguous bytes.
//  - The codes become exact 16-bit floats by a mask and an or: bf16 128 + q (the nibble shifted to bits 0-3, three
//    shifts per word), fp16 1024 + q for low nibbles and 64 + h for high nibbles left in place (ulp 1/16 at 64); the
//    products with exact activations are exact in fp32, and d = sum x (M + q) gives sum x (q - z) = d - off - z sum x
//    with off = sum over the group of M x (M per nibble) and sum x, both kept per (group, batch row) in shared memory.
//  - The order of k inside an mma is free as long as A and B agree: pair p of a word holds codes (p, p + 4) of it, so
//    the activations are stored per lane as x0 x4 x1 x5 x2 x6 x3 x7 (each 8): the prologue writes them once per block,
//    in the model dtype (bf16 exact; fp16 models give fp16 activations), permuted, into shared memory: K * rows * 2 B.
//  - A block of 8 warps owns a tile of 16 rows; warp w takes a contiguous range of groups (U per warp, U a multiple of
//    the P = 4 units in flight; with K % 256 == 0 a round of P is wholly inside K or wholly past it and skipped). A
//    round's codes are loaded a round ahead (across tiles), its scales and zeros as one vector per row and array, then
//    the 8 warps' partial sums are added through shared memory (one barrier per tile).
// SASS (nvcc 11.8, bf16, one row): 52 instructions per unit, 28 of them the code-to-float lop3 and shifts; 128 registers.
// The scales and zeros of a unit belong to one quantization group: groups of 64 or 128 codes.
namespace mma {

template <typename T> struct Magic;
template <> struct Magic<__nv_bfloat16> {
  static constexpr float kLow = 128.f;
  static constexpr float kHigh = 128.f;
};
template <> struct Magic<__half> {
  static constexpr float kLow = 1024.f;
  static constexpr float kHigh = 64.f;
};

// (w & MASK) | MAGIC in one LOP3 (written as two operations, ptxas emits an AND and an OR: one immediate per LOP3).
template <uint32_t MASK, uint32_t MAGIC>
__device__ __forceinline__ uint32_t mask_or(uint32_t w) {
#if defined(LOWBIT_EMULATED)
  return (w & MASK) | MAGIC;
#else
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(w), "n"(MASK), "n"(MAGIC));
  return r;
#endif
}

// The four A pairs of a 32-bit word (codes 0-7 of it: code 2j the low nibble of byte j): pair p = codes (p', p' + 4)
// with p' = {0, 1, 2, 3}[p] as 16-bit floats M + q.
template <typename T>
__device__ __forceinline__ void word_pairs(uint32_t w, uint32_t (&p)[4]) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    p[0] = mask_or<0x000F000Fu, 0x43004300u>(w);
    p[1] = mask_or<0x000F000Fu, 0x43004300u>(w >> 4);
    p[2] = mask_or<0x000F000Fu, 0x43004300u>(w >> 8);
    p[3] = mask_or<0x000F000Fu, 0x43004300u>(w >> 12);
  } else {
    const uint32_t t = w >> 8;
    p[0] = mask_or<0x000F000Fu, 0x64006400u>(w);
    p[1] = mask_or<0x00F000F0u, 0x54005400u>(w);
    p[2] = mask_or<0x000F000Fu, 0x64006400u>(t);
    p[3] = mask_or<0x00F000F0u, 0x54005400u>(t);
  }
}

// The 16-bit pattern of v in T (v exact in T: the staged activations are).
template <typename T>
__device__ __forceinline__ uint32_t bits16(float v) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16(v));
  } else {
    return (uint32_t)__half_as_ushort(__float2half(v));
  }
}

// d += A[16 x 16] B[16 x 8] (mma.sync.aligned.m16n8k16.row.col, fp32 accumulation). Fragments, lane (g, c):
// a = {A[g][2c..2c+1], A[g+8][2c..2c+1], A[g][2c+8..2c+9], A[g+8][2c+8..2c+9]}, b = {B[2c..2c+1][g], B[2c+8..2c+9][g]},
// d = {D[g][2c], D[g][2c+1], D[g+8][2c], D[g+8][2c+1]}.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(LOWBIT_EMULATED)
  emul_mma_16816(d, a, b0, b1, std::is_same<T, __nv_bfloat16>::value);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#else
  __trap();
#endif
}

constexpr int kThreads = 256;
constexpr int kWarps = 8;
constexpr int kRows = 16;
// Units in flight per warp (a round: 4 registers of codes per unit, 2-4 per round of scales and zeros), at two blocks
// per SM (128 registers; ptxas, nvcc 11.8). With 8 scale/zero registers per unit (the first version), eight units
// spilled 12-180 bytes there, and four at three blocks per SM (80 registers) 168-300 bytes.
constexpr int kUnitsInFlight = 4;

// Units per warp per tile: the groups of 64 codes over 8 warps, rounded up to a multiple of P.
__host__ __device__ inline int units_per_warp(int k, int p) { return ((k / 64 + kWarps - 1) / kWarps + p - 1) / p * p; }

// The dynamic shared memory of a block: the permuted activations of a group, NB × 4 lane slots of 16 values in T, in
// two 16-byte halves (Halves), then per (group, column) {off, sum x} as float2 (columns padded to an even count). Sized
// over units * 8 groups (the measure of supports()'s bound); only the first K / 64 are written and read (rounds past
// them are skipped).
__host__ __device__ constexpr int padded_columns(int nb) { return nb < 2 ? 2 : nb + (nb & 1); }
// Where a group's lane slot r (column · 4 + lane c) keeps its two halves, in uint4 from the group's start (NB × 8 uint4).
// From 8 columns the halves are planes: slot r's first half at r, its second at NB · 4 + r, so a warp's 16-byte loads
// of one half read consecutive addresses (no bank conflicts; with a slot's halves side by side, lanes 32 bytes apart
// made every LDS.128 of the B operands a two-way conflict). Up to 4 columns they stay side by side (2r, 2r + 1): the
// planes gave the 4-column fused variants at g128 20 bytes of spills (nvcc 11.8), and at 1-2 columns lanes share slots.
template <int NB>
struct Halves {
  static constexpr bool kPlanes = NB >= 8;
  static constexpr int kStride = kPlanes ? 1 : 2;
  static constexpr int kSecond = kPlanes ? NB * 4 : 1;
  // Slot s's first half (s = (group · NB + column) · 4 + c) and lane (column, c)'s first B operand at unit `first`.
  static __device__ __forceinline__ uint4* slot(unsigned char* act, int s) {
    if constexpr (kPlanes) return reinterpret_cast<uint4*>(act) + (int64_t)(s / (NB * 4)) * (NB * 8) + s % (NB * 4);
    return reinterpret_cast<uint4*>(act + (int64_t)s * 32);
  }
  static __device__ __forceinline__ const uint4* operand(const unsigned char* act, int first, int column, int c) {
    if constexpr (kPlanes) return reinterpret_cast<const uint4*>(act) + first * (NB * 8) + column * 4 + c;
    return reinterpret_cast<const uint4*>(act + ((first * NB + column) * 4 + c) * 32);
  }
};
__host__ __device__ inline int padded_groups(int k, int p) { return units_per_warp(k, p) * kWarps; }
__host__ __device__ inline int activation_bytes(int nb, int k, int p) { return padded_groups(k, p) * 64 * nb * 2; }
__host__ __device__ inline int shared_bytes(int nb, int k, int p) {
  return activation_bytes(nb, k, p) + padded_groups(k, p) * padded_columns(nb) * 8;
}

// One unit in flight: 16 codes of rows g and g + 8.
struct Unit {
  uint2 lo;
  uint2 hi;
};

// A round's scales and zeros of rows g and g + 8: the P >> GS fp16 values of each (one per unit at groups of 64, one per
// two units at 128), loaded as one vector each.
template <int GS>
struct RoundScales {
  static constexpr int kWords = (kUnitsInFlight >> GS) / 2;
  uint32_t s_lo[kWords];
  uint32_t s_hi[kWords];
  uint32_t z_lo[kWords];
  uint32_t z_hi[kWords];

  // Unit p's value of one of them as a float (the half picked by the conversion: no shift).
  static __device__ __forceinline__ float at(const uint32_t (&v)[kWords], int p) {
    const int h = p >> GS;
    const uint32_t w = v[h >> 1];
    return __half2float(__ushort_as_half((unsigned short)((h & 1) ? (w >> 16) : (w & 0xFFFFu))));
  }
};

template <int W>
__device__ __forceinline__ void load_words(uint32_t (&v)[W], const unsigned short* p) {
  if constexpr (W == 2) {
    const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
    v[0] = u.x;
    v[1] = u.y;
  } else {
    v[0] = __ldg(reinterpret_cast<const uint32_t*>(p));
  }
}

// Where this lane's next round of units lives (rows clamped to n - 1: their outputs are not written): 64-bit pointers
// advanced a round at a time, so that the loads of a round take immediate offsets. A warp's units are the contiguous
// groups warp * U ... (U units per warp): unit p of a round is 32 bytes of codes further on per row, and a round's
// scales are one vector of P >> GS values (groups of 64 << GS codes).
template <int GS>
struct Cursor {
  const uint8_t* code_lo;
  const uint8_t* code_hi;
  const unsigned short* s_lo;
  const unsigned short* s_hi;
  const unsigned short* z_lo;
  const unsigned short* z_hi;

  __device__ __forceinline__ void advance() {
    code_lo += kUnitsInFlight * 32;
    code_hi += kUnitsInFlight * 32;
    s_lo += kUnitsInFlight >> GS;
    s_hi += kUnitsInFlight >> GS;
    z_lo += kUnitsInFlight >> GS;
    z_hi += kUnitsInFlight >> GS;
  }

  __device__ __forceinline__ void load_code(Unit& u, int p) const {
    u.lo = __ldg(reinterpret_cast<const uint2*>(code_lo + p * 32));
    u.hi = __ldg(reinterpret_cast<const uint2*>(code_hi + p * 32));
  }

  __device__ __forceinline__ void load_codes(Unit (&ring)[kUnitsInFlight]) const {
#pragma unroll
    for (int p = 0; p < kUnitsInFlight; p++) load_code(ring[p], p);
  }

  __device__ __forceinline__ void load_scales(RoundScales<GS>& sz) const {
    load_words(sz.s_lo, s_lo);
    load_words(sz.s_hi, s_hi);
    load_words(sz.z_lo, z_lo);
    load_words(sz.z_hi, z_hi);
  }
};

template <int GS>
__device__ __forceinline__ Cursor<GS> cursor_at(const uint8_t* __restrict__ packed, const unsigned short* __restrict__ scales,
                                                const unsigned short* __restrict__ zeros, int tile, int first, int g, int c,
                                                int n, int row_bytes, int groups) {
  const uint32_t r0 = (uint32_t)min(tile * kRows + g, n - 1);
  const uint32_t r1 = (uint32_t)min(tile * kRows + g + 8, n - 1);
  const uint32_t code = (uint32_t)first * 32u + (uint32_t)c * 8u;
  const uint32_t q = (uint32_t)(first >> GS);
  return {packed + (r0 * (uint32_t)row_bytes + code), packed + (r1 * (uint32_t)row_bytes + code),
          scales + (r0 * (uint32_t)groups + q), scales + (r1 * (uint32_t)groups + q),
          zeros + (r0 * (uint32_t)groups + q), zeros + (r1 * (uint32_t)groups + q)};
}

// The prologue: every block writes the permuted activations (after RMSNorm / SiLU·mul when fused) and their sums.
template <typename T, int NB, int P, int PRO>
__device__ __forceinline__ void stage_activations(const T* __restrict__ x, int64_t x_stride, int batch, int k,
                                                  const Fusion& fusion, int tid, int lane, int warp,
                                                  unsigned char* smem, float (*norm_partial)[NB]) {
  constexpr int NBp = padded_columns(NB);
  float inv[NB];
  if constexpr (PRO == kNorm) {
    float ss[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) ss[b] = 0.f;
    for (int c8 = tid; c8 < k / 8; c8 += kThreads) {
#pragma unroll
      for (int b = 0; b < NB; b++) {
        if (b < batch) {
          const uint4 u = *reinterpret_cast<const uint4*>(x + b * x_stride + (int64_t)c8 * 8);
          const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
          for (int i = 0; i < 8; i++) {
            const float v = Cvt2<T>::f(t[i]);
            ss[b] = fmaf(v, v, ss[b]);
          }
        }
      }
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
      ss[b] = warp_sum2(ss[b]);
      if (lane == 0) norm_partial[warp][b] = ss[b];
    }
    __syncthreads();
#pragma unroll
    for (int b = 0; b < NB; b++) {
      float total = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; w++) total += norm_partial[w][b];
      inv[b] = rsqrtf(total / (float)k + fusion.eps);
    }
  }
  T* act = reinterpret_cast<T*>(smem);
  float2* sums = reinterpret_cast<float2*>(smem + activation_bytes(NB, k, P));
  // Slot s = (group, column, lane c), c fastest: the four slots of a (group, column) are four consecutive threads. A
  // thread has slots / 256 slots (8 rows: 8 at K = 4,096, 22 at 11,008): U of them at a time, every load out before the
  // first is used. One at a time (before run 41) 8 rows cost ~5 µs more than one row per GEMV (a round trip per slot);
  // four at a time, run 41 (H100, cold µs, 7B shapes): 8 rows 19.1 / 31.6 / 25.5 / 10.1 → 17.3 / 28.9 / 21.8 / 9.2
  // (q/k/v, gate/up, down, output), 2 rows 4-7 % faster, but 4 rows 2-6 % slower (15.0 / 26.3 / 19.9 / 7.2 →
  // 15.9 / 27.9 / 20.3 / 7.4), so 4 rows keep one at a time.
  const int slots = (k / 16) * NB;
  constexpr int U = NB == 4 ? 1 : PRO == kPlain ? 4 : 2;
  for (int base = 0; base < slots; base += kThreads * U) {
    uint4 raw[U][2];
    uint4 raw_up[U][2];   // SiLU·mul: the up half
#pragma unroll
    for (int m = 0; m < U; m++) {
      const int s = base + m * kThreads + tid;
      const int b = (s >> 2) % NB;
#pragma unroll
      for (int h = 0; h < 2; h++) raw[m][h] = raw_up[m][h] = make_uint4(0u, 0u, 0u, 0u);
      if (s < slots && b < batch) {
        const int64_t at = b * x_stride + (int64_t)((s >> 2) / NB) * 64 + (s & 3) * 16;
#pragma unroll
        for (int h = 0; h < 2; h++) {
          raw[m][h] = *reinterpret_cast<const uint4*>(x + at + 8 * h);
          if constexpr (PRO == kSiluMul) raw_up[m][h] = *reinterpret_cast<const uint4*>(x + at + k + 8 * h);
        }
      }
    }
#pragma unroll
    for (int m = 0; m < U; m++) {
      if (base + m * kThreads >= slots) continue;   // the same in every thread (one row at K = 4,096: one slot each)
      const int s = base + m * kThreads + tid;
      const int c = s & 3;
      const int b = (s >> 2) % NB;
      const int G = (s >> 2) / NB;
      float v[16];
      const bool live = s < slots && b < batch;
      if (live) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const T* t = reinterpret_cast<const T*>(&raw[m][h]);
#pragma unroll
          for (int i = 0; i < 8; i++) v[8 * h + i] = Cvt2<T>::f(t[i]);
        }
        if constexpr (PRO == kSiluMul) {
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const T* t = reinterpret_cast<const T*>(&raw_up[m][h]);
#pragma unroll
            for (int i = 0; i < 8; i++) {
              const float g = v[8 * h + i];
              v[8 * h + i] = rnd2<T>(rnd2<T>(g / (1.f + expf(-g))) * Cvt2<T>::f(t[i]));
            }
          }
        }
        if constexpr (PRO == kNorm) {
          const T* w = static_cast<const T*>(fusion.norm_w) + (int64_t)G * 64 + c * 16;
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const uint4 u = __ldg(reinterpret_cast<const uint4*>(w) + h);
            const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
            for (int i = 0; i < 8; i++) v[8 * h + i] = rnd2<T>(Cvt2<T>::f(t[i]) * rnd2<T>(v[8 * h + i] * inv[b]));
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = 0.f;
      }
      // Stored x0 x4 x1 x5 x2 x6 x3 x7 per 8 (see word_pairs); the sums of the low-nibble (even) and high-nibble codes.
      float even = 0.f;
      float odd = 0.f;
      if (s < slots) {
        uint32_t word[8];
#pragma unroll
        for (int h = 0; h < 2; h++) {
#pragma unroll
          for (int j = 0; j < 4; j++) word[4 * h + j] = bits16<T>(v[8 * h + j]) | (bits16<T>(v[8 * h + j + 4]) << 16);
        }
        uint4* dst = Halves<NB>::slot(reinterpret_cast<unsigned char*>(act), s);
        dst[0] = make_uint4(word[0], word[1], word[2], word[3]);
        dst[Halves<NB>::kSecond] = make_uint4(word[4], word[5], word[6], word[7]);
#pragma unroll
        for (int i = 0; i < 16; i += 2) {
          even += v[i];
          odd += v[i + 1];
        }
      }
      even += __shfl_xor_sync(0xffffffffu, even, 1);
      odd += __shfl_xor_sync(0xffffffffu, odd, 1);
      even += __shfl_xor_sync(0xffffffffu, even, 2);
      odd += __shfl_xor_sync(0xffffffffu, odd, 2);
      if (s < slots && c == 0) {
        sums[G * NBp + b] = make_float2(fmaf(Magic<T>::kLow, even, Magic<T>::kHigh * odd), even + odd);
        if (NBp != NB && b == NB - 1) sums[G * NBp + NB] = make_float2(0.f, 0.f);
      }
    }
  }
}

// A unit's four A fragments (one per mma over 16 of its 64 codes), made from the codes of rows g and g + 8.
struct Fragments {
  uint32_t a[4][4];
};
template <typename T>
__device__ __forceinline__ Fragments unit_fragments(const Unit& u) {
  uint32_t lo0[4], lo1[4], hi0[4], hi1[4];
  word_pairs<T>(u.lo.x, lo0);
  word_pairs<T>(u.lo.y, lo1);
  word_pairs<T>(u.hi.x, hi0);
  word_pairs<T>(u.hi.y, hi1);
  return {{{lo0[0], hi0[0], lo0[1], hi0[1]}, {lo0[2], hi0[2], lo0[3], hi0[3]}, {lo1[0], hi1[0], lo1[1], hi1[1]},
           {lo1[2], hi1[2], lo1[3], hi1[3]}}};
}

// d = the unit's products against the eight activation columns whose B operands start at b (a uint4 per lane in each
// of the slot's two halves: Halves).
template <typename T, int NB>
__device__ __forceinline__ void unit_mma(float (&d)[4], const Fragments& f, const uint4* b) {
  const uint4 b01 = b[0];
  const uint4 b23 = b[Halves<NB>::kSecond];
  mma_16816<T>(d, f.a[0], b01.x, b01.y);
  mma_16816<T>(d, f.a[1], b01.z, b01.w);
  mma_16816<T>(d, f.a[2], b23.x, b23.y);
  mma_16816<T>(d, f.a[3], b23.z, b23.w);
}

// acc[o..o + 3] += s (d - off - z sum x) for rows g (s0, z0) and g + 8 (s1, z1), columns 2c (sm.x, sm.y) and, with
// SECOND, 2c + 1 (sm.z, sm.w): acc[o] row g column 2c, acc[o + 1] row g column 2c + 1, acc[o + 2] and acc[o + 3] row g + 8.
// FOLD (bf16, whose two magics are both 128): off is 128 sum x exactly (sm.x == 128 sm.y, bit for bit: a power of two
// commutes with the sum's one rounding), so the caller passes z0 and z1 as 128 + z (exact in fp32, made once per unit)
// and the term is one FMA, d - (128 + z) sum x, with one rounding instead of two (session 21, int4-mma16 only: per unit
// 8 FADD fewer for 2 more, and one step off each product's chain after the mma).
template <bool SECOND, bool FOLD, int N>
__device__ __forceinline__ void add_scaled(float (&acc)[N], int o, const float (&d)[4], float4 sm, float s0, float z0,
                                           float s1, float z1) {
  const float off0 = FOLD ? 0.f : sm.x;   // d - 0.f folds away: FOLD's one FMA per product
  const float off1 = FOLD ? 0.f : sm.z;
  acc[o] = fmaf(s0, fmaf(-z0, sm.y, d[0] - off0), acc[o]);
  acc[o + 2] = fmaf(s1, fmaf(-z1, sm.y, d[2] - off0), acc[o + 2]);
  if constexpr (SECOND) {
    acc[o + 1] = fmaf(s0, fmaf(-z0, sm.w, d[1] - off1), acc[o + 1]);
    acc[o + 3] = fmaf(s1, fmaf(-z1, sm.w, d[3] - off1), acc[o + 3]);
  }
}

// One unit's products (4 mma over its 64 codes of 16 rows) and their scaled sums into acc (rows g, g + 8; columns
// 2c, 2c + 1; sums at sm[0]). At 16 activation rows (NB = 16, geometry 11) the same A fragments go against a second B
// column set, activation rows 8-15 (lane (g, c) reads columns g and g + 8, kSecondColumns uint4 further on; sums at
// sm[4]) into acc[4..7], so a unit's codes are read and made into floats once for 16 rows. (sm[0] is read before the
// products: read after them, ptxas gave the 8-row RMSNorm variant at g128 a 32-byte stack frame, nvcc 11.8.)
constexpr int kSecondColumns = 8 * 4 * Halves<16>::kStride;   // uint4: 8 columns of 4 lanes' slots
template <typename T, int NB>
__device__ __forceinline__ void unit_products(const Unit& u, float s0, float z0, float s1, float z1, const uint4* b,
                                              const float4* sm, float (&acc)[NB == 16 ? 8 : 4]) {
  // FOLD at 16 columns only: at 8, the RMSNorm variant at g128 got a 32-byte stack frame with it (nvcc 11.8).
  constexpr bool kFold = std::is_same<T, __nv_bfloat16>::value && NB == 16;
  static_assert(!kFold || Magic<T>::kLow == Magic<T>::kHigh, "add_scaled's FOLD needs one magic");
  if constexpr (kFold) {
    z0 += Magic<T>::kLow;
    z1 += Magic<T>::kLow;
  }
  const float4 first = sm[0];
  const Fragments f = unit_fragments<T>(u);
  float d[4] = {0.f, 0.f, 0.f, 0.f};
  unit_mma<T, NB>(d, f, b);
  add_scaled<(NB > 1), kFold>(acc, 0, d, first, s0, z0, s1, z1);
  if constexpr (NB == 16) {
    float e[4] = {0.f, 0.f, 0.f, 0.f};
    unit_mma<T, NB>(e, f, b + kSecondColumns);
    add_scaled<true, kFold>(acc, 4, e, sm[4], s0, z0, s1, z1);
  }
}

// A tile's end: the 8 warps' sums of rows g, g + 8 and columns 2c, 2c + 1 (acc) through shared memory (`red`, one of
// two buffers: one barrier), then the output; with K splits this split's tile goes to the workspace and the tile's last
// split to arrive adds all of them in split order (the threadfence-reduction pattern, as decode_attention's splits), so
// the sums do not depend on the arrival order.
template <typename T, int NB, bool RES>
__device__ __forceinline__ void finish_tile(float (&red)[kWarps][kRows * NB], const float (&acc)[NB == 16 ? 8 : 4], int tid,
                                            int g, int c, int warp, int tile, int n, int batch, T* __restrict__ out,
                                            int64_t out_stride, const T* __restrict__ residual, const Fusion& fusion,
                                            int splits, int split, int& merges) {
  if (2 * c < NB) {
    red[warp][g * NB + 2 * c] = acc[0];
    red[warp][(g + 8) * NB + 2 * c] = acc[2];
  }
  if (2 * c + 1 < NB) {
    red[warp][g * NB + 2 * c + 1] = acc[1];
    red[warp][(g + 8) * NB + 2 * c + 1] = acc[3];
  }
  if constexpr (NB == 16) {
    red[warp][g * NB + 8 + 2 * c] = acc[4];
    red[warp][g * NB + 9 + 2 * c] = acc[5];
    red[warp][(g + 8) * NB + 8 + 2 * c] = acc[6];
    red[warp][(g + 8) * NB + 9 + 2 * c] = acc[7];
  }
  __syncthreads();
  if (splits == 1) {
    store_tile<T, kWarps, NB, kRows, RES>(red, tid, tile * kRows, n, batch, out, out_stride, residual, fusion.res_stride);
    return;
  }
  float* part = fusion.work + (int64_t)tile * splits * (kRows * NB);
  if (tid < kRows * NB) {
    float t = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; w++) t += red[w][tid];
    part[split * (kRows * NB) + tid] = t;
  }
  __threadfence();
  __syncthreads();
  if (tid == 0) merges = atomicAdd(fusion.arrivals + tile, 1) == splits - 1;
  __syncthreads();
  if (!merges) return;
  __threadfence();
  if (tid == 0) fusion.arrivals[tile] = 0;
  if (tid < kRows * NB) {
    float t = 0.f;
    for (int s = 0; s < splits; s++) t += __ldcg(part + s * (kRows * NB) + tid);
    const int r = tid / NB;
    const int b = tid % NB;
    if (tile * kRows + r < n && b < batch) store_output<T, RES>(t, out, out_stride, residual, fusion.res_stride, b, tile * kRows + r);
  }
}

// NB = 16 holds its 16 × K activations in shared memory (139 KB at K = 4,096): one block per SM, so it may use the
// registers of two.
template <typename T, int NB, int GS, int PRO, bool RES>
__global__ void __launch_bounds__(kThreads, NB == 16 ? 1 : 2) int4_gemv_mma_kernel(
    const T* __restrict__ x, int64_t x_stride, const uint8_t* __restrict__ packed,
    const unsigned short* __restrict__ scales, const unsigned short* __restrict__ zeros, T* __restrict__ out,
    int64_t out_stride, int batch, int n, int k, Fusion fusion) {
  constexpr int P = kUnitsInFlight;
  constexpr int NBp = padded_columns(NB);
  LOWBIT_DYNAMIC_SHARED(smem);
  __shared__ float red[2][kWarps][kRows * NB];
  __shared__ float norm_partial[kWarps][NB];
  __shared__ int merges;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int g = lane >> 2;
  const int c = lane & 3;
  // K splits (16 rows only, plain; the grid a multiple of the splits): block i takes split i % S of every tile it
  // covers, the codes [k0, k0 + kk) (whole quads of 256: split s of S has quads [sQ/S, (s+1)Q/S) of Q = K / 256).
  const int splits = NB == 16 && fusion.splits > 1 ? fusion.splits : 1;
  const int split = (int)blockIdx.x % splits;
  const int k0 = split * (k / 256) / splits * 256;
  const int kk = (split + 1) * (k / 256) / splits * 256 - k0;
  const int groups64 = kk / 64;
  const int groups = (k / 64) >> GS;
  const int row_bytes = k / 2;
  const int units = units_per_warp(kk, P);
  const int tiles = (n + kRows - 1) / kRows;
  const int tile_step = (int)gridDim.x / splits;
  const T* residual = static_cast<const T*>(fusion.residual);
  // This warp's units are groups first, first + 1, ... first + units - 1; K % 256 == 0 makes every round of P either
  // wholly below K / 64 (live) or wholly past it, so a round is skipped or run whole (the same in every lane).
  const int first = warp * units;
  const int live_groups = min(units, groups64 - first);
  const int rounds = live_groups > 0 ? live_groups / P : 0;

  Unit ring[P];
  RoundScales<GS> sz[2];
  int tile = (int)blockIdx.x / splits;
  packed += k0 / 2;
  scales += (k0 / 64) >> GS;
  zeros += (k0 / 64) >> GS;
  // The first round's loads go out before the activations (they do not depend on them, nor on the kernel before).
  Cursor<GS> at = cursor_at<GS>(packed, scales, zeros, tile, first, g, c, n, row_bytes, groups);
  LOWBIT_PDL_TRIGGER();
  if (tile < tiles && rounds > 0) at.load_codes(ring), at.load_scales(sz[0]);
  at.advance();
  LOWBIT_PDL_WAIT();
  stage_activations<T, NB, P, PRO>(x + k0, x_stride, batch, kk, fusion, tid, lane, warp, smem, norm_partial);
  __syncthreads();

  // This lane's B operand (column g; lanes past NB read column g % NB, whose products land in columns nobody reads)
  // and its columns' sums (2c and 2c + 1, clamped), at this warp's first group; fixed steps per unit.
  const uint4* b_at = Halves<NB>::operand(smem, first, g & (NB - 1), c);
  constexpr int kBStep = NB * 8;                     // uint4 per group
  const float4* sum_at = reinterpret_cast<const float4*>(smem + activation_bytes(NB, kk, P)) + first * (NBp / 2) + min(2 * c, NBp - 2) / 2;
  constexpr int kSumStep = NBp / 2;                  // float4 per group
  int buf = 0;
  for (; tile < tiles; tile += tile_step) {
    const int next_tile = tile + tile_step;
    float acc[NB == 16 ? 8 : 4] = {};
    // A round of P units: the scales of `use` (loaded a round ago) and the codes in the ring; the next round's scales
    // go out first into `fill`, then each unit's products and its slot's load for the next round. LAST: the next
    // round is the next tile's first (when there is one), else this tile's u + P.
    auto round = [&](auto last, int r, const RoundScales<GS>& use, RoundScales<GS>& fill) {
      constexpr bool kLast = decltype(last)::value;
      const bool load = !kLast || next_tile < tiles;
      if (kLast && load) at = cursor_at<GS>(packed, scales, zeros, next_tile, first, g, c, n, row_bytes, groups);
      if (load) at.load_scales(fill);
      const uint4* b = b_at + r * P * kBStep;
      const float4* sm = sum_at + r * P * kSumStep;
#pragma unroll
      for (int p = 0; p < P; p++) {
        unit_products<T, NB>(ring[p], RoundScales<GS>::at(use.s_lo, p), RoundScales<GS>::at(use.z_lo, p),
                             RoundScales<GS>::at(use.s_hi, p), RoundScales<GS>::at(use.z_hi, p), b + p * kBStep,
                             sm + p * kSumStep, acc);
        if (load) at.load_code(ring[p], p);
      }
      at.advance();
    };
    // Two rounds per step with the scale buffers alternating (no copies), the last round apart; when the tile's rounds
    // are odd in number, the next tile's first scales land in sz[1] and move to sz[0] once.
    int r = 0;
    for (; r + 2 < rounds; r += 2) {
      round(std::false_type{}, r, sz[0], sz[1]);
      round(std::false_type{}, r + 1, sz[1], sz[0]);
    }
    if (r + 1 < rounds) {
      round(std::false_type{}, r, sz[0], sz[1]);
      round(std::true_type{}, r + 1, sz[1], sz[0]);
    } else if (r < rounds) {
      round(std::true_type{}, r, sz[0], sz[1]);
      sz[0] = sz[1];
    }
    finish_tile<T, NB, RES>(red[buf], acc, tid, g, c, warp, tile, n, batch, out, out_stride, residual, fusion, splits, split, merges);
    buf ^= 1;
  }
}

// Rows taken: 1-32 activation rows at K % 256 == 0 (rounds of 4 groups), groups of 64 or 128 codes (checked at
// launch). One launch takes 1, 2, 4 or 8 rows (tensor-core columns), their activations in shared memory within what a
// block may opt in to (K * rows * 2 bytes and the per-group sums: 8 rows at K = 11,008 take 204 KB, over the 200 KB
// bound this had until session 18, when the down projection of a 7B at 8 rows fell back to dequantize + cuBLAS, 85 µs
// against int4-mma's ~20 at 4). More rows, or rows whose activations do not fit (8 at K = 14,336: 238 KB), run as
// several launches over slices of the rows (launch_variant): each reads the codes again, a quarter of the 16-bit
// weights' bytes per slice, where dequantize + cuBLAS writes and reads the 16-bit weights every call (int4 batch 16
// with it: 1,145 tokens/s against 1,810 at batch 8 with int4-mma, H100 run 40).
inline int columns_for(int batch) { return batch <= 1 ? 1 : batch <= 2 ? 2 : batch <= 4 ? 4 : 8; }
constexpr int kMaxBatch = 32;
// static_shared: a bound on the kernel's static shared memory (the reduction buffers, 8 KB at 8 columns, 16 at 16),
// which the opt-in limit includes; launch() checks the real figure.
constexpr int static_shared(int columns) { return columns <= 8 ? 16 * 1024 : 24 * 1024; }
// The widest of `splits` K splits in whole quads of 256 codes (K itself for one).
inline int split_width(int k, int splits) { return splits <= 1 ? k : (k / 256 + splits - 1) / splits * 256; }
inline bool fits(int columns, int k) { return shared_bytes(columns, k, kUnitsInFlight) + static_shared(columns) <= max_dynamic_shared(); }
// The rows per launch for `batch` rows: columns_for(batch) up to 8, halved until the activations fit; 0 if one row's
// do not.
inline int rows_per_launch(int batch, int k) {
  int rows = columns_for(batch);
  while (rows > 0 && !fits(rows, k)) rows /= 2;
  return rows;
}
inline bool supports(int batch, int k) {
  return batch >= 1 && batch <= kMaxBatch && k % 256 == 0 && rows_per_launch(batch, k) > 0;
}

// The persistent grid over n outputs' row tiles, each in `splits` K splits: a multiple of the splits (each block keeps
// one split over its tiles), at least one block per split.
template <auto Kernel>
int split_blocks(int n, int splits, int smem) {
  const int64_t tiles = ((int64_t)n + kRows - 1) / kRows;
  const int blocks = persistent_blocks<Kernel>(kThreads, tiles * splits, smem);
  if (blocks == 0 || splits == 1) return blocks;
  return blocks < splits ? splits : blocks / splits * splits;
}

template <typename T, int NB, int GS, int PRO, bool RES>
int launch(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os, int batch,
           int n, int k, const Fusion& fusion, cudaStream_t st) {
  constexpr auto kernel = int4_gemv_mma_kernel<T, NB, GS, PRO, RES>;
  const int splits = NB == 16 && fusion.splits > 1 ? fusion.splits : 1;
  if (splits > 1 && (fusion.work == nullptr || fusion.arrivals == nullptr)) return -3;
  const int smem = shared_bytes(NB, split_width(k, splits), kUnitsInFlight);
  if (allow_shared<kernel>(smem) != 0) return -3;
  const int blocks = split_blocks<kernel>(n, splits, smem);
  if (blocks == 0) return 0;
  return launch_pdl(kernel, blocks, kThreads, st, smem, static_cast<const T*>(x), xs, static_cast<const uint8_t*>(p),
                    static_cast<const unsigned short*>(s), static_cast<const unsigned short*>(z), static_cast<T*>(out), os,
                    batch, n, k, fusion);
}

template <typename T, int GS>
int launch_group(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os,
                 int batch, int n, int k, int prologue, bool residual, const Fusion& f, cudaStream_t st) {
  if (prologue == kPlain && !residual) {
    switch (columns_for(batch)) {
      case 1: return launch<T, 1, GS, kPlain, false>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      case 2: return launch<T, 2, GS, kPlain, false>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      case 4: return launch<T, 4, GS, kPlain, false>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      default: return launch<T, 8, GS, kPlain, false>(x, xs, p, s, z, out, os, batch, n, k, f, st);
    }
  }
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    if (batch == 1) {
      if (prologue == kNorm && !residual) return launch<T, 1, GS, kNorm, false>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      if (prologue == kPlain && residual) return launch<T, 1, GS, kPlain, true>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      if (prologue == kSiluMul && residual) return launch<T, 1, GS, kSiluMul, true>(x, xs, p, s, z, out, os, batch, n, k, f, st);
    } else if (batch == 2) {
      if (prologue == kNorm && !residual) return launch<T, 2, GS, kNorm, false>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      if (prologue == kPlain && residual) return launch<T, 2, GS, kPlain, true>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      if (prologue == kSiluMul && residual) return launch<T, 2, GS, kSiluMul, true>(x, xs, p, s, z, out, os, batch, n, k, f, st);
    } else if (batch <= 4) {
      if (prologue == kNorm && !residual) return launch<T, 4, GS, kNorm, false>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      if (prologue == kPlain && residual) return launch<T, 4, GS, kPlain, true>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      if (prologue == kSiluMul && residual) return launch<T, 4, GS, kSiluMul, true>(x, xs, p, s, z, out, os, batch, n, k, f, st);
    } else {
      if (prologue == kNorm && !residual) return launch<T, 8, GS, kNorm, false>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      if (prologue == kPlain && residual) return launch<T, 8, GS, kPlain, true>(x, xs, p, s, z, out, os, batch, n, k, f, st);
      if (prologue == kSiluMul && residual) return launch<T, 8, GS, kSiluMul, true>(x, xs, p, s, z, out, os, batch, n, k, f, st);
    }
  }
  return -3;
}

// Geometry 11, "int4-mma16": 9-32 rows in slices of 16 columns (a tail of 8 or fewer rows as int4-mma), plain only.
// 16 rows' activations fit up to K = 4,096 (139 KB; the next K takes room for 96 groups, 228 KB); past that K goes in
// splits (splits16): a 13B's 5,120 in 2, a 7B's down projection at 11,008 in 3 (3,584 + 3,584 + 3,840), each block
// staging one split's activations, the tile's last split adding the partial sums (Fusion::splits). The kernel
// selection times it against int4-mma's slices of 8, which read the codes twice as often: at 16 rows q/k/v 22.4 against
// 30.0 µs, gate/up 36.4 against 53.7, output 11.5 against 16.2, down (3 splits) 31.2 against 41.2 (H100, run 47).
// (Session 20 also tried int4-mma16 with its codes and scales through a three-round cp.async ring in shared memory,
// 125 registers instead of ~245: 4-12 % slower at every shape, runs 46-47, so not bound by bytes in flight; removed,
// see commit f4bae7e. Nsight Compute, run 50: one block of 8 warps per SM, a warp issuing once per 6 cycles, DRAM at
// 29 %, the time following the SM clock. Session 21 then ran it at two blocks per SM, 128 registers, K in splits of at
// most 2,048 so two blocks' activations fit (int4-mma16-occ, commit c369daa): 14-50 % slower at q/k/v, gate/up, output
// and lm_head, level at the down projection (run 52), so more warps with fewer registers and twice the splits lose
// to the 8 warps' own instruction-level parallelism; removed.)
constexpr int kMaxSplits = 8;
inline int splits16(int k) {
  const int quads = k / 256;
  for (int s = 1; s <= kMaxSplits && s <= quads; s++)
    if (fits(16, split_width(k, s))) return s;
  return 0;
}
inline bool supports16(int batch, int k) { return batch > 8 && batch <= kMaxBatch && k % 256 == 0 && splits16(k) > 0; }
// The fp32 workspace of int4-mma16's K splits at n outputs (0 without splits): a 16 × 16 tile per split and row tile.
inline int64_t workspace16(int n, int k) {
  const int s = splits16(k);
  return s > 1 ? ((int64_t)n + kRows - 1) / kRows * s * kRows * 16 : 0;
}

// Runs `launch_slice(x rows, out rows, rows, fusion)` over slices of `per` rows of the batch, each on its rows of x,
// out and the residual (the RMSNorm and SiLU·mul prologues are per row); the first failure's code, else 0.
template <typename T, typename Slice>
int over_slices(const void* x, int64_t xs, void* out, int64_t os, int batch, int per, const Fusion& f, Slice launch_slice) {
  for (int first = 0; first < batch; first += per) {
    Fusion slice = f;
    if (f.residual != nullptr) slice.residual = static_cast<const T*>(f.residual) + first * f.res_stride;
    const int rc = launch_slice(static_cast<const T*>(x) + first * xs, static_cast<T*>(out) + first * os,
                                batch - first < per ? batch - first : per, slice);
    if (rc != 0) return rc;
  }
  return 0;
}

// Plain at 1-32 rows in both dtypes; the fused variants (bf16, 1-2 rows, up to 8 with LOWBIT_MMA_FUSED_ROWS) as the
// other geometries'. Rows past one launch's (rows_per_launch) go in slices.
template <typename T>
int launch_variant(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os,
                   int batch, int n, int k, int group, int prologue, bool residual, const Fusion& f, cudaStream_t st) {
  if (!supports(batch, k) || (group != 64 && group != 128)) return -3;
  return over_slices<T>(x, xs, out, os, batch, rows_per_launch(batch, k), f, [&](const void* xp, void* op, int rows, const Fusion& sf) {
    return group == 64 ? launch_group<T, 0>(xp, xs, p, s, z, op, os, rows, n, k, prologue, residual, sf, st)
                       : launch_group<T, 1>(xp, xs, p, s, z, op, os, rows, n, k, prologue, residual, sf, st);
  });
}

// int4-mma16: slices of 16 rows, a tail of 8 or fewer as int4-mma.
template <typename T>
int launch_variant16(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os,
                     int batch, int n, int k, int group, int prologue, bool residual, const Fusion& f, cudaStream_t st) {
  if (!supports16(batch, k) || prologue != kPlain || residual || (group != 64 && group != 128)) return -3;
  Fusion split = f;
  split.splits = splits16(k);
  return over_slices<T>(x, xs, out, os, batch, 16, split, [&](const void* xp, void* op, int rows, const Fusion& sf) {
    if (rows <= 8) return launch_variant<T>(xp, xs, p, s, z, op, os, rows, n, k, group, kPlain, false, sf, st);
    return group == 64 ? launch<T, 16, 0, kPlain, false>(xp, xs, p, s, z, op, os, rows, n, k, sf, st)
                       : launch<T, 16, 1, kPlain, false>(xp, xs, p, s, z, op, os, rows, n, k, sf, st);
  });
}

}  // namespace mma

// Chunks per thread for K in geometry g: a round of chunks covers 4,096 codes (256 x 16 = 128 x 32), int4-v2-h2b's
// 12,288 (384 x 32); 1..4 (K <= 16384) in the others.
inline int chunks_per_thread(int k, int g = 1) { return (k / codes_of(g) + threads_of(g) - 1) / threads_of(g); }

// Which (batch, K) the kernel takes: 1-2 rows up to four chunks per thread; 3-4 rows (activations of 4 rows as floats)
// with one chunk per thread (K <= 4096).
inline bool supports(int batch, int k) {
  const int ch = chunks_per_thread(k);
  return k % 16 == 0 && ((batch >= 1 && batch <= 2 && ch >= 1 && ch <= 4) || (batch >= 3 && batch <= 4 && ch == 1));
}

// The (rows, chunks per thread) built per geometry. int4-v2: 1-2 rows at 1-4 chunks, 3-4 rows at one. int4-v2-wide:
// one row at 1-3 chunks, two rows at one: ptxas (nvcc 11.8, sm_90) gives the others 252-255 registers and, at two rows
// and 3-4 chunks, 0.01-2 KB of spills per thread, where int4-v2 one row one chunk takes 75 (docs/gpu.md, session 13).
constexpr bool built(int g, int nb, int ch) {
  return g == 1 ? (nb <= 2 || ch == 1)
       : g == 3 ? ((nb == 1 && ch <= 3) || (nb == 2 && ch == 1))
       : g == 17 ? (nb == 1 && ch == 1)
       : half2_products(g) ? (nb == 1 && ch <= 3)
       : g == 5 ? (nb == 1 && ch == 1)
       : g == 7 && ((nb <= 2 && ch == 1) || (nb == 1 && ch <= 8));
}

// int4-v2, -wide, -h2, -h2s and -shared at one row take their RMSNorm prologues deferred (kDefer) unless
// LOWBIT_NORM_DEFER=0 (rmsnorm_kernel's roundings, bit for bit, as before session 29). int4-v2-occ (64 registers), -h2b
// (opt-in) and int4-mma keep the rounded prologue.
inline bool norm_defer() {
  static const bool on = env_int("LOWBIT_NORM_DEFER", 1) != 0;
  return on;
}

inline bool built_for(int g, int batch, int k) {
  const int nb = batch <= 1 ? 1 : batch <= 2 ? 2 : 4;
  return built(g, nb, chunks_per_thread(k, g));
}

// The most rows int4-mma's fused variants (RMSNorm prologue, SiLU·mul prologue, residual epilogue) take: 2, the rows
// measured (run 22-23); LOWBIT_MMA_FUSED_ROWS (up to 8) offers them at 3-8 rows too, built since session 18 and
// checked by the emulator and the self-check, not yet timed against the separate kernels there.
inline int mma_fused_rows() {
  static const int rows = [] {
    const int r = env_int("LOWBIT_MMA_FUSED_ROWS", 2);
    return r < 1 ? 1 : r > 8 ? 8 : r;
  }();
  return rows;
}

// `geometry` 1 (int4-v2), 3 (int4-v2-wide, K % 32 == 0), 5 (int4-v2-occ, one row, K <= 4096), 7 (int4-v2-shared:
// one row at K <= 12288 or two at K <= 4096, K % 64 == 0, group % 64 == 0: checked at launch), 9 (int4-mma) or 11
// (int4-mma16: 9-32 rows, plain, past K = 4,096 in K splits). The fused variants (a prologue or the residual add) are
// built for bfloat16 and 1-2 rows only (fewer instantiations to compile on first use), int4-mma's for 1-8 (offered up
// to mma_fused_rows()); the engine asks before it fuses and otherwise runs the separate kernels.
// int4-v2-h2 and -h2s add error (their fp16 partial sums; measured against the dequantize + linear reference, which is
// itself 2.6e-3 from the exact product: 2.63e-3 and 2.9e-3 where the fp32 kernels give 2.59e-3, run 57), less than the
// eager path's own distance from the exact answer; LOWBIT_INT4_HALF2=0 keeps them out of the kernel selection. They are
// offered at one chunk per thread (K <= 4,096); at 2-3 chunks (K <= 12,288: a 7B's down projection) only with
// LOWBIT_INT4_HALF2=2: there (two 128-thread blocks per SM, 96 activations per thread through the prologue) the down
// projection lost 39 µs per step on the H100 (run 57b) while winning 3 % cold; not yet measured on the H200. -h2b
// (geometry 17, 384 threads, one chunk per thread up to K = 12,288) also only with LOWBIT_INT4_HALF2=2, unmeasured.
inline int half2_level() {
  static const int level = env_int("LOWBIT_INT4_HALF2", 1);
  return level;
}

// int4-v2-h2c (geometry 19, below: launch_cluster).
constexpr int kClusterGeometry = 19;
constexpr int kClusterMaxSplits = 8;   // the portable cluster size
constexpr int kClusterMaxTiles = 32;   // row tiles per block (the launch adds clusters to stay under it)

// The K splits of int4-v2-h2c at K: one chunk of 32 codes per thread of a 128-thread block and split, 2 to 8 splits (a
// 7B's down projection 3, a 13B's 4, Llama-3-8B's 4, a 70B's 7), or 0 where it does not apply (K <= 4,096 is -h2s).
inline int cluster_splits(int k) {
  if (k % 32 != 0) return 0;
  const int s = (k / 32 + 127) / 128;
  return s >= 2 && s <= kClusterMaxSplits ? s : 0;
}

inline bool cluster_on() {
  static const bool on = env_int("LOWBIT_INT4_CLUSTER", 0) == 1;
  return on;
}

inline bool fused_supports(int dtype, int batch, int k, int geometry, int prologue, int residual) {
  if (geometry == kClusterGeometry) {
#ifdef LOWBIT_NO_WIDE
    return false;
#endif
    // Plain in both dtypes; the residual add and SiLU·mul + residual (the decode step's down projection) in bf16.
    const bool variant = (prologue == kPlain && (!residual || dtype == 0)) || (prologue == kSiluMul && residual && dtype == 0);
    return cluster_on() && half2_level() >= 1 && batch == 1 && cluster_splits(k) > 0 && variant;
  }
  if (half2_products(geometry) && (half2_level() < 1 || (half2_level() < 2 && (geometry == 17 || chunks_per_thread(k) > 1)))) return false;
#ifdef LOWBIT_NO_WIDE
  if (geometry == 3 || geometry == 5 || geometry == 7 || half2_products(geometry)) return false;
#endif
  if (geometry == 11) {
#ifdef LOWBIT_NO_WIDE
    return false;
#endif
    return prologue == kPlain && !residual && mma::supports16(batch, k);
  }
  if (geometry == 9) {
#ifdef LOWBIT_NO_WIDE
    return false;
#endif
    if (!mma::supports(batch, k) || prologue < kPlain || prologue > kSiluMul) return false;
    if (prologue == kPlain && !residual) return true;
    const bool variant = (prologue == kNorm && !residual) || (prologue == kPlain && residual) || (prologue == kSiluMul && residual);
    return variant && dtype == 0 && batch <= mma_fused_rows();
  }
  if (geometry != 1 && geometry != 3 && geometry != 5 && geometry != 7 && !half2_products(geometry)) return false;
  if (geometry == 7 && (k % 64 != 0 || batch > 2 || !built_for(7, batch, k) || !shared_fits(batch, k))) return false;
  // -shared past three chunks per thread: plain, or the residual add (a down projection's variant) in bfloat16.
  if (geometry == 7 && chunks_per_thread(k) > 3) return prologue == kPlain && (!residual || dtype == 0);
  if (geometry == 3 && (k % 32 != 0 || batch > 2 || !built_for(3, batch, k))) return false;
  if (half2_products(geometry) && (k % 32 != 0 || batch != 1 || !built_for(geometry, batch, k))) return false;
  if (geometry == 5 && (batch != 1 || !built_for(5, batch, k))) return false;
  // Paired gate/up rows with the SiLU·mul epilogue: one row, int4-v2, -wide, -h2 and -h2s (n even: checked at launch);
  // int4-v2-occ's 64 registers spilled 80 bytes with it, -h2b's 80 spilled 12.
  if (prologue == kNormSiluPairs) return dtype == 0 && batch == 1 && residual == 0 && (geometry == 1 || geometry == 3 || geometry == 13 || geometry == 15) && supports(batch, k);
  if (prologue < kPlain || prologue > kSiluMul) return false;
  if (prologue == kPlain && !residual) return supports(batch, k);
  const bool variant = (prologue == kNorm && !residual) || (prologue == kPlain && residual) || (prologue == kSiluMul && residual);
  return variant && dtype == 0 && batch >= 1 && batch <= 2 && supports(batch, k);
}

template <typename T, int G, int NB, int CH>
int launch_v2_variant(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os,
                      int batch, int n, int k, int group, int prologue, bool residual, const Fusion& f, cudaStream_t st) {
  if (prologue == kPlain && !residual) return launch_v2<T, G, NB, CH, kPlain, false>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
  if constexpr (std::is_same<T, __nv_bfloat16>::value && NB <= 2) {
    if constexpr (defer_built(G) && NB == 1) {
      if (norm_defer() && prologue == kNorm && !residual) return launch_v2<T, G, NB, CH, kDefer + kNorm, false>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
      // The paired gate/up rows defer only at one chunk per thread: at two (a 13B's K = 5,120) the deferred pairs took
      // 254 registers against the rounded ones' 168 and ran slower cold (H100 run 77: int4-v2 47.15 µs against 44.13,
      // -wide 40.39 against 39.74), where the deferred RMSNorm alone won (q/k/v: -wide 22.94 against 24.76, -shared
      // 18.41 against 19.90, int4-v2 25.88 against 26.35).
      if constexpr (CH == 1) {
        if (norm_defer() && prologue == kNormSiluPairs && !residual && n % 2 == 0) return launch_v2<T, G, NB, CH, kDefer + kNormSiluPairs, false>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
      }
    }
    if (prologue == kNorm && !residual) return launch_v2<T, G, NB, CH, kNorm, false>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
    if (prologue == kPlain && residual) return launch_v2<T, G, NB, CH, kPlain, true>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
    if (prologue == kSiluMul && residual) return launch_v2<T, G, NB, CH, kSiluMul, true>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
    if constexpr (NB == 1 && G != 5 && G != 17) {
      if (prologue == kNormSiluPairs && !residual && n % 2 == 0) return launch_v2<T, G, NB, CH, kNormSiluPairs, false>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
    }
  }
  return -3;
}

template <typename T, int G, int NB>
int launch_v2_ch(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os, int batch,
                 int n, int k, int group, int prologue, bool residual, const Fusion& f, cudaStream_t st) {
  switch (chunks_per_thread(k, G)) {
    case 1: if constexpr (built(G, NB, 1)) return launch_v2_variant<T, G, NB, 1>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st); else return -3;
    case 2: if constexpr (built(G, NB, 2)) return launch_v2_variant<T, G, NB, 2>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st); else return -3;
    case 3: if constexpr (built(G, NB, 3)) return launch_v2_variant<T, G, NB, 3>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st); else return -3;
    case 4: if constexpr (built(G, NB, 4)) return launch_v2_variant<T, G, NB, 4>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st); else return -3;
    default: return -3;
  }
}

template <typename T, int NB, int CH>
int launch_shared_variant(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os,
                          int batch, int n, int k, int group, int prologue, bool residual, const Fusion& f, cudaStream_t st) {
  if (prologue == kPlain && !residual) return launch_shared<T, NB, CH, kPlain, false>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
  // Past three chunks (long_shared) only the residual add: the down projection's one variant.
  if constexpr (CH > 3 && std::is_same<T, __nv_bfloat16>::value) {
    if (prologue == kPlain && residual) return launch_shared<T, NB, CH, kPlain, true>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
    return -3;
  }
  if constexpr (CH <= 3 && std::is_same<T, __nv_bfloat16>::value) {
    if constexpr (NB == 1) {
      if (norm_defer() && prologue == kNorm && !residual) return launch_shared<T, NB, CH, kDefer + kNorm, false>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
    }
    if (prologue == kNorm && !residual) return launch_shared<T, NB, CH, kNorm, false>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
    if (prologue == kPlain && residual) return launch_shared<T, NB, CH, kPlain, true>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
    if (prologue == kSiluMul && residual) return launch_shared<T, NB, CH, kSiluMul, true>(x, xs, p, s, z, out, os, batch, n, k, group, f, st);
  }
  return -3;
}

// ---------------------------------------------------------------------------------------------------------------------
// G = 19, "int4-v2-h2c": -h2s at one row with K split over the blocks of a thread block cluster (sm_90). A 7B's down
// projection (K = 11,008) runs as three K-slices of ~3,700 codes, each block one chunk of 32 codes per thread at four
// 128-thread blocks per SM: the q/k/v kernel's shape, which reads 3.1-3.5 TB/s cold on the H200 where the down
// projection's 2-3 chunks per thread reach 2.4 (int4-mma 10.13 µs, -shared 10.35, -h2s ~10.5). The blocks of a cluster
// take the same row tiles, each its own slice of K, and keep each tile's R sums in their shared memory; after the last
// tile one cluster barrier, then each block adds a third (a split's share) of the cluster's rows from every block's
// shared memory in split order (distributed shared memory: the same bits whichever block adds them), writes them
// (with the residual), and a second barrier keeps every block's shared memory alive until the others have read it.
// Session 31's K splits (int4-v2-h2k) merged each tile through global memory with a fence, a counter and a barrier per
// tile and lost (16.5 µs cold against 11.0, docs/gpu.md *Two kernels that lost on the GPU*): here there is no global
// synchronisation and one exchange per block. Plain (both dtypes), with the residual, and SiLU·mul + residual (the
// decode step's down projection variants; bf16). Measured (H100, runs 83-84): right (bit-identical second launches),
// but at a 7B's down projection 14.6 µs cold against -shared's 11.1 and int4-mma's 11.8, and in the step 20.3 µs per
// layer against 11.9 (int4 batch 1 442 against 502 tokens/s); at a 13B's (5,120 x 13,824) the fastest cold (20.03 µs
// against int4-v2 20.71, int4-mma 21.38). Opt-in (LOWBIT_INT4_CLUSTER=1), not offered to the selection by default.

// This block's rank in its cluster, the cluster barrier (release/acquire: the shared memory written before it is
// visible to the cluster's blocks after it) and a float of block `rank`'s shared memory at this block's address `p`.
__device__ __forceinline__ int cluster_rank() {
#if defined(LOWBIT_EMULATED)
  return emul_cluster_rank();
#else
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return (int)r;
#endif
}

__device__ __forceinline__ void cluster_sync() {
#if defined(LOWBIT_EMULATED)
  emul_cluster_sync();
#else
  // arrive has release and wait acquire semantics by default (PTX 7.8; the explicit qualifiers need PTX 8.0).
  asm volatile("barrier.cluster.arrive.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
#endif
}

__device__ __forceinline__ float cluster_load(const float* p, int rank) {
#if defined(LOWBIT_EMULATED)
  return emul_cluster_load(p, rank);
#else
  const uint32_t local = (uint32_t)__cvta_generic_to_shared(p);
  uint32_t remote;
  float v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
  return v;
#endif
}

// int4-v2-h2c's shared memory (dynamic, so the CPU emulation can give each block of a cluster its own).
struct ClusterShared {
  float red[2][Geo<15>::kWarps][Tile<15, 1, 1>::R];
  float norm_partial[Geo<15>::kWarps][1];
  float part[kClusterMaxTiles][Tile<15, 1, 1>::R];
};

template <typename T, int PRO, bool RES>
__global__ void __launch_bounds__(Geo<15>::kThreads, 4) int4_gemv_cluster_kernel(
    const T* __restrict__ x, int64_t x_stride, const uint8_t* __restrict__ packed,
    const unsigned short* __restrict__ scales, const unsigned short* __restrict__ zeros, T* __restrict__ out,
    int64_t out_stride, int n, int k, int group, Fusion fusion) {
  constexpr int G = 15;  // -h2s's layout and products
  constexpr int R = Tile<G, 1, 1>::R;
  constexpr int W = Geo<G>::kWarps;
  static_assert(PRO == kPlain || PRO == kSiluMul, "int4-v2-h2c: plain or SiLU·mul");
  LOWBIT_DYNAMIC_SHARED(smem_bytes);
  ClusterShared& sh = *reinterpret_cast<ClusterShared*>(smem_bytes);
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int splits = fusion.splits;
  const int split = cluster_rank();
  const int all = k / Geo<G>::kCodes;
  const int first = split * all / splits;
  const int chunks = (split + 1) * all / splits - first;
  const int groups = k / group;
  const int row_bytes = k / 2;
  const bool live[1] = {tid < chunks};
  const ChunkAt<1> at = chunk_at<1>(tid, Geo<G>::kThreads, Geo<G>::kCodes, k, group, first, chunks);
  // The cluster's tiles: row0, row0 + stride, ...; the same for each of its blocks (blockIdx.x / splits is the cluster).
  const int clusters = (int)gridDim.x / splits;
  const int stride = clusters * R;
  int row0 = (int)blockIdx.x / splits * R;

  ChunkOf<G> wv[R][1];
  unsigned short sv[R][1];
  unsigned short zv[R][1];
  LOWBIT_PDL_TRIGGER();
  if (row0 < n) load_tile<G, R, 1>(packed, scales, zeros, row0, n, row_bytes, groups, at, wv, sv, zv);
  LOWBIT_PDL_WAIT();

  float xv[1][1][Geo<G>::kCodes];
  ChunkSum xs[1][1];
  load_activations<T, G, 1, 1, PRO>(x + (int64_t)first * Geo<G>::kCodes, x_stride, 1, k, fusion, tid, lane, warp, live,
                                    sh.norm_partial, xv, xs);
  uint32_t xh[1][kHalfPairs];
  float xe[1];
  half2_activations<G, 1>(xv, xh, xe, xs);

  int buf = 0;
  int tiles = 0;
  float acc[R][1];
  for (; row0 < n; row0 += stride, tiles++) {
    tile_products_h2<G, 1, R>(wv, sv, zv, xh, xe, xs, acc);
    const int next = row0 + stride;
    if (next < n) load_tile<G, R, 1>(packed, scales, zeros, next, n, row_bytes, groups, at, wv, sv, zv);
    // The block's R sums over its slice of K, reduced as tile_reduce does, into part[tile].
    float v[R];
#pragma unroll
    for (int i = 0; i < R; i++) v[i] = acc[i][0];
    const float sum = warp_sum_many<R>(v, lane);
    if (lane % (32 / R) == 0) sh.red[buf][warp][lane / (32 / R)] = sum;
    __syncthreads();
    if (tid < R) {
      float t = 0.f;
#pragma unroll
      for (int w = 0; w < W; w++) t += sh.red[buf][w][tid];
      sh.part[tiles][tid] = t;
    }
    buf ^= 1;
  }
  cluster_sync();
  // Row i of the cluster's tiles * R (tile i / R) goes to block i % splits, which adds the splits' sums in split order.
  for (int i = split + splits * tid; i < tiles * R; i += splits * Geo<G>::kThreads) {
    const int tile = i / R;
    const int row = ((int)blockIdx.x / splits + tile * clusters) * R + i % R;
    float t = 0.f;
    for (int s = 0; s < splits; s++) t += cluster_load(&sh.part[tile][i % R], s);
    if (row < n) store_output<T, RES>(t, out, out_stride, static_cast<const T*>(fusion.residual), fusion.res_stride, 0, row);
  }
  cluster_sync();
}

#if !defined(LOWBIT_EMULATED)
// The launch attribute of a one-dimensional cluster of `splits` blocks.
inline cudaLaunchAttribute cluster_attribute(int splits) {
  cudaLaunchAttribute a = {};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = (unsigned)splits;
  a.val.clusterDim.y = 1;
  a.val.clusterDim.z = 1;
  return a;
}
#endif

// How many clusters of `splits` blocks of int4-v2-h2c fit on the device at once (0 when the query fails).
template <auto Kernel>
int resident_clusters(int splits) {
#if defined(LOWBIT_EMULATED)
  return g_sms / splits > 0 ? g_sms / splits : 1;
#else
  static int cached[kClusterMaxSplits + 1] = {};
  if (cached[splits] == 0) {
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3((unsigned)(splits * 64));
    config.blockDim = dim3((unsigned)Geo<15>::kThreads);
    config.dynamicSmemBytes = sizeof(ClusterShared);
    cudaLaunchAttribute attribute[1] = {cluster_attribute(splits)};
    config.attrs = attribute;
    config.numAttrs = 1;
    int v = 0;
    if (cudaOccupancyMaxActiveClusters(&v, Kernel, &config) != cudaSuccess || v < 1) {
      cudaGetLastError();
      v = -1;
    }
    cached[splits] = v;
  }
  return cached[splits] > 0 ? cached[splits] : 0;
#endif
}

// int4-v2-h2c's launch: as many clusters as fit at once (at most one per tile, at least enough for kClusterMaxTiles
// tiles per block), with programmatic stream serialization like launch_pdl (LOWBIT_PDL=0 or a refusal: without it).
template <typename T, int PRO, bool RES>
int launch_cluster(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os, int n,
                   int k, int group, const Fusion& f, cudaStream_t st) {
  constexpr int R = Tile<15, 1, 1>::R;
  const int splits = cluster_splits(k);
  if (splits == 0) return -3;
  constexpr auto kernel = int4_gemv_cluster_kernel<T, PRO, RES>;
  const int64_t tiles = ((int64_t)n + R - 1) / R;
  if (tiles == 0) return 0;
  int64_t clusters = resident_clusters<kernel>(splits);
  if (clusters == 0) return -3;
  if (clusters > tiles) clusters = tiles;
  const int64_t needed = (tiles + kClusterMaxTiles - 1) / kClusterMaxTiles;
  if (clusters < needed) clusters = needed;
  const int blocks = (int)(clusters * splits);
  Fusion c = f;
  c.splits = splits;
  const T* xt = static_cast<const T*>(x);
  const uint8_t* pt = static_cast<const uint8_t*>(p);
  const unsigned short* st_ = static_cast<const unsigned short*>(s);
  const unsigned short* zt = static_cast<const unsigned short*>(z);
  T* ot = static_cast<T*>(out);
#if defined(LOWBIT_EMULATED)
  emul_launch_cluster(blocks, Geo<15>::kThreads, splits, [&] { kernel(xt, xs, pt, st_, zt, ot, os, n, k, group, c); });
  return 0;
#else
  static bool pdl = pdl_setting();
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3((unsigned)blocks);
  config.blockDim = dim3((unsigned)Geo<15>::kThreads);
  config.dynamicSmemBytes = sizeof(ClusterShared);
  config.stream = st;
  cudaLaunchAttribute attribute[2] = {cluster_attribute(splits), {}};
  attribute[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[1].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = pdl ? 2 : 1;
  cudaError_t e = cudaLaunchKernelEx(&config, kernel, xt, xs, pt, st_, zt, ot, os, n, k, group, c);
  if (e != cudaSuccess && pdl) {
    cudaGetLastError();
    pdl = false;
    config.numAttrs = 1;
    e = cudaLaunchKernelEx(&config, kernel, xt, xs, pt, st_, zt, ot, os, n, k, group, c);
  }
  if (e != cudaSuccess) cudaGetLastError();
  return (int)e;
#endif
}

template <typename T>
int launch_cluster_variant(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os,
                           int batch, int n, int k, int group, int prologue, bool residual, const Fusion& f,
                           cudaStream_t st) {
  if (batch != 1) return -3;
  if (prologue == kPlain && !residual) return launch_cluster<T, kPlain, false>(x, xs, p, s, z, out, os, n, k, group, f, st);
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    if (prologue == kPlain && residual) return launch_cluster<T, kPlain, true>(x, xs, p, s, z, out, os, n, k, group, f, st);
    if (prologue == kSiluMul && residual) return launch_cluster<T, kSiluMul, true>(x, xs, p, s, z, out, os, n, k, group, f, st);
  }
  return -3;
}

template <typename T>
int launch_v2_nb(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os,
                 int batch, int n, int k, int group, int geometry, int prologue, bool residual, const Fusion& f,
                 cudaStream_t st) {
  // The kernels address codes with 32-bit offsets (ChunkAt): 2 GiB of codes per matrix, a 128k x 16k projection at most.
  if ((int64_t)n * (k / 2) >= ((int64_t)1 << 31)) return -3;
  if (geometry == kClusterGeometry) {
#ifdef LOWBIT_NO_WIDE
    return -3;
#else
    return launch_cluster_variant<T>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
#endif
  }
  if (geometry == 9 || geometry == 11) {
#ifdef LOWBIT_NO_WIDE
    return -3;
#else
    return geometry == 9 ? mma::launch_variant<T>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st)
                         : mma::launch_variant16<T>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
#endif
  }
  if (geometry != 7 && !supports(batch, k)) return -3;   // -shared checks its own (batch, K) below
  if (geometry == 3) {
#ifdef LOWBIT_NO_WIDE
    return -3;
#else
    if (k % 32 != 0) return -3;
    switch (batch) {
      case 1: return launch_v2_ch<T, 3, 1>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      case 2: return launch_v2_ch<T, 3, 2>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      default: return -3;
    }
#endif
  }
  if (half2_products(geometry)) {
#ifdef LOWBIT_NO_WIDE
    return -3;
#else
    if (batch != 1 || k % 32 != 0) return -3;
    switch (geometry) {
      case 13: return launch_v2_ch<T, 13, 1>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      case 15: return launch_v2_ch<T, 15, 1>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      default: return launch_v2_ch<T, 17, 1>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
    }
#endif
  }
  if (geometry == 5) {
#ifdef LOWBIT_NO_WIDE
    return -3;
#else
    return batch == 1 ? launch_v2_ch<T, 5, 1>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st) : -3;
#endif
  }
  if (geometry == 7) {
#ifdef LOWBIT_NO_WIDE
    return -3;
#else
    if (group % 64 != 0 || k % 64 != 0 || !built_for(7, batch, k)) return -3;
    switch (chunks_per_thread(k) * 4 + batch) {
      case 1 * 4 + 1: return launch_shared_variant<T, 1, 1>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      case 1 * 4 + 2: return launch_shared_variant<T, 2, 1>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      case 2 * 4 + 1: return launch_shared_variant<T, 1, 2>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      case 3 * 4 + 1: return launch_shared_variant<T, 1, 3>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      case 4 * 4 + 1: return launch_shared_variant<T, 1, 4>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      case 5 * 4 + 1: return launch_shared_variant<T, 1, 5>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      case 6 * 4 + 1: return launch_shared_variant<T, 1, 6>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      case 7 * 4 + 1: return launch_shared_variant<T, 1, 7>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      case 8 * 4 + 1: return launch_shared_variant<T, 1, 8>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
      default: return -3;
    }
#endif
  }
  switch (batch) {
    case 1: return launch_v2_ch<T, 1, 1>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
    case 2: return launch_v2_ch<T, 1, 2>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
    default: return launch_v2_ch<T, 1, 4>(x, xs, p, s, z, out, os, batch, n, k, group, prologue, residual, f, st);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// rope_kv: the decode step's RoPE and KV-cache write in one kernel (it replaced the RoPE kernel and two index_copy per
// layer). Block (b, h) over the fused q/k/v row b [(H + 2 KVH) * D] at qkv_stride: query heads go rotated to q_out
// [B, H * D], key heads rotated and value heads as they are to the cache rows [slot b, position p] of keys/values
// [slots, max_len, KVH, D], p = clamp(positions[b], 0, max_len - 1). The rotation is rope_kernel's:
// T(T(x * cos) + T(rot * sin)), cos/sin [B, D].
template <typename T>
__global__ void rope_kv_kernel(const T* __restrict__ qkv, int64_t qkv_stride, const T* __restrict__ cos,
                               const T* __restrict__ sin, const int64_t* __restrict__ positions, T* __restrict__ q_out,
                               T* __restrict__ keys, T* __restrict__ values, int heads, int kv_heads, int d, int max_len) {
  LOWBIT_PDL_WAIT();
  LOWBIT_PDL_TRIGGER();
  const int all = heads + 2 * kv_heads;
  const int h = blockIdx.x % all;
  const int b = blockIdx.x / all;
  const T* row = qkv + b * qkv_stride + (int64_t)h * d;
  int64_t p = positions[b];
  p = p < 0 ? 0 : p > max_len - 1 ? max_len - 1 : p;
  const int64_t slot = ((int64_t)b * max_len + p) * kv_heads * d;
  const int half = d / 2;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    if (h >= heads + kv_heads) {
      values[slot + (int64_t)(h - heads - kv_heads) * d + i] = row[i];
      continue;
    }
    const float xv = Cvt2<T>::f(row[i]);
    const float rot = i < half ? -Cvt2<T>::f(row[i + half]) : Cvt2<T>::f(row[i - half]);
    const float c = Cvt2<T>::f(cos[(int64_t)b * d + i]);
    const float s = Cvt2<T>::f(sin[(int64_t)b * d + i]);
    const T o = Cvt2<T>::t(rnd2<T>(xv * c) + rnd2<T>(rot * s));
    if (h < heads) {
      q_out[(int64_t)b * heads * d + (int64_t)h * d + i] = o;
    } else {
      keys[slot + (int64_t)(h - heads) * d + i] = o;
    }
  }
}

template <typename T>
int launch_rope_kv(const void* qkv, int64_t qkv_stride, const void* cos, const void* sin, const int64_t* positions,
                   void* q_out, void* keys, void* values, int batch, int heads, int kv_heads, int d, int max_len,
                   cudaStream_t st) {
  const int blocks = batch * (heads + 2 * kv_heads);
  if (blocks == 0) return 0;
  const int threads = d < 128 ? 64 : 128;
  return launch_pdl(rope_kv_kernel<T>, blocks, threads, st, 0, static_cast<const T*>(qkv), qkv_stride, static_cast<const T*>(cos),
                    static_cast<const T*>(sin), positions, static_cast<T*>(q_out), static_cast<T*>(keys), static_cast<T*>(values),
                    heads, kv_heads, d, max_len);
}

// ---------------------------------------------------------------------------------------------------------------------
// gemv_v2: the dense bf16/fp16 GEMV for 1 to 8 rows, built like int4_gemv_v2. The first GEMV (lowbit_kernels.cu) gives
// each output row a warp that re-reads every activation row from L1 per weight row: at 8 rows that is 8 bytes of
// activation per byte of weight, and it fell to 653.6 tokens/s at batch 8 against cuBLAS's 1,447.1 (docs/gpu.md).
// Here a 512-thread block owns all of K: thread t keeps the activations of its 8-element chunks (c = t + 512 j) as
// floats in registers (NB * CH * 8 of them, at most 64) and loops over tiles of rows on a persistent grid, reading 16
// bytes per chunk per row (a warp reads 512 contiguous bytes), the next tile's loads issued before the reduction.
constexpr int kDenseThreads = 512;
constexpr int kDenseWarps = kDenseThreads / 32;

// Rows per tile: 512 threads leave 128 registers each, so the 64-float activation cases take 2 rows at a time (no spills).
template <int NB, int CH>
struct DenseTile {
  static constexpr int R = NB * CH >= 8 ? 2 : NB * CH >= 4 ? 4 : 8;
};

template <int R, int CH>
__device__ __forceinline__ void load_dense_tile(const uint4* __restrict__ wbase, int r0, int n, int chunks, int tid,
                                                const bool (&live)[CH], uint4 (&wv)[R][CH]) {
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int64_t row = (int64_t)min(r0 + r, n - 1);
#pragma unroll
    for (int j = 0; j < CH; j++) {
      if (live[j]) {
        wv[r][j] = __ldg(wbase + row * chunks + tid + j * kDenseThreads);
      } else {
        wv[r][j] = make_uint4(0u, 0u, 0u, 0u);
      }
    }
  }
}

template <typename T, int NB, int CH>
__global__ void __launch_bounds__(kDenseThreads) gemv_v2_kernel(const T* __restrict__ x, int64_t x_stride,
                                                                const T* __restrict__ w, T* __restrict__ out,
                                                                int64_t out_stride, int batch, int n, int k) {
  constexpr int R = DenseTile<NB, CH>::R;
  __shared__ float red[2][kDenseWarps][R * NB];
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int chunks = k / 8;
  const uint4* wbase = reinterpret_cast<const uint4*>(w);

  float xv[CH][NB][8];
  bool live[CH];
#pragma unroll
  for (int j = 0; j < CH; j++) {
    const int c = tid + j * kDenseThreads;
    live[j] = c < chunks;
#pragma unroll
    for (int b = 0; b < NB; b++) {
      if (live[j] && b < batch) {
        const uint4 u = *reinterpret_cast<const uint4*>(x + b * x_stride + (int64_t)c * 8);
        const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
        for (int i = 0; i < 8; i++) xv[j][b][i] = Cvt2<T>::f(t[i]);
      } else {
#pragma unroll
        for (int i = 0; i < 8; i++) xv[j][b][i] = 0.f;
      }
    }
  }

  uint4 wv[R][CH];
  const int stride = gridDim.x * R;
  int row0 = blockIdx.x * R;
  if (row0 < n) load_dense_tile<R, CH>(wbase, row0, n, chunks, tid, live, wv);
  int buf = 0;
  for (; row0 < n; row0 += stride) {
    float acc[R][NB];
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
      for (int b = 0; b < NB; b++) acc[r][b] = 0.f;
#pragma unroll
      for (int j = 0; j < CH; j++) {
        const T* wt = reinterpret_cast<const T*>(&wv[r][j]);
        float wf[8];
#pragma unroll
        for (int i = 0; i < 8; i++) wf[i] = Cvt2<T>::f(wt[i]);
#pragma unroll
        for (int b = 0; b < NB; b++) {
#pragma unroll
          for (int i = 0; i < 8; i++) acc[r][b] = fmaf(xv[j][b][i], wf[i], acc[r][b]);
        }
      }
    }
    const int next = row0 + stride;
    if (next < n) load_dense_tile<R, CH>(wbase, next, n, chunks, tid, live, wv);
    tile_reduce<T, kDenseWarps, NB, R, false>(acc, red, buf, row0, n, batch, out, out_stride, nullptr, 0, tid, lane, warp);
  }
}

template <typename T, int NB, int CH>
int launch_dense_v2(const void* x, int64_t xs, const void* w, void* out, int64_t os, int batch, int n, int k,
                    cudaStream_t st) {
  constexpr int R = DenseTile<NB, CH>::R;
  const int blocks = persistent_blocks<gemv_v2_kernel<T, NB, CH>>(kDenseThreads, ((int64_t)n + R - 1) / R);
  if (blocks == 0) return 0;
  gemv_v2_kernel<T, NB, CH><<<blocks, kDenseThreads, 0, st>>>(static_cast<const T*>(x), xs, static_cast<const T*>(w),
                                                                static_cast<T*>(out), os, batch, n, k);
  return (int)cudaGetLastError();
}

inline int dense_chunks_per_thread(int k) { return (k / 8 + kDenseThreads - 1) / kDenseThreads; }

// The activation rows the kernel holds for `batch` rows (1, 2, 4 or 8), or 0 when (batch, K) is not taken: at most 64
// activation floats per thread (rows * chunks per thread * 8) and K <= 16384 (fewer instantiations to compile).
inline int dense_rows_for(int batch, int k) {
  if (k % 8 != 0 || batch < 1 || batch > 8) return 0;
  const int nb = batch <= 1 ? 1 : batch <= 2 ? 2 : batch <= 4 ? 4 : 8;
  const int ch = dense_chunks_per_thread(k);
  return ch >= 1 && ch <= 4 && nb * ch <= 8 ? nb : 0;
}

template <typename T, int NB>
int launch_dense_v2_ch(const void* x, int64_t xs, const void* w, void* out, int64_t os, int batch, int n, int k,
                       cudaStream_t st) {
  switch (dense_chunks_per_thread(k)) {
    case 1: return launch_dense_v2<T, NB, 1>(x, xs, w, out, os, batch, n, k, st);
    case 2: if constexpr (NB <= 4) return launch_dense_v2<T, NB, 2>(x, xs, w, out, os, batch, n, k, st); else return -3;
    case 3: if constexpr (NB <= 2) return launch_dense_v2<T, NB, 3>(x, xs, w, out, os, batch, n, k, st); else return -3;
    case 4: if constexpr (NB <= 2) return launch_dense_v2<T, NB, 4>(x, xs, w, out, os, batch, n, k, st); else return -3;
    default: return -3;
  }
}

template <typename T>
int launch_dense_v2_nb(const void* x, int64_t xs, const void* w, void* out, int64_t os, int batch, int n, int k,
                       cudaStream_t st) {
  switch (dense_rows_for(batch, k)) {
    case 1: return launch_dense_v2_ch<T, 1>(x, xs, w, out, os, batch, n, k, st);
    case 2: return launch_dense_v2_ch<T, 2>(x, xs, w, out, os, batch, n, k, st);
    case 4: return launch_dense_v2_ch<T, 4>(x, xs, w, out, os, batch, n, k, st);
    case 8: return launch_dense_v2_ch<T, 8>(x, xs, w, out, os, batch, n, k, st);
    default: return -3;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// int4_dequantize: the dense 16-bit weight W[n, k] = (q - z) * s of our packing, for the projections of more rows than
// the GEMVs take (prefill, decode batches of 8 and more), then cuBLAS. The arithmetic is the reference's (fp32 q - z,
// times s, rounded once to the model dtype: QuantizedTensor.Dequantize, Int4Weight.Dequantize), so the result is
// bit-identical; the eager path's fp32 pipeline took ~890 us for a 12,288 x 4,096 weight on the H200 and held ~20 bytes
// of temporaries per weight, this reads half a byte and writes two per weight. A thread converts 8 codes (4 bytes) and
// writes 16 bytes; group % 8 == 0, so the 8 codes share one scale and zero.
template <typename T>
__global__ void __launch_bounds__(256) int4_dequantize_kernel(const uint32_t* __restrict__ packed,
                                                              const unsigned short* __restrict__ scales,
                                                              const unsigned short* __restrict__ zeros,
                                                              T* __restrict__ out, int64_t n, int k, int group) {
  const int64_t per_row = k / 8;
  const int64_t total = n * per_row;
  const int groups = k / group;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = i / per_row;
    const int col = (int)(i - row * per_row) * 8;
    const uint32_t bytes = __ldg(packed + i);
    const int64_t g = row * groups + col / group;
    const float s = __half2float(__ushort_as_half(__ldg(scales + g)));
    const float z = __half2float(__ushort_as_half(__ldg(zeros + g)));
    alignas(16) T values[8];
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const uint32_t b = (bytes >> (8 * j)) & 0xFFu;
      // __fsub_rn/__fmul_rn: never contracted into an FMA, as the reference rounds the difference first.
      values[2 * j] = Cvt2<T>::t(__fmul_rn(__fsub_rn((float)(b & 0xFu), z), s));
      values[2 * j + 1] = Cvt2<T>::t(__fmul_rn(__fsub_rn((float)(b >> 4), z), s));
    }
    reinterpret_cast<uint4*>(out)[i] = *reinterpret_cast<const uint4*>(values);
  }
}

template <typename T>
int launch_dequantize(const void* p, const void* s, const void* z, void* out, int64_t n, int k, int group,
                      cudaStream_t st) {
  const int64_t total = n * (k / 8);
  if (total == 0) return 0;
  const int sms = device_attribute(cudaDevAttrMultiProcessorCount, 132);
  const int64_t wanted = (total + 255) / 256;
  const int64_t cap = (int64_t)sms * 8;
  const int blocks = (int)(wanted < cap ? wanted : cap);
  int4_dequantize_kernel<T><<<blocks, 256, 0, st>>>(static_cast<const uint32_t*>(p), static_cast<const unsigned short*>(s),
                                                     static_cast<const unsigned short*>(z), static_cast<T*>(out), n, k, group);
  return (int)cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------------
// decode_attention: one query token per head against a slot's cached keys and values (the decode step), one launch.
// Row b attends positions 0..a-1, a = clamp(positions[b], 0, L - 1) + 1, of its slot in the cache [slots, max_len,
// kv_heads, D]; query head h uses kv head h / G (G = heads / kv_heads). Block (b, kv head, split), 128 threads: the
// split's range of positions, each warp four at a time (every 16th group of four) with an online softmax per query head
// of the group (a lane holds D / 32 elements of q, k, v and the accumulator), the 4 warps merged in shared memory. With one split the block
// writes the output. With more it writes (max, sum, acc[D]) in fp32 to the workspace, and the last block of (b, kv
// head) to arrive (a counter in `arrivals`: zero before the launch, reset by that block) merges the splits into the
// output: no second launch, so the kernel keeps the decode step's programmatic-dependent-launch chain (the two-pass
// version of session 11 and SDPA broke it). The decode step's default up to batch 16 (H100, runs 29, 32, 42 and 44); SDPA above.
// ROPE (the fused decode step; it replaces rope_kv there): q holds the fused q/k/v rows [B, (H + 2 KVH)·D]; the query
// heads are rotated here as rope_kv rotates them (rounded to T), and the row's new key (rotated) and value go to the
// cache at p = clamp(positions[b], 0, max_len - 1), written by split 0; every block attends position p from its own
// registers (another block's write may not have landed), so the result is rope_kv's followed by the attention.
// Positions and the cache's other rows come from earlier steps or from kernels launched without the programmatic
// attribute (torch's), complete before this kernel starts: they are read before griddepcontrol.wait (each warp's first
// four rows into registers, the block's later rows into L2); q/k/v (the kernel before) after it. The first round's
// loads do not wait for the row's position: each warp loads its first four rows below the length bucket, and the rows
// at or past the position are masked once it is known (their values zeroed: a stale or poisoned row never reaches the
// sums); the later rows' L2 prefetch and loads stop at the position.
constexpr int kAttnThreads = 128;
constexpr int kAttnWarps = kAttnThreads / 32;
constexpr int kAttnMaxGroup = 8;
constexpr int kAttnPositions = 4;   // positions per warp per round
constexpr int kAttnMaxSplits = 128; // the merge's per-split weights live in shared memory

#if defined(LOWBIT_EMULATED)
#define LOWBIT_PREFETCH_L2(p)
#else
#define LOWBIT_PREFETCH_L2(p) asm volatile("prefetch.global.L2 [%0];" ::"l"(p))
#endif

// A lane's D / 32 elements of a row (one 8- or 4-byte load: rows and the lane's offset are multiples of D / 32 elements,
// the host checks the bases' alignment).
template <typename T, int D>
__device__ __forceinline__ void load_row(const T* __restrict__ p, int lane, float (&v)[D / 32]) {
  constexpr int E = D / 32;
  static_assert(E == 2 || E == 4, "head dim 64 or 128");
  using Word = typename std::conditional<E == 4, uint2, uint32_t>::type;
  union {
    Word word;
    T elements[E];
  } row;
  row.word = *reinterpret_cast<const Word*>(p + lane * E);
#pragma unroll
  for (int i = 0; i < E; i++) v[i] = Cvt2<T>::f(row.elements[i]);
}

// A lane's D / 32 elements of a cache row as loaded: packed 16-bit values in one 8- or 4-byte word, made floats where
// they are used. Two sets of four rows held as floats took 64 registers (109 per thread with D = 128: four blocks of
// 128 threads per SM, and batch 8's 1,280 blocks ran in 2.4 waves); packed they take 16.
template <typename T, int D>
struct RowWord {
  static constexpr int E = D / 32;
  using Word = typename std::conditional<E == 4, uint2, uint32_t>::type;
  union Bits {
    Word word;
    T elements[E];
  };
  Word word;
  __device__ __forceinline__ void load(const T* __restrict__ p, int lane) { word = *reinterpret_cast<const Word*>(p + lane * E); }
  __device__ __forceinline__ void zero() { word = Word{}; }
  __device__ __forceinline__ void set(const T (&e)[E]) {
    Bits b;
#pragma unroll
    for (int i = 0; i < E; i++) b.elements[i] = e[i];
    word = b.word;
  }
  __device__ __forceinline__ void floats(float (&v)[E]) const {
    Bits b;
    b.word = word;
#pragma unroll
    for (int i = 0; i < E; i++) v[i] = Cvt2<T>::f(b.elements[i]);
  }
};

// One head's rotated row, this lane's elements lane·E + i (E = D / 32) of it: T(T(x·cos) + T(rot·sin)) with rot =
// −x[i + D/2] in the first half and x[i − D/2] in the second (rope_kv's arithmetic); the partner is lane ^ 16's element.
template <typename T, int D>
__device__ __forceinline__ void rope_row(const T* __restrict__ row, const T* __restrict__ cos, const T* __restrict__ sin,
                                         int lane, T (&o)[D / 32]) {
  constexpr int E = D / 32;
#pragma unroll
  for (int i = 0; i < E; i++) {
    const float x = Cvt2<T>::f(row[lane * E + i]);
    const float partner = __shfl_xor_sync(0xffffffffu, x, 16);
    const float rot = lane < 16 ? -partner : partner;
    o[i] = Cvt2<T>::t(rnd2<T>(x * Cvt2<T>::f(cos[lane * E + i])) + rnd2<T>(rot * Cvt2<T>::f(sin[lane * E + i])));
  }
}

// GMAX: the query heads per kv head the registers hold (1 for multi-head attention, else 8).
template <typename T, int D, bool ROPE, int GMAX>
__global__ void __launch_bounds__(kAttnThreads, GMAX == 1 ? 6 : 3) decode_attention_kernel(
    const T* __restrict__ q, int64_t q_stride, const T* __restrict__ cos, const T* __restrict__ sin, T* __restrict__ keys,
    T* __restrict__ values, const int64_t* __restrict__ positions, int kv_heads, int group, int max_len, int length,
    int splits, float scale, float* __restrict__ work, int* __restrict__ arrivals, T* __restrict__ out,
    int64_t out_stride) {
  constexpr int E = D / 32;
  constexpr int P = kAttnPositions;
  __shared__ float merge_m[kAttnWarps][GMAX];
  __shared__ float merge_l[kAttnWarps][GMAX];
  __shared__ float merge_acc[kAttnWarps][GMAX][D];
  __shared__ float split_weight[GMAX][kAttnMaxSplits];
  __shared__ float split_sum[GMAX];
  __shared__ int merges;
  const int split = blockIdx.x % splits;
  const int kvh = (blockIdx.x / splits) % kv_heads;
  const int b = blockIdx.x / (splits * kv_heads);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int heads = kv_heads * group;
  const int64_t pos = positions[b];
  const int attend = (int)(pos < 0 ? 0 : pos > length - 1 ? length - 1 : pos) + 1;
  const int64_t at = pos < 0 ? 0 : pos > max_len - 1 ? max_len - 1 : pos;
  const int chunk = (length + splits - 1) / splits;
  const int start = split * chunk;
  const int end = start + chunk < attend ? start + chunk : attend;
  // The split's rows below the length bucket: loaded without waiting for the position (`end` masks them later).
  const int stop = start + chunk < length ? start + chunk : length;
  const int64_t row_base = (int64_t)b * max_len * kv_heads + kvh;
  LOWBIT_PDL_TRIGGER();
  // The warp's first four rows into registers while the kernel before finishes (at batch 1 and context 256 that is all
  // of them): one memory round trip out of the kernel's chain. Row `at` may be read stale (this launch writes it); it is
  // replaced by the registers' copy below. The block's later rows below `end` go to L2 (128-byte lines): they wait for
  // the position (its load overlaps the first rows'), so a step reads the rows it attends, not the whole length bucket
  // (at 128 + 128 tokens the bucket is 256 rows and a row attends 129-256 of them; at batch 4-8 the attention is
  // bound by the cache's bytes, 21-30 µs per layer in run 39). With one query head per kv
  // head, two sets of row registers: the next round's loads go out before this round's scores (double buffering), so a
  // warp with many rounds (batch 32: two splits of 128 positions at context 256, eight rounds per warp) has two rounds'
  // rows in flight, not one.
  using Row = RowWord<T, D>;
  Row kv[P], vv[P], kv2[P], vv2[P];
  auto load_rows = [&](int j0, Row (&kr)[P], Row (&vr)[P]) {
#pragma unroll
    for (int p = 0; p < P; p++) {
      const int j = j0 + p;
      if (j < stop) {
        const int64_t element = (row_base + (int64_t)j * kv_heads) * D;
        kr[p].load(keys + element, lane);
        vr[p].load(values + element, lane);
      } else {
        kr[p].zero();
        vr[p].zero();
      }
    }
  };
  constexpr int kStep = P * kAttnWarps;
  int j0 = start + warp * P;
  load_rows(j0, kv, vv);
  {
    constexpr int lines = (D * (int)sizeof(T) + 127) / 128;
    const int later = start + kStep;
    const int count = end > later ? (end - later) * lines : 0;
    for (int i = threadIdx.x; i < count; i += kAttnThreads) {
      const int64_t element = (row_base + (int64_t)(later + i / lines) * kv_heads) * D + (i % lines) * (128 / (int)sizeof(T));
      LOWBIT_PREFETCH_L2(keys + element);
      LOWBIT_PREFETCH_L2(values + element);
    }
  }
  LOWBIT_PDL_WAIT();

  float qv[GMAX][E];
  float m[GMAX], l[GMAX], acc[GMAX][E];
  const T* qrow = q + b * q_stride;
#pragma unroll
  for (int g = 0; g < GMAX; g++) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < E; i++) {
      acc[g][i] = 0.f;
      qv[g][i] = 0.f;
    }
    if (g < group) {
      if constexpr (ROPE) {
        T o[E];
        rope_row<T, D>(qrow + (int64_t)(kvh * group + g) * D, cos + (int64_t)b * D, sin + (int64_t)b * D, lane, o);
#pragma unroll
        for (int i = 0; i < E; i++) qv[g][i] = Cvt2<T>::f(o[i]);
      } else {
        load_row<T, D>(qrow + (int64_t)(kvh * group + g) * D, lane, qv[g]);
      }
#pragma unroll
      for (int i = 0; i < E; i++) qv[g][i] *= scale;
    }
  }
  // ROPE: this step's key and value (as the cache will hold them), into the cache by split 0.
  Row kn, vn;
  kn.zero();
  vn.zero();
  if constexpr (ROPE) {
    T ko[E], vo[E];
    rope_row<T, D>(qrow + (int64_t)(heads + kvh) * D, cos + (int64_t)b * D, sin + (int64_t)b * D, lane, ko);
    const T* vrow = qrow + (int64_t)(heads + kv_heads + kvh) * D;
    const int64_t slot = (row_base + at * kv_heads) * D;
#pragma unroll
    for (int i = 0; i < E; i++) {
      vo[i] = vrow[lane * E + i];
      if (split == 0 && warp == 0) {
        keys[slot + lane * E + i] = ko[i];
        values[slot + lane * E + i] = vo[i];
      }
    }
    kn.set(ko);
    vn.set(vo);
  }
  // Warp w takes positions start + 4w .. start + 4w + 3, then every 16th group of four: the four rows' loads go out
  // together (one memory round trip per four positions, not per position), then four scores per head and one online
  // softmax update for them. Rounds alternate between the two register sets (unrolled by two: no dynamic indexing).
  auto round = [&](int j0, Row (&rows_k)[P], Row (&rows_v)[P]) {
    float kr[P][E], vr[P][E];
#pragma unroll
    for (int p = 0; p < P; p++) {
      if (ROPE && j0 + p == at) {
        rows_k[p] = kn;
        rows_v[p] = vn;
      }
      // Rows at or past `end` were loaded before the position was known: their weight is 0, their values too.
      if (j0 + p >= end) {
        rows_k[p].zero();
        rows_v[p].zero();
      }
      rows_k[p].floats(kr[p]);
      rows_v[p].floats(vr[p]);
    }
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
      if (g >= group) break;
      float score[P];
#pragma unroll
      for (int p = 0; p < P; p++) {
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < E; i++) dot = fmaf(qv[g][i], kr[p][i], dot);
        score[p] = dot;
      }
#pragma unroll
      for (int p = 0; p < P; p++) score[p] = j0 + p < end ? warp_sum2(score[p]) : -INFINITY;
      float next = m[g];
#pragma unroll
      for (int p = 0; p < P; p++) next = fmaxf(next, score[p]);
      const float correction = expf(m[g] - next);
      l[g] *= correction;
#pragma unroll
      for (int i = 0; i < E; i++) acc[g][i] *= correction;
#pragma unroll
      for (int p = 0; p < P; p++) {
        const float w = expf(score[p] - next);
        l[g] += w;
#pragma unroll
        for (int i = 0; i < E; i++) acc[g][i] = fmaf(w, vr[p][i], acc[g][i]);
      }
      m[g] = next;
    }
  };
  if constexpr (GMAX == 1) {
    while (j0 < end) {
      if (j0 + kStep < end) load_rows(j0 + kStep, kv2, vv2);
      round(j0, kv, vv);
      j0 += kStep;
      if (j0 >= end) break;
      if (j0 + kStep < end) load_rows(j0 + kStep, kv, vv);
      round(j0, kv2, vv2);
      j0 += kStep;
    }
  } else {
    // Eight query heads' state leaves no registers for a second set under the three-block bound (ptxas spilled).
    for (const int first = j0; j0 < end; j0 += kStep) {
      if (j0 != first) load_rows(j0, kv, vv);
      round(j0, kv, vv);
    }
  }
  // Merge the warps: each writes its state, then thread t of the block merges element t of every head of the group.
#pragma unroll
  for (int g = 0; g < GMAX; g++) {
    if (g >= group) break;
    if (lane == 0) {
      merge_m[warp][g] = m[g];
      merge_l[warp][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < E; i++) merge_acc[warp][g][lane * E + i] = acc[g][i];
  }
  __syncthreads();
  for (int g = 0; g < group; g++) {
    float top = -INFINITY;
    for (int w = 0; w < kAttnWarps; w++) top = fmaxf(top, merge_m[w][g]);
    float sum = 0.f;
    for (int w = 0; w < kAttnWarps; w++)
      if (merge_m[w][g] != -INFINITY) sum += merge_l[w][g] * expf(merge_m[w][g] - top);
    const int h = kvh * group + g;
    float* partial = work + (((int64_t)b * heads + h) * splits + split) * (D + 2);
    for (int e = threadIdx.x; e < D; e += kAttnThreads) {
      float a = 0.f;
      for (int w = 0; w < kAttnWarps; w++)
        if (merge_m[w][g] != -INFINITY) a += merge_acc[w][g][e] * expf(merge_m[w][g] - top);
      if (splits == 1) {
        out[b * out_stride + (int64_t)h * D + e] = Cvt2<T>::t(a / sum);
      } else {
        partial[2 + e] = a;
      }
    }
    if (splits > 1 && threadIdx.x == 0) {
      partial[0] = top;
      partial[1] = sum;
    }
  }
  if (splits == 1) return;
  // The last block of (b, kv head) to arrive merges every split (the threadfence-reduction pattern).
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) merges = atomicAdd(arrivals + b * kv_heads + kvh, 1) == splits - 1;
  __syncthreads();
  if (!merges) return;
  __threadfence();
  if (threadIdx.x == 0) arrivals[b * kv_heads + kvh] = 0;
  // Every split's (max, sum) of every head of the group at once (one round trip, not one per split), a warp per head:
  // the weights exp(m_s − top) go to shared memory, the sum Σ l_s·exp(m_s − top) is a warp sum; then every (head,
  // element) adds its splits' accumulators in split order, sixteen loads in flight per thread. A split without positions
  // (m_s = −∞) weighs 0 and is skipped, as before.
  for (int g = warp; g < group; g += kAttnWarps) {
    const float* base = work + ((int64_t)b * heads + kvh * group + g) * splits * (D + 2);
    constexpr int S = kAttnMaxSplits / 32;
    float ms[S], ls[S];
#pragma unroll
    for (int i = 0; i < S; i++) {
      const int s = lane + 32 * i;
      ms[i] = s < splits ? __ldcg(base + s * (D + 2)) : -INFINITY;
      ls[i] = s < splits ? __ldcg(base + s * (D + 2) + 1) : 0.f;
    }
    float top = -INFINITY;
#pragma unroll
    for (int i = 0; i < S; i++) top = fmaxf(top, ms[i]);
    top = warp_max(top);
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < S; i++) {
      const int s = lane + 32 * i;
      const float w = ms[i] != -INFINITY ? expf(ms[i] - top) : 0.f;
      if (s < splits) split_weight[g][s] = w;
      sum += ls[i] * w;
    }
    sum = warp_sum2(sum);
    if (lane == 0) split_sum[g] = sum;
  }
  __syncthreads();
  for (int t = threadIdx.x; t < group * D; t += kAttnThreads) {
    const int g = t / D;
    const int e = t % D;
    const float* base = work + ((int64_t)b * heads + kvh * group + g) * splits * (D + 2) + 2 + e;
    float a = 0.f;
#pragma unroll 16
    for (int s = 0; s < splits; s++) {
      const float value = __ldcg(base + s * (D + 2));
      a += split_weight[g][s] != 0.f ? value * split_weight[g][s] : 0.f;
    }
    out[b * out_stride + (int64_t)(kvh * group + g) * D + e] = Cvt2<T>::t(a / split_sum[g]);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// greedy_step: the decode step's greedy sampling in one kernel (it was seven torch kernels, ~20 µs per step, and broke
// the programmatic-dependent-launch chain after the head). Block b (1,024 threads) takes row b < batch of the logits
// [B, vocab] (row stride `stride`): the first index of its largest value, torch.argmax's choice (a NaN counts as the
// largest, the first NaN wins), into next[b] and into history[b·max_len + min(clamp(p, 0, max_len − 1) + 1,
// max_len − 1)] with p = positions[b]; then positions[b] = p + 1 (what argmax, index_copy_, copy_ and add_ did).
constexpr int kGreedyThreads = 1024;

struct ArgBest {
  float value;
  int index;
};

// a before b in torch.argmax's order: NaN first, then larger, then the lower index.
__device__ __forceinline__ bool arg_before(const ArgBest& a, const ArgBest& b) {
  const bool an = a.value != a.value, bn = b.value != b.value;
  if (an != bn) return an;
  if (!an && a.value != b.value) return a.value > b.value;
  return a.index < b.index;
}

template <typename T>
__global__ void __launch_bounds__(kGreedyThreads) greedy_step_kernel(const T* __restrict__ logits, int64_t stride, int vocab,
                                                                    int64_t* __restrict__ next, int64_t* __restrict__ history,
                                                                    int max_len, int64_t* __restrict__ positions) {
  __shared__ ArgBest warp_best[kGreedyThreads / 32];
  LOWBIT_PDL_TRIGGER();
  const int b = blockIdx.x;
  const int64_t p = positions[b];
  LOWBIT_PDL_WAIT();
  const T* row = logits + b * stride;
  ArgBest best{-INFINITY, vocab};
  // Sixteen loads in flight per thread before the comparisons (a 32,000-token row is two rounds).
  constexpr int U = 16;
  for (int first = threadIdx.x; first < vocab; first += kGreedyThreads * U) {
    float v[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int i = first + u * kGreedyThreads;
      v[u] = i < vocab ? Cvt2<T>::f(row[i]) : -INFINITY;
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const ArgBest c{v[u], first + u * kGreedyThreads};
      if (c.index < vocab && arg_before(c, best)) best = c;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const ArgBest other{__shfl_xor_sync(0xffffffffu, best.value, o), (int)__shfl_sync(0xffffffffu, (unsigned)best.index, (threadIdx.x & 31) ^ o)};
    if (arg_before(other, best)) best = other;
  }
  if ((threadIdx.x & 31) == 0) warp_best[threadIdx.x >> 5] = best;
  __syncthreads();
  if (threadIdx.x != 0) return;
  best = warp_best[0];
  for (int w = 1; w < kGreedyThreads / 32; w++)
    if (arg_before(warp_best[w], best)) best = warp_best[w];
  // A row of only −∞ keeps index 0 (torch's answer); `vocab` never escapes.
  const int64_t token = best.index < vocab ? best.index : 0;
  const int64_t clamped = p < 0 ? 0 : p > max_len - 1 ? max_len - 1 : p;
  const int64_t at = clamped + 1 < max_len - 1 ? clamped + 1 : max_len - 1;
  next[b] = token;
  history[(int64_t)b * max_len + at] = token;
  positions[b] = p + 1;
}

// ---------------------------------------------------------------------------------------------------------------------
// step_mark: the decode step's trace (LOWBIT_STEP_TRACE=1, a diagnostic): one thread reads the global timer once the
// kernel before it has completed (griddepcontrol.wait) and adds the time since the previous mark to trace[1 + index];
// trace[0] holds the previous mark's time (0: none yet, nothing added). It lets its dependents start first, so the
// next kernel's prologue still overlaps, but each mark adds a launch to the step.
__global__ void step_mark_kernel(unsigned long long* __restrict__ trace, int index) {
  LOWBIT_PDL_TRIGGER();
  LOWBIT_PDL_WAIT();
  if (threadIdx.x != 0) return;
#if defined(LOWBIT_EMULATED)
  const unsigned long long now = trace[0] + 1000;
#else
  unsigned long long now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
#endif
  if (trace[0] != 0) trace[1 + index] += now - trace[0];
  trace[0] = now;
}

// Splits per (row, kv head): enough blocks for eight per SM (the kernel is bound by memory latency, so it wants many
// warps in flight), at least 16 positions (one round of the four warps) per split, at most kAttnMaxSplits. `wanted` > 0
// (LOWBIT_ATTENTION_SPLITS, a diagnostic) replaces the first rule.
inline int attention_splits(int batch, int kv_heads, int length, int sms, int wanted = 0) {
  const int rows = batch * kv_heads;
  int splits = wanted > 0 ? wanted : (8 * sms + rows - 1) / rows;
  const int most = (length + 15) / 16;
  if (splits > most) splits = most;
  if (splits > kAttnMaxSplits) splits = kAttnMaxSplits;
  return splits < 1 ? 1 : splits;
}

template <typename T, int D>
int launch_attention(const void* q, int64_t qs, const void* cos, const void* sin, void* k, void* v, const int64_t* pos,
                     void* out, int64_t os, float* work, int* arrivals, int batch, int kv_heads, int group, int max_len,
                     int length, int splits, cudaStream_t st) {
  const float scale = 1.0f / sqrtf((float)D);
  const int blocks = batch * kv_heads * splits;
  if (blocks == 0) return 0;
  // The kernel for (fused RoPE or not, one query head per kv head or up to eight).
  auto pick = [&](auto kernel) {
    return launch_pdl(kernel, blocks, kAttnThreads, st, 0, static_cast<const T*>(q), qs, static_cast<const T*>(cos),
                      static_cast<const T*>(sin), static_cast<T*>(k), static_cast<T*>(v), pos, kv_heads, group, max_len, length,
                      splits, scale, work, arrivals, static_cast<T*>(out), os);
  };
  if (cos != nullptr) {
    return group == 1 ? pick(decode_attention_kernel<T, D, true, 1>) : pick(decode_attention_kernel<T, D, true, kAttnMaxGroup>);
  }
  return group == 1 ? pick(decode_attention_kernel<T, D, false, 1>) : pick(decode_attention_kernel<T, D, false, kAttnMaxGroup>);
}

}  // namespace

extern "C" {

// The (batch, K) the v2 int4 GEMV takes (the C# side asks before choosing it): 1 when it does.
int lowbit_v2_int4_supports(int batch, int k) { return supports(batch, k) ? 1 : 0; }
// Largest batch and K it takes at all (for messages).
int lowbit_v2_int4_max_batch() { return 4; }
int lowbit_v2_int4_max_k() { return 16384; }

// The (batch, K) the v2 dense GEMV takes: 1 when it does.
int lowbit_v2_gemv_supports(int batch, int k) { return dense_rows_for(batch, k) != 0 ? 1 : 0; }

// out[B, N] = x[B, K] @ W[N, K]^T. 0 on success, -2 unsupported dtype, -3 unsupported batch/K, else a cudaError_t.
int lowbit_launch_gemv_v2(int dtype, const void* x, int64_t x_stride, const void* w, void* out, int64_t out_stride,
                          int batch, int n, int k, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: return launch_dense_v2_nb<__nv_bfloat16>(x, x_stride, w, out, out_stride, batch, n, k, st);
    case 1: return launch_dense_v2_nb<__half>(x, x_stride, w, out, out_stride, batch, n, k, st);
    default: return -2;
  }
}

// 0 on success, -2 unsupported dtype, -3 unsupported batch/K, else a cudaError_t.
int lowbit_launch_int4_v2(int dtype, const void* x, int64_t x_stride, const void* packed, const void* scales,
                          const void* zeros, void* out, int64_t out_stride, int batch, int n, int k, int group,
                          void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if (group % 32 != 0 || k % group != 0) return -3;
  switch (dtype) {
    case 0: return launch_v2_nb<__nv_bfloat16>(x, x_stride, packed, scales, zeros, out, out_stride, batch, n, k, group, 1, kPlain, false, Fusion{}, st);
    case 1: return launch_v2_nb<__half>(x, x_stride, packed, scales, zeros, out, out_stride, batch, n, k, group, 1, kPlain, false, Fusion{}, st);
    default: return -2;
  }
}

// The int4 GEMV with a prologue (0 none, 1 RMSNorm with norm_w/eps, 2 SiLU·mul of x = [gate | up] at x_stride >= 2K,
// 3 RMSNorm and the paired gate/up rows' SiLU·mul epilogue: out [B, N/2]), the residual add (residual non-null: out = T(T(x W^T) + residual)) and `geometry` (1: int4-v2, 256 threads with 16
// codes per chunk; 3: int4-v2-wide, 128 threads with 32) as lowbit_v2_int4_fused_supports says. Same return codes as lowbit_launch_int4_v2.
int lowbit_v2_int4_fused_supports(int dtype, int batch, int k, int geometry, int prologue, int residual) {
  return fused_supports(dtype, batch, k, geometry, prologue, residual) ? 1 : 0;
}

// The fp32 workspace (elements) and int32 arrival counters (elements, zero before the launch, left zero) a launch of
// lowbit_launch_int4_v2_fused at (batch, N, K, geometry) needs: int4-mma16's K splits past K = 4,096; 0 and 0 otherwise.
int64_t lowbit_v2_int4_workspace(int batch, int n, int k, int geometry) {
  return geometry == 11 && mma::supports16(batch, k) ? mma::workspace16(n, k) : 0;
}
int64_t lowbit_v2_int4_arrivals(int batch, int n, int k, int geometry) {
  return lowbit_v2_int4_workspace(batch, n, k, geometry) > 0 ? ((int64_t)n + mma::kRows - 1) / mma::kRows : 0;
}

int lowbit_launch_int4_v2_fused(int dtype, const void* x, int64_t x_stride, const void* packed, const void* scales,
                                const void* zeros, void* out, int64_t out_stride, int batch, int n, int k, int group,
                                int geometry, int prologue, const void* norm_w, float eps, const void* residual,
                                int64_t res_stride, float* work, int* arrivals, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if (group % 32 != 0 || k % group != 0) return -3;
  if (!fused_supports(dtype, batch, k, geometry, prologue, residual != nullptr ? 1 : 0)) return -3;
  if ((prologue == kNorm || prologue == kNormSiluPairs) && norm_w == nullptr) return -3;
  if (lowbit_v2_int4_workspace(batch, n, k, geometry) > 0 && (work == nullptr || arrivals == nullptr)) return -3;
  const Fusion f{norm_w, eps, residual, res_stride, 0, work, arrivals};
  switch (dtype) {
    case 0: return launch_v2_nb<__nv_bfloat16>(x, x_stride, packed, scales, zeros, out, out_stride, batch, n, k, group, geometry, prologue, residual != nullptr, f, st);
    case 1: return launch_v2_nb<__half>(x, x_stride, packed, scales, zeros, out, out_stride, batch, n, k, group, geometry, prologue, residual != nullptr, f, st);
    default: return -2;
  }
}

// RoPE of the query and key heads of qkv [B, (H + 2 KVH) * D] with cos/sin [B, D], queries to q_out [B, H * D], keys
// and values to the cache [slots, max_len, KVH, D] at (b, clamp(positions[b])). 0, -2 dtype, -3 shape, else cudaError_t.
int lowbit_launch_rope_kv(int dtype, const void* qkv, int64_t qkv_stride, const void* cos, const void* sin,
                          const int64_t* positions, void* q_out, void* keys, void* values, int batch, int heads,
                          int kv_heads, int head_dim, int max_len, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if (head_dim < 2 || head_dim % 2 != 0 || heads < 1 || kv_heads < 1 || max_len < 1 || batch < 0) return -3;
  switch (dtype) {
    case 0: return launch_rope_kv<__nv_bfloat16>(qkv, qkv_stride, cos, sin, positions, q_out, keys, values, batch, heads, kv_heads, head_dim, max_len, st);
    case 1: return launch_rope_kv<__half>(qkv, qkv_stride, cos, sin, positions, q_out, keys, values, batch, heads, kv_heads, head_dim, max_len, st);
    default: return -2;
  }
}

// out[n, k] = (q - z) * s of packed[n, k/2] (our packing), scales/zeros [n, k/group] fp16, in bf16 (dtype 0) or fp16
// (1): 0 on success, -2 unsupported dtype, -3 unsupported shape (k % 8, group % 8), else a cudaError_t.
int lowbit_launch_int4_dequantize_v2(int dtype, const void* packed, const void* scales, const void* zeros, void* out,
                                     int64_t n, int k, int group, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if (k % 8 != 0 || group % 8 != 0 || k % group != 0) return -3;
  switch (dtype) {
    case 0: return launch_dequantize<__nv_bfloat16>(packed, scales, zeros, out, n, k, group, st);
    case 1: return launch_dequantize<__half>(packed, scales, zeros, out, n, k, group, st);
    default: return -2;
  }
}

// The decode step's greedy sampling (greedy_step above) for rows b < batch: logits [B, vocab] with row stride `stride`,
// next int64 [B], history int64 [B, max_len], positions int64 [B]. 0 on success, -2 unsupported dtype, -3 unsupported
// shape, else a cudaError_t.
int lowbit_launch_greedy_step(int dtype, const void* logits, int64_t stride, int vocab, int64_t* next, int64_t* history,
                              int max_len, int64_t* positions, int batch, void* stream) {
  if (batch < 1 || vocab < 1 || max_len < 1) return -3;
  auto st = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: return launch_pdl(greedy_step_kernel<__nv_bfloat16>, batch, kGreedyThreads, st, 0,
                              static_cast<const __nv_bfloat16*>(logits), stride, vocab, next, history, max_len, positions);
    case 1: return launch_pdl(greedy_step_kernel<__half>, batch, kGreedyThreads, st, 0, static_cast<const __half*>(logits),
                              stride, vocab, next, history, max_len, positions);
    default: return -2;
  }
}

// The splits lowbit_launch_decode_attention_v2 uses (the caller sizes the fp32 workspace: batch × heads × splits ×
// (D + 2) floats), or 0 when the shape is not taken (D 64 or 128, group 1-8, length ≥ 1).
int lowbit_v2_attention_splits(int batch, int kv_heads, int group, int head_dim, int length) {
  if ((head_dim != 64 && head_dim != 128) || group < 1 || group > kAttnMaxGroup || length < 1 || batch < 1 || kv_heads < 1) return 0;
  const int sms = device_attribute(cudaDevAttrMultiProcessorCount, 132);
  static const int wanted = env_int("LOWBIT_ATTENTION_SPLITS", 0);
  return attention_splits(batch, kv_heads, length, sms, wanted);
}

// The decode step's trace mark (step_mark_kernel): trace is at least index + 2 uint64. 0 on success, else a cudaError_t.
int lowbit_launch_step_mark(void* trace, int index, void* stream) {
  return launch_pdl(step_mark_kernel, 1, 32, static_cast<cudaStream_t>(stream), 0, static_cast<unsigned long long*>(trace), index);
}

// out[b, h·D..] = softmax(q_h · K_slot(b)[0..a_b)ᵀ / √D) · V_slot(b)[0..a_b) for rows b < batch (see decode_attention
// above). With cos/sin non-null ([B, D]) q is the fused q/k/v [B, (H + 2 KVH)·D]: RoPE of the queries and of the new key,
// which goes to the cache with the new value first (rope_kv's). `arrivals`: batch × kv_heads ints, zero (the kernel
// leaves them zero); `work`: batch × heads × splits × (D + 2) floats. 0 on success, -2 unsupported dtype, -3
// unsupported shape, else a cudaError_t.
int lowbit_launch_decode_attention_v2(int dtype, const void* q, int64_t q_stride, const void* cos, const void* sin,
                                      void* keys, void* values, const int64_t* positions, void* out, int64_t out_stride,
                                      float* work, int* arrivals, int batch, int kv_heads, int group, int head_dim,
                                      int max_len, int length, int splits, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if (splits < 1 || group < 1 || group > kAttnMaxGroup || length < 1 || length > max_len || (cos == nullptr) != (sin == nullptr)) return -3;
#define LOWBIT_ATTENTION(TYPE, DIM) launch_attention<TYPE, DIM>(q, q_stride, cos, sin, keys, values, positions, out, out_stride, work, arrivals, batch, kv_heads, group, max_len, length, splits, st)
  if (dtype == 0 && head_dim == 128) return LOWBIT_ATTENTION(__nv_bfloat16, 128);
  if (dtype == 0 && head_dim == 64) return LOWBIT_ATTENTION(__nv_bfloat16, 64);
  if (dtype == 1 && head_dim == 128) return LOWBIT_ATTENTION(__half, 128);
  if (dtype == 1 && head_dim == 64) return LOWBIT_ATTENTION(__half, 64);
#undef LOWBIT_ATTENTION
  return dtype == 0 || dtype == 1 ? -3 : -2;
}

}  // extern "C"
