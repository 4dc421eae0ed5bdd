// Lowbit decode kernels (CUDA C++, no libtorch headers): fused RMSNorm (+ residual add), RoPE, SiLU·mul, a bf16/fp16
// GEMV and the int4 dequantize-GEMV over our `lowbit` packing. Launched by lowbit_native.cpp on torch's current stream.
// Every kernel reproduces the eager path's rounding points (each torch op rounds to the model dtype), so results
// differ from eager only by fp32 summation order.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace {

// dtype codes shared with lowbit_native.cpp: 0 bf16, 1 fp16, 2 fp32
template <typename T> struct Cvt;
template <> struct Cvt<__nv_bfloat16> {
  static __device__ __forceinline__ float f(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 t(float v) { return __float2bfloat16(v); }
};
template <> struct Cvt<__half> {
  static __device__ __forceinline__ float f(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half t(float v) { return __float2half(v); }
};
template <> struct Cvt<float> {
  static __device__ __forceinline__ float f(float v) { return v; }
  static __device__ __forceinline__ float t(float v) { return v; }
};
template <typename T> __device__ __forceinline__ float rnd(float v) { return Cvt<T>::f(Cvt<T>::t(v)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// out = w * T(h * rsqrt(mean(h^2) + eps)), h = T(x + residual) (or x); h written to resid_out when given.
template <typename T>
__global__ void rmsnorm_kernel(const T* __restrict__ x, const T* __restrict__ residual, const T* __restrict__ w,
                               T* __restrict__ resid_out, T* __restrict__ out, int n, float eps) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * n;
  const T* rr = residual ? residual + row * n : nullptr;
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float h = Cvt<T>::f(xr[i]);
    if (rr) h = rnd<T>(h + Cvt<T>::f(rr[i]));
    ss += h * h;
  }
  __shared__ float partial[32];
  ss = warp_sum(ss);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) partial[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    float v = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.f;
    v = warp_sum(v);
    if (lane == 0) partial[0] = v;
  }
  __syncthreads();
  const float inv = rsqrtf(partial[0] / (float)n + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float h = Cvt<T>::f(xr[i]);
    if (rr) h = rnd<T>(h + Cvt<T>::f(rr[i]));
    if (resid_out) resid_out[row * n + i] = Cvt<T>::t(h);
    const float normed = rnd<T>(h * inv);
    out[row * n + i] = Cvt<T>::t(Cvt<T>::f(w[i]) * normed);
  }
}

// HF rotate-half RoPE over rows of `heads` heads of width d: out = T(T(x*cos) + T(rot*sin)).
template <typename T>
__global__ void rope_kernel(const T* __restrict__ in, int64_t in_stride, const T* __restrict__ cos,
                            const T* __restrict__ sin, T* __restrict__ out, int64_t rows, int heads, int d) {
  const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t total = rows * heads * d;
  if (idx >= total) return;
  const int i = (int)(idx % d);
  const int64_t hd = idx / d;
  const int h = (int)(hd % heads);
  const int64_t r = hd / heads;
  const T* xr = in + r * in_stride + (int64_t)h * d;
  const int half = d / 2;
  const float x = Cvt<T>::f(xr[i]);
  const float rot = i < half ? -Cvt<T>::f(xr[i + half]) : Cvt<T>::f(xr[i - half]);
  const float c = Cvt<T>::f(cos[r * d + i]);
  const float s = Cvt<T>::f(sin[r * d + i]);
  out[idx] = Cvt<T>::t(rnd<T>(x * c) + rnd<T>(rot * s));
}

// out[r, j] = T(T(silu(g)) * u), g = in[r, j], u = in[r, inter + j].
template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ in, T* __restrict__ out, int64_t rows, int inter) {
  const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= rows * inter) return;
  const int64_t r = idx / inter;
  const int j = (int)(idx % inter);
  const float g = Cvt<T>::f(in[r * 2 * inter + j]);
  const float u = Cvt<T>::f(in[r * 2 * inter + inter + j]);
  const float s = rnd<T>(g / (1.f + expf(-g)));
  out[idx] = Cvt<T>::t(s * u);
}

// y[b, n] = sum_k x[b, k] * W[n, k]; one warp per output row, 16-byte loads (8 weights), fp32 accumulation.
template <typename T, int NB>
__global__ void gemv_kernel(const T* __restrict__ x, int64_t x_stride, const T* __restrict__ w, T* __restrict__ out,
                            int64_t out_stride, int batch, int n, int k) {
  const int row = (int)(((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= n) return;
  const uint4* wr = reinterpret_cast<const uint4*>(w + (int64_t)row * k);
  const int chunks = k / 8;
  float acc[NB];
#pragma unroll
  for (int b = 0; b < NB; b++) acc[b] = 0.f;
#pragma unroll 4
  for (int c = lane; c < chunks; c += 32) {
    const uint4 wv = __ldg(wr + c);
    const T* wt = reinterpret_cast<const T*>(&wv);
    float wf[8];
#pragma unroll
    for (int i = 0; i < 8; i++) wf[i] = Cvt<T>::f(wt[i]);
#pragma unroll
    for (int b = 0; b < NB; b++) {
      if (b < batch) {
        const uint4 xv = *reinterpret_cast<const uint4*>(x + b * x_stride + (int64_t)c * 8);
        const T* xt = reinterpret_cast<const T*>(&xv);
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) s += Cvt<T>::f(xt[i]) * wf[i];
        acc[b] += s;
      }
    }
  }
#pragma unroll
  for (int b = 0; b < NB; b++) {
    const float v = warp_sum(acc[b]);
    if (lane == 0 && b < batch) out[b * out_stride + row] = Cvt<T>::t(v);
  }
}

// int4 dequantize-GEMV: W[n, k] = (q[n, k] - z[n, g]) * s[n, g], g = k / group. packed[n, k/2]: byte j holds code 2j in
// its low nibble and 2j+1 in its high nibble (BitPacking.PackBits, LSB first). One warp per two output rows (the
// activations are converted once for both); a lane reads 16 bytes of each row (32 codes, inside one group since
// group % 32 == 0) and computes s * (sum x*q - z * sum x) per batch row. Codes become floats without I2F (quarter rate
// on Hopper): as_float(0x4B000000 | q) - 2^23 is q exactly.
__device__ __forceinline__ float nib(uint32_t word, int m) {
  return __uint_as_float(0x4B000000u | ((word >> (4 * m)) & 0xFu)) - 8388608.f;
}

template <typename T, int NB>
__global__ void int4_gemv_kernel(const T* __restrict__ x, int64_t x_stride, const uint8_t* __restrict__ packed,
                                 const __half* __restrict__ scales, const __half* __restrict__ zeros,
                                 T* __restrict__ out, int64_t out_stride, int batch, int n, int k, int group) {
  const int row0 = (int)(((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5) * 2;
  const int lane = threadIdx.x & 31;
  if (row0 >= n) return;
  const bool two = row0 + 1 < n;
  const int row1 = two ? row0 + 1 : row0;
  const int groups = k / group;
  const uint4* w0 = reinterpret_cast<const uint4*>(packed + (int64_t)row0 * (k / 2));
  const uint4* w1 = reinterpret_cast<const uint4*>(packed + (int64_t)row1 * (k / 2));
  const __half* s0 = scales + (int64_t)row0 * groups;
  const __half* z0 = zeros + (int64_t)row0 * groups;
  const __half* s1 = scales + (int64_t)row1 * groups;
  const __half* z1 = zeros + (int64_t)row1 * groups;
  const int chunks = k / 32;
  float acc0[NB], acc1[NB];
#pragma unroll
  for (int b = 0; b < NB; b++) { acc0[b] = 0.f; acc1[b] = 0.f; }
#pragma unroll 2
  for (int c = lane; c < chunks; c += 32) {
    const uint4 a = __ldg(w0 + c);
    const uint4 bq = __ldg(w1 + c);
    const int g = (c * 32) / group;
    const float sa = __half2float(s0[g]), za = __half2float(z0[g]);
    const float sb = __half2float(s1[g]), zb = __half2float(z1[g]);
    const uint32_t wa[4] = {a.x, a.y, a.z, a.w};
    const uint32_t wb[4] = {bq.x, bq.y, bq.z, bq.w};
#pragma unroll
    for (int b = 0; b < NB; b++) {
      if (b < batch) {
        const uint4* xp = reinterpret_cast<const uint4*>(x + b * x_stride + (int64_t)c * 32);
        float da = 0.f, db = 0.f, sx = 0.f;
#pragma unroll
        for (int v = 0; v < 4; v++) {
          const uint4 xv = xp[v];
          const T* xt = reinterpret_cast<const T*>(&xv);
#pragma unroll
          for (int i = 0; i < 8; i++) {
            const float xf = Cvt<T>::f(xt[i]);
            da += xf * nib(wa[v], i);
            db += xf * nib(wb[v], i);
            sx += xf;
          }
        }
        acc0[b] += sa * (da - za * sx);
        acc1[b] += sb * (db - zb * sx);
      }
    }
  }
#pragma unroll
  for (int b = 0; b < NB; b++) {
    const float v0 = warp_sum(acc0[b]);
    const float v1 = warp_sum(acc1[b]);
    if (lane == 0 && b < batch) {
      out[b * out_stride + row0] = Cvt<T>::t(v0);
      if (two) out[b * out_stride + row0 + 1] = Cvt<T>::t(v1);
    }
  }
}

template <typename T>
void launch_gemv(const void* x, int64_t xs, const void* w, void* out, int64_t os, int batch, int n, int k, cudaStream_t st) {
  const int threads = 256;
  const int blocks = (int)(((int64_t)n * 32 + threads - 1) / threads);
  auto X = static_cast<const T*>(x);
  auto W = static_cast<const T*>(w);
  auto O = static_cast<T*>(out);
  if (batch <= 1) gemv_kernel<T, 1><<<blocks, threads, 0, st>>>(X, xs, W, O, os, batch, n, k);
  else if (batch <= 2) gemv_kernel<T, 2><<<blocks, threads, 0, st>>>(X, xs, W, O, os, batch, n, k);
  else if (batch <= 4) gemv_kernel<T, 4><<<blocks, threads, 0, st>>>(X, xs, W, O, os, batch, n, k);
  else if (batch <= 8) gemv_kernel<T, 8><<<blocks, threads, 0, st>>>(X, xs, W, O, os, batch, n, k);
  else gemv_kernel<T, 16><<<blocks, threads, 0, st>>>(X, xs, W, O, os, batch, n, k);
}

template <typename T>
void launch_int4(const void* x, int64_t xs, const void* p, const void* s, const void* z, void* out, int64_t os, int batch,
                 int n, int k, int group, cudaStream_t st) {
  const int threads = 256;
  const int blocks = (int)((((int64_t)n + 1) / 2 * 32 + threads - 1) / threads);
  auto X = static_cast<const T*>(x);
  auto P = static_cast<const uint8_t*>(p);
  auto S = static_cast<const __half*>(s);
  auto Z = static_cast<const __half*>(z);
  auto O = static_cast<T*>(out);
  if (batch <= 1) int4_gemv_kernel<T, 1><<<blocks, threads, 0, st>>>(X, xs, P, S, Z, O, os, batch, n, k, group);
  else if (batch <= 2) int4_gemv_kernel<T, 2><<<blocks, threads, 0, st>>>(X, xs, P, S, Z, O, os, batch, n, k, group);
  else if (batch <= 4) int4_gemv_kernel<T, 4><<<blocks, threads, 0, st>>>(X, xs, P, S, Z, O, os, batch, n, k, group);
  else if (batch <= 8) int4_gemv_kernel<T, 8><<<blocks, threads, 0, st>>>(X, xs, P, S, Z, O, os, batch, n, k, group);
  else int4_gemv_kernel<T, 16><<<blocks, threads, 0, st>>>(X, xs, P, S, Z, O, os, batch, n, k, group);
}

int blocks_for(int64_t total, int threads) { return (int)((total + threads - 1) / threads); }

}  // namespace

extern "C" {

int lowbit_launch_rmsnorm(int dtype, const void* x, const void* residual, const void* w, void* resid_out, void* out,
                          int64_t rows, int n, float eps, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const int threads = n >= 1024 ? 1024 : 256;
  const dim3 grid((unsigned)rows);
  switch (dtype) {
    case 0: rmsnorm_kernel<__nv_bfloat16><<<grid, threads, 0, st>>>((const __nv_bfloat16*)x, (const __nv_bfloat16*)residual, (const __nv_bfloat16*)w, (__nv_bfloat16*)resid_out, (__nv_bfloat16*)out, n, eps); break;
    case 1: rmsnorm_kernel<__half><<<grid, threads, 0, st>>>((const __half*)x, (const __half*)residual, (const __half*)w, (__half*)resid_out, (__half*)out, n, eps); break;
    case 2: rmsnorm_kernel<float><<<grid, threads, 0, st>>>((const float*)x, (const float*)residual, (const float*)w, (float*)resid_out, (float*)out, n, eps); break;
    default: return -2;
  }
  return (int)cudaGetLastError();
}

int lowbit_launch_rope(int dtype, const void* in, int64_t in_stride, const void* cos, const void* sin, void* out,
                       int64_t rows, int heads, int d, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const int threads = 256;
  const int blocks = blocks_for(rows * heads * d, threads);
  if (blocks == 0) return 0;
  switch (dtype) {
    case 0: rope_kernel<__nv_bfloat16><<<blocks, threads, 0, st>>>((const __nv_bfloat16*)in, in_stride, (const __nv_bfloat16*)cos, (const __nv_bfloat16*)sin, (__nv_bfloat16*)out, rows, heads, d); break;
    case 1: rope_kernel<__half><<<blocks, threads, 0, st>>>((const __half*)in, in_stride, (const __half*)cos, (const __half*)sin, (__half*)out, rows, heads, d); break;
    case 2: rope_kernel<float><<<blocks, threads, 0, st>>>((const float*)in, in_stride, (const float*)cos, (const float*)sin, (float*)out, rows, heads, d); break;
    default: return -2;
  }
  return (int)cudaGetLastError();
}

int lowbit_launch_silu_mul(int dtype, const void* in, void* out, int64_t rows, int inter, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const int threads = 256;
  const int blocks = blocks_for(rows * inter, threads);
  if (blocks == 0) return 0;
  switch (dtype) {
    case 0: silu_mul_kernel<__nv_bfloat16><<<blocks, threads, 0, st>>>((const __nv_bfloat16*)in, (__nv_bfloat16*)out, rows, inter); break;
    case 1: silu_mul_kernel<__half><<<blocks, threads, 0, st>>>((const __half*)in, (__half*)out, rows, inter); break;
    case 2: silu_mul_kernel<float><<<blocks, threads, 0, st>>>((const float*)in, (float*)out, rows, inter); break;
    default: return -2;
  }
  return (int)cudaGetLastError();
}

int lowbit_launch_gemv(int dtype, const void* x, int64_t x_stride, const void* w, void* out, int64_t out_stride,
                       int batch, int n, int k, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: launch_gemv<__nv_bfloat16>(x, x_stride, w, out, out_stride, batch, n, k, st); break;
    case 1: launch_gemv<__half>(x, x_stride, w, out, out_stride, batch, n, k, st); break;
    default: return -2;
  }
  return (int)cudaGetLastError();
}

int lowbit_launch_int4(int dtype, const void* x, int64_t x_stride, const void* packed, const void* scales,
                       const void* zeros, void* out, int64_t out_stride, int batch, int n, int k, int group,
                       void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: launch_int4<__nv_bfloat16>(x, x_stride, packed, scales, zeros, out, out_stride, batch, n, k, group, st); break;
    case 1: launch_int4<__half>(x, x_stride, packed, scales, zeros, out, out_stride, batch, n, k, group, st); break;
    default: return -2;
  }
  return (int)cudaGetLastError();
}

}  // extern "C"
