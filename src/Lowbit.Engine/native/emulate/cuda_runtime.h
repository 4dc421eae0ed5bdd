#pragma once
#define LOWBIT_EMULATED 1
// CPU emulation of the CUDA subset the kernels use: a block runs as 256 std::threads with barriers.
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>
#include <barrier>
#include <thread>
#include <vector>
#include <functional>
#include <memory>
#include <atomic>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__
// The kernels' dynamic shared memory: one buffer, blocks run one after another; the blocks of a cluster
// (emul_launch_cluster) run together, each with its own buffer (g_dynamic).
alignas(16) inline unsigned char g_dynamic_shared[256 * 1024];
alignas(16) inline unsigned char g_cluster_shared[8][16 * 1024];
inline thread_local unsigned char* g_dynamic = g_dynamic_shared;
#define LOWBIT_DYNAMIC_SHARED(name) unsigned char* name = g_dynamic
typedef int cudaError_t; enum { cudaSuccess = 0 }; typedef void* cudaStream_t;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount, cudaDevAttrMaxSharedMemoryPerBlockOptin };
struct uint2 { unsigned x, y; }; struct alignas(16) uint4 { unsigned x, y, z, w; };
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
struct Idx { unsigned x; };
inline thread_local Idx threadIdx, blockIdx;
inline Idx gridDim, blockDim;
inline cudaError_t cudaGetLastError() { return 0; }
inline const char* cudaGetErrorString(cudaError_t) { return ""; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return 0; }
inline int g_sms = 3;
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) { *v = a == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 227 * 1024 : g_sms; return 0; }
template <class F> cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* v, F, int, size_t) { *v = 1; return 0; }
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  unsigned char b[8]; memcpy(b, &x, 4); memcpy(b + 4, &y, 4); unsigned r = 0;
  for (int i = 0; i < 4; i++) r |= (unsigned)b[(s >> (4 * i)) & 7] << (8 * i);
  return r;
}
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// Each thread's block and warp barriers; g_slot: its block's place in a cluster running together (0 otherwise), which
// keeps the warp collectives' exchange slots of concurrent blocks apart.
inline thread_local std::barrier<>* g_block;
inline thread_local std::barrier<>* g_warp[32];
inline thread_local int g_slot = 0;
inline int emul_tid() { return g_slot * 1024 + (int)threadIdx.x; }
inline float g_shfl[8 * 1024];
inline float __shfl_xor_sync(unsigned, float v, int o) {
  int t = emul_tid(), w = (t & 1023) >> 5;
  g_shfl[t] = v; g_warp[w]->arrive_and_wait();
  float r = g_shfl[(t & ~31) | ((t & 31) ^ o)]; g_warp[w]->arrive_and_wait();
  return r;
}
inline unsigned g_shfl_u[8 * 1024];
inline unsigned __shfl_sync(unsigned, unsigned v, int source) {
  int t = emul_tid(), w = (t & 1023) >> 5;
  g_shfl_u[t] = v; g_warp[w]->arrive_and_wait();
  unsigned r = g_shfl_u[(t & ~31) | (source & 31)]; g_warp[w]->arrive_and_wait();
  return r;
}
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
inline float2 make_float2(float a, float b) { return {a, b}; }
// mma.sync.aligned.m16n8k16.row.col with fp32 accumulation over 16-bit A and B (bf16 or fp16), as a warp collective:
// each lane publishes its fragments, then computes its four outputs from everyone's (fragment layout: see mma_16816).
inline unsigned g_mma_a[8 * 1024][4];
inline unsigned g_mma_b[8 * 1024][2];
inline float emul_16bit(unsigned bits, bool bf16) {
  if (bf16) { unsigned u = bits << 16; float f; memcpy(&f, &u, 4); return f; }
  unsigned short h = (unsigned short)bits; _Float16 f; memcpy(&f, &h, 2); return (float)f;
}
inline void emul_mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1, bool bf16) {
  const int t = emul_tid(), w = (t & 1023) >> 5, base = t & ~31, lane = t & 31;
  for (int i = 0; i < 4; i++) g_mma_a[t][i] = a[i];
  g_mma_b[t][0] = b0; g_mma_b[t][1] = b1;
  g_warp[w]->arrive_and_wait();
  auto half_of = [](unsigned v, int e) { return e ? v >> 16 : v & 0xFFFFu; };
  auto A = [&](int row, int k) {
    const int src = (row & 7) * 4 + ((k & 7) >> 1);
    return emul_16bit(half_of(g_mma_a[base + src][(row >> 3) + 2 * (k >> 3)], k & 1), bf16);
  };
  auto B = [&](int k, int col) {
    const int src = col * 4 + ((k & 7) >> 1);
    return emul_16bit(half_of(g_mma_b[base + src][k >> 3], k & 1), bf16);
  };
  const int g = lane >> 2, c = lane & 3;
  float r[4];
  for (int i = 0; i < 4; i++) {
    const int row = g + 8 * (i >> 1), col = 2 * c + (i & 1);
    float s = d[i];
    for (int k = 0; k < 16; k++) s += A(row, k) * B(k, col);
    r[i] = s;
  }
  g_warp[w]->arrive_and_wait();
  for (int i = 0; i < 4; i++) d[i] = r[i];
}
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
template <class T> T __ldg(const T* p) { return *p; }
template <class T> T __ldcg(const T* p) { return *p; }
// Blocks run one after another: a fence has nothing to order, and the last block to arrive is the grid's last.
inline void __threadfence() {}
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline int min(int a, int b) { return a < b ? a : b; }
inline void __syncthreads() { g_block->arrive_and_wait(); }
// Blocks of `cluster` run together (cluster 1: one after another), each with its own barriers and, in a cluster, its
// own dynamic shared memory; the cluster's blocks share a barrier (emul_cluster_sync) and read each other's shared
// memory at the same offset (emul_cluster_load).
inline std::barrier<>* g_cluster;
inline void emul_launch_cluster(int blocks, int threads, int cluster, std::function<void()> body) {
  gridDim.x = blocks; blockDim.x = threads;
  for (int b0 = 0; b0 < blocks; b0 += cluster) {
    std::barrier<> all(cluster * threads); g_cluster = &all;
    std::vector<std::unique_ptr<std::barrier<>>> block_barriers, warps;
    for (int s = 0; s < cluster; s++) {
      block_barriers.emplace_back(new std::barrier<>(threads));
      for (int w = 0; w < threads / 32; w++) warps.emplace_back(new std::barrier<>(32));
    }
    std::vector<std::thread> ts;
    for (int s = 0; s < cluster; s++) {
      for (int t = 0; t < threads; t++) {
        ts.emplace_back([&, s, t] {
          threadIdx.x = t; blockIdx.x = b0 + s; g_slot = cluster > 1 ? s : 0;
          g_block = block_barriers[s].get();
          for (int w = 0; w < threads / 32; w++) g_warp[w] = warps[s * (threads / 32) + w].get();
          if (cluster > 1) g_dynamic = g_cluster_shared[s];
          body();
        });
      }
    }
    for (auto& t : ts) t.join();
  }
}
inline void emul_launch(int blocks, int threads, std::function<void()> body) { emul_launch_cluster(blocks, threads, 1, body); }
inline int emul_cluster_rank() { return g_slot; }
inline void emul_cluster_sync() { g_cluster->arrive_and_wait(); }
inline float emul_cluster_load(const float* p, int rank) {
  const size_t offset = (size_t)((const unsigned char*)p - g_cluster_shared[g_slot]);
  float v;
  memcpy(&v, g_cluster_shared[rank] + offset, sizeof v);
  return v;
}
