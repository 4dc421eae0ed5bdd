// liblowbit_kernels_v2.so: the C ABI over libtorch for the second-generation decode kernels (lowbit_kernels_v2.cu):
// the int4 GEMV v2, the dense GEMV v2, the int4 dequantize and the decode attention. lowbit_v2_gemv_supports comes straight from the .cu.
// Built by build.sh apart from liblowbit_native.so, so that a failure here only takes these kernels away; the engine
// loads it optionally from the folder of LOWBIT_NATIVE_LIB (NativeKernelsV2.cs). Tensors arrive as TorchSharp handles
// (pointers to heap at::Tensor, as in lowbit_native.cpp). 0 on success, -1 on failure (lowbit_v2_last_error says why).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <exception>
#include <string>

extern "C" {
int lowbit_v2_int4_supports(int, int);
int lowbit_v2_gemv_supports(int, int);
int lowbit_launch_gemv_v2(int, const void*, int64_t, const void*, void*, int64_t, int, int, int, void*);
int lowbit_v2_int4_max_batch();
int lowbit_v2_int4_max_k();
int lowbit_launch_int4_dequantize_v2(int, const void*, const void*, const void*, void*, int64_t, int, int, void*);
int lowbit_v2_attention_splits(int, int, int, int, int);
int lowbit_launch_decode_attention_v2(int, const void*, int64_t, const void*, const void*, void*, void*, const int64_t*,
                                      void*, int64_t, float*, int*, int, int, int, int, int, int, int, void*);
int lowbit_v2_int4_fused_supports(int, int, int, int, int, int);
int64_t lowbit_v2_int4_workspace(int, int, int, int);
int64_t lowbit_v2_int4_arrivals(int, int, int, int);
int lowbit_launch_int4_v2_fused(int, const void*, int64_t, const void*, const void*, const void*, void*, int64_t, int, int,
                                int, int, int, int, const void*, float, const void*, int64_t, float*, int*, void*);
int lowbit_launch_step_mark(void*, int, void*);
int lowbit_launch_greedy_step(int, const void*, int64_t, int, int64_t*, int64_t*, int, int64_t*, int, void*);
int lowbit_launch_rope_kv(int, const void*, int64_t, const void*, const void*, const int64_t*, void*, void*, void*, int,
                          int, int, int, int, void*);
}

namespace {

thread_local std::string last_error;

at::Tensor& T(void* handle) {
  TORCH_CHECK(handle != nullptr, "null tensor handle");
  return *static_cast<at::Tensor*>(handle);
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// The kernels' dtype code: 0 bfloat16, 1 float16; anything else fails naming `what`.
int dtype_code(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kBFloat16: return 0;
    case at::kHalf: return 1;
    default: TORCH_CHECK(false, what, ": unsupported dtype ", t.scalar_type(), " (bfloat16, float16)");
  }
  return -1;
}

template <typename F>
int guarded(F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown native error";
  }
  return -1;
}

// The int4 GEMV's checks and launch, for lowbit_v2_int4_linear (geometry 1, no prologue, no residual) and
// lowbit_v2_int4_linear_x: x [B, K] (or [B, 2K] for the SiLU·mul prologue), packed [N, K/2], scales/zeros [N, K/group]
// fp16, out [B, N], norm_w [K] (prologue 1), residual [B, N] or null; arrivals: int32 [≥ N / 16 rounded up], zero
// (left zero), on the weight's device, for the launches with K splits (int4-mma16 past K = 4,096), else may be null.
void int4_linear(void* x, void* packed, void* scales, void* zeros, int group, void* out, int geometry, int prologue,
                 void* norm_w, double eps, void* residual, void* arrivals) {
  auto& xt = T(x);
  auto& pt = T(packed);
  auto& st = T(scales);
  auto& zt = T(zeros);
  auto& ot = T(out);
  TORCH_CHECK(xt.is_cuda() && pt.is_cuda() && st.is_cuda() && zt.is_cuda() && ot.is_cuda(), "int4 v2: CUDA tensors only");
  // Launch on the tensor's device and that device's current stream (a pipeline shard may sit on any GPU).
  const c10::cuda::OptionalCUDAGuard device_guard(xt.device());
  TORCH_CHECK(pt.scalar_type() == at::kByte && pt.dim() == 2 && pt.is_contiguous() && aligned16(pt), "int4 v2: packed uint8 [N, K/2]");
  const int64_t n = pt.size(0), k = pt.size(1) * 2;
  TORCH_CHECK(group % 32 == 0 && k % group == 0, "int4 v2: group ", group, " must be a multiple of 32 dividing K=", k);
  TORCH_CHECK(n * (k / 2) < ((int64_t)1 << 31), "int4 v2: ", n, " x ", k, " codes take 2 GiB or more (32-bit offsets)");
  TORCH_CHECK(st.scalar_type() == at::kHalf && zt.scalar_type() == at::kHalf, "int4 v2: scales/zeros must be float16");
  TORCH_CHECK(st.is_contiguous() && zt.is_contiguous() && st.numel() == n * (k / group) && zt.numel() == st.numel(), "int4 v2: scales/zeros [N, K/group]");
  TORCH_CHECK(xt.dim() == 2 && ot.dim() == 2, "int4 v2: x and out must be 2-D");
  // The tensor-core geometries (9: 1-32 rows; 11: 9-32) take K % 256 == 0, -shared (7) its own K (up to 32,768 unless
  // LOWBIT_INT4_SHARED_LONG=0) and -h2c (19) its K splits (up to 32,768), all checked by lowbit_v2_int4_fused_supports
  // below; the others:
  const bool tensor_cores = geometry == 9 || geometry == 11;
  TORCH_CHECK(tensor_cores || geometry == 7 || geometry == 19 || (xt.size(0) >= 1 && xt.size(0) <= lowbit_v2_int4_max_batch() && k <= lowbit_v2_int4_max_k()
              && lowbit_v2_int4_supports((int)xt.size(0), (int)k)), "int4 v2: batch ", xt.size(0), " at K=", k,
              " not taken (1-2 rows up to K=", lowbit_v2_int4_max_k(), ", 3-4 rows up to K=4096)");
  TORCH_CHECK(!tensor_cores || group == 64 || group == 128, "int4 v2: the tensor-core GEMV takes groups of 64 or 128, not ", group);
  // int4-mma loads a round's scales and zeros as one 8-byte (g64) or 4-byte (g128) vector per row.
  TORCH_CHECK(!tensor_cores || (reinterpret_cast<uintptr_t>(st.data_ptr()) % 8 == 0 && reinterpret_cast<uintptr_t>(zt.data_ptr()) % 8 == 0),
              "int4 v2: the tensor-core GEMV needs 8-byte aligned scales and zeros");
  const int64_t width = prologue == 2 ? 2 * k : k;
  // Prologue 3 (the fused gate/up projection): gate rows 0..N/2, up rows N/2..N, out = SiLU(gate)·up [B, N/2].
  const int64_t outputs = prologue == 3 ? n / 2 : n;
  TORCH_CHECK(prologue != 3 || n % 2 == 0, "int4 v2: the paired gate/up epilogue needs an even N, not ", n);
  TORCH_CHECK(xt.size(1) == width && ot.size(0) == xt.size(0) && ot.size(1) == outputs, "int4 v2: shape mismatch (x [B, ", width, "], out [B, ", outputs, "])");
  TORCH_CHECK(xt.stride(1) == 1 && xt.stride(0) % 8 == 0 && aligned16(xt), "int4 v2: x rows must be 16-byte aligned");
  TORCH_CHECK(ot.stride(1) == 1, "int4 v2: out must have unit inner stride");
  TORCH_CHECK(xt.scalar_type() == ot.scalar_type(), "int4 v2: x and out dtypes differ");
  const int dtype = dtype_code(xt, "int4 v2");
  const void* norm = nullptr;
  if (prologue == 1 || prologue == 3) {
    auto& wt = T(norm_w);
    TORCH_CHECK(wt.is_cuda() && wt.dim() == 1 && wt.size(0) == k && wt.is_contiguous() && aligned16(wt) && wt.scalar_type() == xt.scalar_type(), "int4 v2: norm weight [K] contiguous, x's dtype");
    norm = wt.data_ptr();
  }
  const void* res = nullptr;
  int64_t res_stride = 0;
  if (residual != nullptr) {
    auto& rt = T(residual);
    TORCH_CHECK(rt.is_cuda() && rt.dim() == 2 && rt.size(0) == xt.size(0) && rt.size(1) == n && rt.stride(1) == 1 && rt.scalar_type() == xt.scalar_type(), "int4 v2: residual [B, N], unit inner stride, x's dtype");
    res = rt.data_ptr();
    res_stride = rt.stride(0);
  }
  TORCH_CHECK(lowbit_v2_int4_fused_supports(dtype, (int)xt.size(0), (int)k, geometry, prologue, res != nullptr ? 1 : 0),
              "int4 v2: variant not taken (batch ", xt.size(0), ", K=", k, ", geometry ", geometry, ", prologue ", prologue, ")");
  // int4-mma16's K splits: an fp32 workspace from the caching allocator (the capture's pool in a graph) and the caller's
  // arrival counters (one per 16 output rows; the last block of a tile resets its counter).
  const int64_t work_elements = lowbit_v2_int4_workspace((int)xt.size(0), (int)n, (int)k, geometry);
  at::Tensor work;
  int* counters = nullptr;
  if (work_elements > 0) {
    TORCH_CHECK(arrivals != nullptr, "int4 v2: geometry ", geometry, " at K=", k, " runs in K splits and needs arrival counters");
    auto& at_ = T(arrivals);
    TORCH_CHECK(at_.is_cuda() && at_.device() == pt.device() && at_.scalar_type() == at::kInt && at_.is_contiguous()
                && at_.numel() >= lowbit_v2_int4_arrivals((int)xt.size(0), (int)n, (int)k, geometry),
                "int4 v2: arrivals int32 [≥ ", lowbit_v2_int4_arrivals((int)xt.size(0), (int)n, (int)k, geometry), "] contiguous on the weight's device");
    work = at::empty({work_elements}, xt.options().dtype(at::kFloat));
    counters = at_.data_ptr<int>();
  }
  const int rc = lowbit_launch_int4_v2_fused(dtype, xt.data_ptr(), xt.stride(0), pt.data_ptr(), st.data_ptr(), zt.data_ptr(),
                                             ot.data_ptr(), ot.stride(0), (int)xt.size(0), (int)n, (int)k, group, geometry,
                                             prologue, norm, (float)eps, res, res_stride,
                                             work_elements > 0 ? work.data_ptr<float>() : nullptr, counters,
                                             static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream()));
  TORCH_CHECK(rc == 0, "int4 v2: launch failed: ",
              rc == -2 ? "unsupported dtype" : rc == -3 ? "unsupported batch, K or variant" : cudaGetErrorString((cudaError_t)rc));
}

}  // namespace

extern "C" {

int lowbit_v2_version() { return 1; }

const char* lowbit_v2_last_error() { return last_error.c_str(); }

// out[B, N] = x[B, K] @ dequant(packed[N, K/2], scales[N, G], zeros[N, G])^T, group = K / G, (B, K) as
// lowbit_v2_supports says (the int4 GEMV v2 without a prologue or residual, lowbit_v2_int4_linear_x below).
int lowbit_v2_int4_linear(void* x, void* packed, void* scales, void* zeros, int group, void* out) {
  return guarded([&] { int4_linear(x, packed, scales, zeros, group, out, 1, 0, nullptr, 0.0, nullptr, nullptr); });
}

int lowbit_v2_supports(int batch, int k) { return lowbit_v2_int4_supports(batch, k); }

// out[B, N] = x[B, K] @ W[N, K]^T, bf16/fp16, (B, K) as lowbit_v2_gemv_supports says (1-8 rows).
int lowbit_v2_gemv(void* x, void* weight, void* out) {
  return guarded([&] {
    auto& xt = T(x);
    auto& wt = T(weight);
    auto& ot = T(out);
    TORCH_CHECK(xt.is_cuda() && wt.is_cuda() && ot.is_cuda(), "gemv v2: CUDA tensors only");
    // Launch on the tensor's device and that device's current stream (a pipeline shard may sit on any GPU).
    const c10::cuda::OptionalCUDAGuard device_guard(xt.device());
    TORCH_CHECK(wt.dim() == 2 && wt.is_contiguous() && wt.size(1) % 8 == 0 && aligned16(wt), "gemv v2: weight [N, K], K % 8 == 0");
    const int64_t n = wt.size(0), k = wt.size(1);
    TORCH_CHECK(xt.dim() == 2 && ot.dim() == 2, "gemv v2: x and out must be 2-D");
    TORCH_CHECK(k <= (1 << 30) && lowbit_v2_gemv_supports((int)xt.size(0), (int)k), "gemv v2: batch ", xt.size(0), " at K=", k, " not taken");
    TORCH_CHECK(xt.size(1) == k && ot.size(0) == xt.size(0) && ot.size(1) == n, "gemv v2: shape mismatch");
    TORCH_CHECK(xt.stride(1) == 1 && xt.stride(0) % 8 == 0 && aligned16(xt), "gemv v2: x rows must be 16-byte aligned");
    TORCH_CHECK(ot.stride(1) == 1, "gemv v2: out must have unit inner stride");
    TORCH_CHECK(xt.scalar_type() == ot.scalar_type() && wt.scalar_type() == xt.scalar_type(), "gemv v2: x, weight and out dtypes differ");
    const int dtype = dtype_code(xt, "gemv v2");
    const int rc = lowbit_launch_gemv_v2(dtype, xt.data_ptr(), xt.stride(0), wt.data_ptr(), ot.data_ptr(), ot.stride(0),
                                         (int)xt.size(0), (int)n, (int)k,
                                         static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream()));
    TORCH_CHECK(rc == 0, "gemv v2: launch failed: ",
                rc == -2 ? "unsupported dtype" : rc == -3 ? "unsupported batch or K" : cudaGetErrorString((cudaError_t)rc));
  });
}

// out[N, K] (bf16/fp16, contiguous) = (q - z) * s of packed[N, K/2] with scales/zeros [N, K/group] (float16), computed
// as the reference does (fp32, one rounding): the dense weight for cuBLAS when more rows than the GEMVs take.
int lowbit_v2_int4_dequantize(void* packed, void* scales, void* zeros, int group, void* out) {
  return guarded([&] {
    auto& pt = T(packed);
    auto& st = T(scales);
    auto& zt = T(zeros);
    auto& ot = T(out);
    TORCH_CHECK(pt.is_cuda() && st.is_cuda() && zt.is_cuda() && ot.is_cuda(), "int4 dequantize: CUDA tensors only");
    const c10::cuda::OptionalCUDAGuard device_guard(pt.device());
    TORCH_CHECK(pt.scalar_type() == at::kByte && pt.dim() == 2 && pt.is_contiguous() && aligned16(pt), "int4 dequantize: packed uint8 [N, K/2]");
    const int64_t n = pt.size(0), k = pt.size(1) * 2;
    TORCH_CHECK(k % 8 == 0 && group % 8 == 0 && k % group == 0, "int4 dequantize: group ", group, " must be a multiple of 8 dividing K=", k);
    TORCH_CHECK(st.scalar_type() == at::kHalf && zt.scalar_type() == at::kHalf, "int4 dequantize: scales/zeros must be float16");
    TORCH_CHECK(st.is_contiguous() && zt.is_contiguous() && st.numel() == n * (k / group) && zt.numel() == st.numel(), "int4 dequantize: scales/zeros [N, K/group]");
    TORCH_CHECK(ot.dim() == 2 && ot.size(0) == n && ot.size(1) == k && ot.is_contiguous() && aligned16(ot), "int4 dequantize: out [N, K] contiguous");
    const int dtype = dtype_code(ot, "int4 dequantize");
    const int rc = lowbit_launch_int4_dequantize_v2(dtype, pt.data_ptr(), st.data_ptr(), zt.data_ptr(), ot.data_ptr(), n, (int)k, group,
                                                    static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream()));
    TORCH_CHECK(rc == 0, "int4 dequantize: launch failed: ",
                rc == -2 ? "unsupported dtype" : rc == -3 ? "unsupported shape" : cudaGetErrorString((cudaError_t)rc));
  });
}

// out[B, H·D] = attention of q[B, H·D] (unit inner stride) over rows 0..B-1 of the cache keys/values
// [slots, max_len, kv_heads, D] (contiguous), row b attending positions 0..min(positions[b], length - 1); 1 when the
// shape is taken (lowbit_v2_attention_supports), the fp32 workspace allocated here (from the capture's pool in a graph).
// With cos/sin ([B, D] contiguous) q is the fused q/k/v output [B, (H + 2 KVH)·D] instead: its query heads and the new
// key are rotated in the kernel, and the key and value go to the cache at clamp(positions[b]) first (what rope_kv
// does). arrivals: int32, at least B·KVH elements, zero (the kernel leaves them zero).
int lowbit_v2_attention_supports(int batch, int heads, int kv_heads, int head_dim, int length) {
  return kv_heads > 0 && heads % kv_heads == 0 && lowbit_v2_attention_splits(batch, kv_heads, heads / kv_heads, head_dim, length) > 0 ? 1 : 0;
}

int lowbit_v2_decode_attention_x(void* q, void* cos, void* sin, void* keys, void* values, void* positions, void* arrivals,
                                 int length, void* out) {
  return guarded([&] {
    auto& qt = T(q);
    auto& kt = T(keys);
    auto& vt = T(values);
    auto& pt = T(positions);
    auto& rt = T(arrivals);
    auto& ot = T(out);
    const bool rope = cos != nullptr;
    TORCH_CHECK(qt.is_cuda() && kt.is_cuda() && vt.is_cuda() && pt.is_cuda() && rt.is_cuda() && ot.is_cuda(), "decode attention: CUDA tensors only");
    const c10::cuda::OptionalCUDAGuard device_guard(qt.device());
    TORCH_CHECK(kt.dim() == 4 && kt.is_contiguous() && vt.sizes() == kt.sizes() && vt.is_contiguous(), "decode attention: keys/values [slots, max_len, kv_heads, D] contiguous");
    const int64_t max_len = kt.size(1), kv_heads = kt.size(2), d = kt.size(3);
    TORCH_CHECK(qt.dim() == 2 && ot.dim() == 2 && qt.stride(1) == 1 && ot.stride(1) == 1 && ot.size(0) == qt.size(0), "decode attention: q and out [B, ·], unit inner stride");
    TORCH_CHECK(ot.size(1) % d == 0, "decode attention: out width ", ot.size(1), " is not a multiple of D=", d);
    const int64_t batch = qt.size(0), heads = ot.size(1) / d;
    TORCH_CHECK(qt.size(1) == (rope ? heads + 2 * kv_heads : heads) * d, "decode attention: q width ", qt.size(1), " for ", heads, " heads",
                rope ? " + 2 × kv heads (the fused q/k/v)" : "", " of D=", d);
    TORCH_CHECK(batch <= kt.size(0) && length >= 1 && length <= max_len, "decode attention: batch ", batch, " of ", kt.size(0), " slots, length ", length, " of ", max_len);
    TORCH_CHECK(pt.scalar_type() == at::kLong && pt.is_contiguous() && pt.numel() >= batch, "decode attention: positions int64 [B]");
    TORCH_CHECK(rt.scalar_type() == at::kInt && rt.is_contiguous() && rt.numel() >= batch * kv_heads, "decode attention: arrivals int32 [≥ B·kv_heads]");
    TORCH_CHECK(qt.scalar_type() == kt.scalar_type() && vt.scalar_type() == kt.scalar_type() && ot.scalar_type() == kt.scalar_type(), "decode attention: dtypes differ");
    if (rope) {
      auto& ct = T(cos);
      auto& st = T(sin);
      TORCH_CHECK(ct.is_contiguous() && st.is_contiguous() && ct.numel() == batch * d && st.numel() == batch * d
                  && ct.scalar_type() == kt.scalar_type() && st.scalar_type() == kt.scalar_type(), "decode attention: cos/sin [B, D] contiguous, the cache's dtype");
    }
    TORCH_CHECK(heads % kv_heads == 0, "decode attention: ", heads, " heads over ", kv_heads, " kv heads");
    TORCH_CHECK(aligned16(qt) && aligned16(kt) && aligned16(vt) && qt.stride(0) % 8 == 0, "decode attention: q, keys and values 16-byte aligned, q's row stride a multiple of 8");
    const int group = (int)(heads / kv_heads);
    const int splits = lowbit_v2_attention_splits((int)batch, (int)kv_heads, group, (int)d, length);
    TORCH_CHECK(splits > 0, "decode attention: D=", d, " group ", group, " not taken (D 64 or 128, group 1-8)");
    const int dtype = dtype_code(kt, "decode attention");
    auto work = at::empty({splits > 1 ? batch * heads * splits * (d + 2) : 1}, kt.options().dtype(at::kFloat));
    const int rc = lowbit_launch_decode_attention_v2(dtype, qt.data_ptr(), qt.stride(0), rope ? T(cos).data_ptr() : nullptr,
                                                     rope ? T(sin).data_ptr() : nullptr, kt.data_ptr(), vt.data_ptr(), pt.data_ptr<int64_t>(),
                                                     ot.data_ptr(), ot.stride(0), work.data_ptr<float>(), rt.data_ptr<int>(), (int)batch,
                                                     (int)kv_heads, group, (int)d, (int)max_len, length, splits,
                                                     static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream()));
    TORCH_CHECK(rc == 0, "decode attention: launch failed: ",
                rc == -2 ? "unsupported dtype" : rc == -3 ? "unsupported shape" : cudaGetErrorString((cudaError_t)rc));
  });
}

// The decode step's trace (a diagnostic): adds the time since the previous mark to trace[1 + index] once the work
// queued before it has finished; trace int64 [≥ index + 2] on the current CUDA device, trace[0] the previous mark.
int lowbit_v2_step_mark(void* trace, int index) {
  return guarded([&] {
    auto& tt = T(trace);
    TORCH_CHECK(tt.is_cuda() && tt.scalar_type() == at::kLong && tt.is_contiguous() && index >= 0 && index + 2 <= tt.numel(),
                "step mark: trace int64 [", index + 2, "+] contiguous on CUDA");
    const c10::cuda::OptionalCUDAGuard device_guard(tt.device());
    const int rc = lowbit_launch_step_mark(tt.data_ptr(), index, static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream()));
    TORCH_CHECK(rc == 0, "step mark: launch failed: ", cudaGetErrorString((cudaError_t)rc));
  });
}

// 1 when the int4 GEMV takes this variant: `geometry` 1 (int4-v2) or 3 (int4-v2-wide), `prologue` 0 none, 1 RMSNorm, 2 SiLU·mul, `residual` 0/1.
int lowbit_v2_int4_x_supports(int dtype, int batch, int k, int geometry, int prologue, int residual) {
  return lowbit_v2_int4_fused_supports(dtype, batch, k, geometry, prologue, residual);
}

// out[B, N] = P(x) @ dequant(packed, scales, zeros)^T (+ residual[B, N]): P is nothing (prologue 0), the RMSNorm with
// norm_w [K] and eps (1), or SiLU·mul of x = [gate | up] [B, 2K] (2); residual may be null. The decode step's fusions.
// Prologue 3: the RMSNorm, and out [B, N/2] = SiLU(gate)·up of the weight's halves (the fused gate/up projection).
// arrivals: the int32 counters of int4-mma16's K splits ([≥ N / 16 rounded up], zero; null where none run).
int lowbit_v2_int4_linear_x(void* x, void* packed, void* scales, void* zeros, int group, void* out, int geometry,
                            int prologue, void* norm_w, double eps, void* residual, void* arrivals) {
  return guarded([&] { int4_linear(x, packed, scales, zeros, group, out, geometry, prologue, norm_w, eps, residual, arrivals); });
}

// The decode step's RoPE + cache write: qkv [B, (H + 2 KVH)·D] (unit inner stride), cos/sin [B, D] contiguous,
// positions int64 [B]; q_out [B, H·D] contiguous; keys/values [slots, max_len, KVH, D] contiguous.
int lowbit_v2_rope_kv(void* qkv, void* cos, void* sin, void* positions, void* q_out, void* keys, void* values) {
  return guarded([&] {
    auto& xt = T(qkv);
    auto& ct = T(cos);
    auto& st = T(sin);
    auto& pt = T(positions);
    auto& qt = T(q_out);
    auto& kt = T(keys);
    auto& vt = T(values);
    TORCH_CHECK(xt.is_cuda() && ct.is_cuda() && st.is_cuda() && pt.is_cuda() && qt.is_cuda() && kt.is_cuda() && vt.is_cuda(), "rope kv: CUDA tensors only");
    const c10::cuda::OptionalCUDAGuard device_guard(xt.device());
    TORCH_CHECK(kt.dim() == 4 && kt.is_contiguous() && vt.sizes() == kt.sizes() && vt.is_contiguous(), "rope kv: keys/values [slots, max_len, kv_heads, D] contiguous");
    const int64_t max_len = kt.size(1), kv_heads = kt.size(2), d = kt.size(3);
    TORCH_CHECK(xt.dim() == 2 && xt.stride(1) == 1 && xt.size(1) % d == 0, "rope kv: qkv [B, (H + 2 KVH)·D], unit inner stride");
    const int64_t batch = xt.size(0), heads = xt.size(1) / d - 2 * kv_heads;
    TORCH_CHECK(heads >= 1 && batch <= kt.size(0), "rope kv: ", xt.size(1) / d, " heads in qkv for ", kv_heads, " kv heads; batch ", batch, " of ", kt.size(0), " slots");
    TORCH_CHECK(qt.dim() == 2 && qt.is_contiguous() && qt.size(0) == batch && qt.size(1) == heads * d, "rope kv: q_out [B, H·D] contiguous");
    TORCH_CHECK(ct.is_contiguous() && st.is_contiguous() && ct.numel() == batch * d && st.numel() == batch * d, "rope kv: cos/sin [B, D] contiguous");
    TORCH_CHECK(pt.scalar_type() == at::kLong && pt.is_contiguous() && pt.numel() >= batch, "rope kv: positions int64 [B]");
    TORCH_CHECK(xt.scalar_type() == kt.scalar_type() && vt.scalar_type() == kt.scalar_type() && qt.scalar_type() == kt.scalar_type()
                && ct.scalar_type() == kt.scalar_type() && st.scalar_type() == kt.scalar_type(), "rope kv: dtypes differ");
    const int dtype = dtype_code(kt, "rope kv");
    const int rc = lowbit_launch_rope_kv(dtype, xt.data_ptr(), xt.stride(0), ct.data_ptr(), st.data_ptr(), pt.data_ptr<int64_t>(),
                                         qt.data_ptr(), kt.data_ptr(), vt.data_ptr(), (int)batch, (int)heads, (int)kv_heads,
                                         (int)d, (int)max_len, static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream()));
    TORCH_CHECK(rc == 0, "rope kv: launch failed: ",
                rc == -2 ? "unsupported dtype" : rc == -3 ? "unsupported shape" : cudaGetErrorString((cudaError_t)rc));
  });
}

// The decode step's greedy sampling: logits [B, vocab] (unit inner stride), next int64 [≥ B], history int64 [≥ B, max_len]
// contiguous, positions int64 [≥ B], all on one CUDA device. next[b] = argmax(logits[b]) (torch's choice), history[b,
// min(clamp(positions[b]) + 1, max_len − 1)] = next[b], positions[b] += 1.
int lowbit_v2_greedy_step(void* logits, void* next, void* history, void* positions) {
  return guarded([&] {
    auto& lt = T(logits);
    auto& nt = T(next);
    auto& ht = T(history);
    auto& pt = T(positions);
    TORCH_CHECK(lt.is_cuda() && nt.is_cuda() && ht.is_cuda() && pt.is_cuda() && nt.device() == lt.device() && ht.device() == lt.device()
                && pt.device() == lt.device(), "greedy step: CUDA tensors on one device");
    const c10::cuda::OptionalCUDAGuard device_guard(lt.device());
    TORCH_CHECK(lt.dim() == 2 && lt.stride(1) == 1 && lt.size(0) >= 1 && lt.size(1) >= 1 && lt.size(1) <= INT32_MAX, "greedy step: logits [B, vocab], unit inner stride");
    const int64_t batch = lt.size(0);
    TORCH_CHECK(nt.scalar_type() == at::kLong && nt.is_contiguous() && nt.numel() >= batch, "greedy step: next int64 [≥ B] contiguous");
    TORCH_CHECK(pt.scalar_type() == at::kLong && pt.is_contiguous() && pt.numel() >= batch, "greedy step: positions int64 [≥ B] contiguous");
    TORCH_CHECK(ht.scalar_type() == at::kLong && ht.dim() == 2 && ht.is_contiguous() && ht.size(0) >= batch && ht.size(1) >= 1
                && ht.size(1) <= INT32_MAX, "greedy step: history int64 [≥ B, max_len] contiguous");
    const int dtype = dtype_code(lt, "greedy step");
    const int rc = lowbit_launch_greedy_step(dtype, lt.data_ptr(), lt.stride(0), (int)lt.size(1), nt.data_ptr<int64_t>(),
                                             ht.data_ptr<int64_t>(), (int)ht.size(1), pt.data_ptr<int64_t>(), (int)batch,
                                             static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream()));
    TORCH_CHECK(rc == 0, "greedy step: launch failed: ",
                rc == -2 ? "unsupported dtype" : rc == -3 ? "unsupported shape" : cudaGetErrorString((cudaError_t)rc));
  });
}

}  // extern "C"
