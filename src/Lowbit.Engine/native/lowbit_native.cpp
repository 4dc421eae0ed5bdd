// liblowbit_native: a C ABI over libtorch for the engine's fast decode (P/Invoke from Lowbit.Engine/Decoding).
// Tensors arrive as TorchSharp handles: a TorchSharp Tensor.Handle is a pointer to a heap-allocated at::Tensor
// (LibTorchSharp's `Tensor` typedef), so `*static_cast<at::Tensor*>(handle)` is the tensor itself.
// Every function returns 0 on success and -1 on failure; lowbit_last_error() then says why (thread-local).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <exception>
#include <map>
#include <mutex>
#include <string>

extern "C" {
int lowbit_launch_rmsnorm(int, const void*, const void*, const void*, void*, void*, int64_t, int, float, void*);
int lowbit_launch_rope(int, const void*, int64_t, const void*, const void*, void*, int64_t, int, int, void*);
int lowbit_launch_silu_mul(int, const void*, void*, int64_t, int, void*);
int lowbit_launch_gemv(int, const void*, int64_t, const void*, void*, int64_t, int, int, int, void*);
int lowbit_launch_int4(int, const void*, int64_t, const void*, const void*, const void*, void*, int64_t, int, int, int,
                       int, void*);
}

namespace {

thread_local std::string last_error;

// One capture stream per device for every graph: the caching allocator reuses a freed block only for allocations on
// the stream it was used on, so graphs sharing a memory pool (lowbit_graph_capture_begin_pool) must also share the
// stream they are captured on. With a stream each from libtorch's pool (round-robin over 32), 28 decode graphs of a 7B
// int4 model held 2.1 GiB reserved for 0.22 GiB allocated on the H100 (docs/planner.md).
c10::cuda::CUDAStream capture_stream() {
  static std::mutex gate;
  static std::map<c10::DeviceIndex, c10::cuda::CUDAStream> streams;
  const auto device = c10::cuda::current_device();
  std::lock_guard<std::mutex> lock(gate);
  auto it = streams.find(device);
  if (it == streams.end()) it = streams.emplace(device, c10::cuda::getStreamFromPool(false, device)).first;
  return it->second;
}

struct Graph {
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream stream;
  c10::cuda::CUDAStream previous;
  bool switched = false;
  Graph() : stream(capture_stream()), previous(c10::cuda::getCurrentCUDAStream()) {}

  void enter() {
    // The capture stream starts after everything queued so far (weights, cache, static inputs written eagerly).
    C10_CUDA_CHECK(cudaDeviceSynchronize());
    previous = c10::cuda::getCurrentCUDAStream();
    c10::cuda::setCurrentCUDAStream(stream);
    switched = true;
  }

  void leave() {
    if (switched) {
      c10::cuda::setCurrentCUDAStream(previous);
      switched = false;
    }
  }
};

at::Tensor& T(void* handle) {
  TORCH_CHECK(handle != nullptr, "null tensor handle");
  return *static_cast<at::Tensor*>(handle);
}

int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16: return 0;
    case at::kHalf: return 1;
    case at::kFloat: return 2;
    default: TORCH_CHECK(false, "unsupported dtype ", t.scalar_type(), " (bfloat16, float16, float32)");
  }
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
}

void check_launch(int rc, const char* what) {
  TORCH_CHECK(rc == 0, what, ": launch failed: ", rc == -2 ? "unsupported dtype" : cudaGetErrorString((cudaError_t)rc));
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

void* stream_ptr() { return static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream()); }

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

void check_activations(const at::Tensor& xt, const at::Tensor& ot, int64_t k, int64_t n) {
  TORCH_CHECK(xt.dim() == 2 && ot.dim() == 2, "gemv: x and out must be 2-D");
  TORCH_CHECK(xt.size(0) <= 16 && xt.size(0) >= 1, "gemv: batch must be 1..16, got ", xt.size(0));
  TORCH_CHECK(xt.size(1) == k && ot.size(0) == xt.size(0) && ot.size(1) == n, "gemv: shape mismatch");
  TORCH_CHECK(xt.stride(1) == 1 && xt.stride(0) % 8 == 0 && aligned16(xt), "gemv: x rows must be 16-byte aligned");
  TORCH_CHECK(ot.stride(1) == 1, "gemv: out must have unit inner stride");
  TORCH_CHECK(xt.scalar_type() == ot.scalar_type(), "gemv: x and out dtypes differ");
}

}  // namespace

extern "C" {

int lowbit_native_version() { return 1; }

const char* lowbit_last_error() { return last_error.c_str(); }

int lowbit_graph_create(void** out) {
  return guarded([&] { *out = new Graph(); });
}

int lowbit_graph_destroy(void* g) {
  return guarded([&] {
    auto graph = static_cast<Graph*>(g);
    graph->leave();
    delete graph;
  });
}

// Runs what follows (until lowbit_graph_leave) on the graph's side stream: the warm-up before capture.
int lowbit_graph_enter(void* g) {
  return guarded([&] { static_cast<Graph*>(g)->enter(); });
}

int lowbit_graph_leave(void* g) {
  return guarded([&] {
    auto graph = static_cast<Graph*>(g);
    C10_CUDA_CHECK(cudaStreamSynchronize(graph->stream.stream()));
    graph->leave();
  });
}

// Starts capturing what this thread queues (on the graph's side stream), allocating from the memory pool (first,
// second) that earlier captures on this device use (lowbit_graph_pool of one of them), or from a new private pool when
// both are 0. Graphs that share a pool must never run concurrently and must leave nothing they allocated alive after
// their step (the decoder's steps write their results into buffers allocated outside the capture): each capture then
// reuses the blocks the others freed instead of every graph keeping its own (tens of MiB each, dozens of graphs:
// docs/planner.md).
int lowbit_graph_capture_begin_pool(void* g, uint64_t first, uint64_t second) {
  return guarded([&] {
    auto graph = static_cast<Graph*>(g);
    graph->enter();
    try {
      // Thread-local mode: .NET's finalizer thread may free tensors while this thread captures.
      graph->graph.capture_begin({first, second}, cudaStreamCaptureModeThreadLocal);
    } catch (...) {
      graph->leave();
      throw;
    }
  });
}

// The memory pool a captured graph allocated from (for lowbit_graph_capture_begin_pool).
int lowbit_graph_pool(void* g, uint64_t* first, uint64_t* second) {
  return guarded([&] {
    const auto id = static_cast<Graph*>(g)->graph.pool();
    *first = id.first;
    *second = id.second;
  });
}

int lowbit_graph_capture_end(void* g) {
  auto graph = static_cast<Graph*>(g);
  int rc = guarded([&] { graph->graph.capture_end(); });
  graph->leave();
  return rc;
}

// Makes CUDA device `index` current for this thread: graphs are created, captured and replayed on the current device
// (a pipeline shard's graph on its shard's GPU).
int lowbit_set_device(int index) {
  return guarded([&] { C10_CUDA_CHECK(cudaSetDevice(index)); });
}

int lowbit_graph_replay(void* g) {
  return guarded([&] { static_cast<Graph*>(g)->graph.replay(); });
}

// out = weight * norm(x (+ residual)); the sum is also written to resid_out when given. Rows of `n` contiguous values.
int lowbit_rmsnorm(void* x, void* residual, void* weight, double eps, void* resid_out, void* out) {
  return guarded([&] {
    auto& xt = T(x);
    auto& wt = T(weight);
    auto& ot = T(out);
    check_cuda(xt, "x");
    // Launch on the tensor's device and that device's current stream (a pipeline shard may sit on any GPU).
    const c10::cuda::OptionalCUDAGuard device_guard(xt.device());
    const int64_t n = xt.size(-1);
    TORCH_CHECK(xt.is_contiguous() && ot.is_contiguous() && wt.is_contiguous(), "rmsnorm: contiguous tensors only");
    TORCH_CHECK(wt.numel() == n && ot.numel() == xt.numel(), "rmsnorm: shape mismatch");
    TORCH_CHECK(wt.scalar_type() == xt.scalar_type() && ot.scalar_type() == xt.scalar_type(), "rmsnorm: dtypes differ");
    const void* r = nullptr;
    void* ro = nullptr;
    if (residual) {
      auto& rt = T(residual);
      TORCH_CHECK(rt.is_contiguous() && rt.numel() == xt.numel() && rt.scalar_type() == xt.scalar_type(), "rmsnorm: residual");
      r = rt.data_ptr();
    }
    if (resid_out) {
      auto& rot = T(resid_out);
      TORCH_CHECK(rot.is_contiguous() && rot.numel() == xt.numel() && rot.scalar_type() == xt.scalar_type(), "rmsnorm: resid_out");
      ro = rot.data_ptr();
    }
    check_launch(lowbit_launch_rmsnorm(dtype_code(xt), xt.data_ptr(), r, wt.data_ptr(), ro, ot.data_ptr(),
                                       xt.numel() / n, (int)n, (float)eps, stream_ptr()), "rmsnorm");
  });
}

// in: [rows, >= heads*d] with unit inner stride (a column slice of the fused QKV output); cos/sin [rows, d];
// out: contiguous [rows, heads*d].
int lowbit_rope(void* in, int heads, void* cos, void* sin, void* out) {
  return guarded([&] {
    auto& it = T(in);
    auto& ct = T(cos);
    auto& st = T(sin);
    auto& ot = T(out);
    check_cuda(it, "rope input");
    // Launch on the tensor's device and that device's current stream (a pipeline shard may sit on any GPU).
    const c10::cuda::OptionalCUDAGuard device_guard(it.device());
    TORCH_CHECK(it.dim() == 2 && it.stride(1) == 1, "rope: input must be 2-D with unit inner stride");
    const int64_t rows = it.size(0);
    const int64_t d = ct.size(-1);
    TORCH_CHECK(it.size(1) == heads * d, "rope: input width ", it.size(1), " != heads*d ", heads * d);
    TORCH_CHECK(ct.is_contiguous() && st.is_contiguous() && ct.numel() == rows * d && st.numel() == rows * d, "rope: cos/sin [rows, d]");
    TORCH_CHECK(ot.is_contiguous() && ot.numel() == rows * heads * d, "rope: out");
    TORCH_CHECK(ct.scalar_type() == it.scalar_type() && ot.scalar_type() == it.scalar_type(), "rope: dtypes differ");
    check_launch(lowbit_launch_rope(dtype_code(it), it.data_ptr(), it.stride(0), ct.data_ptr(), st.data_ptr(),
                                    ot.data_ptr(), rows, heads, (int)d, stream_ptr()), "rope");
  });
}

// in: [rows, 2*inter] (gate then up), out: [rows, inter].
int lowbit_silu_mul(void* in, void* out) {
  return guarded([&] {
    auto& it = T(in);
    auto& ot = T(out);
    check_cuda(it, "silu_mul input");
    // Launch on the tensor's device and that device's current stream (a pipeline shard may sit on any GPU).
    const c10::cuda::OptionalCUDAGuard device_guard(it.device());
    TORCH_CHECK(it.is_contiguous() && ot.is_contiguous() && it.scalar_type() == ot.scalar_type(), "silu_mul: contiguous, same dtype");
    const int64_t inter = it.size(-1) / 2;
    TORCH_CHECK(ot.numel() * 2 == it.numel() && ot.size(-1) == inter, "silu_mul: out must be [rows, inter]");
    check_launch(lowbit_launch_silu_mul(dtype_code(it), it.data_ptr(), ot.data_ptr(), it.numel() / (2 * inter),
                                        (int)inter, stream_ptr()), "silu_mul");
  });
}

// out[B, N] = x[B, K] @ W[N, K]^T for B <= 16 (bf16/fp16).
int lowbit_gemv(void* x, void* weight, void* out) {
  return guarded([&] {
    auto& xt = T(x);
    auto& wt = T(weight);
    auto& ot = T(out);
    check_cuda(xt, "x");
    // Launch on the tensor's device and that device's current stream (a pipeline shard may sit on any GPU).
    const c10::cuda::OptionalCUDAGuard device_guard(xt.device());
    TORCH_CHECK(wt.dim() == 2 && wt.is_contiguous() && wt.size(1) % 8 == 0 && aligned16(wt), "gemv: weight [N, K], K % 8 == 0");
    TORCH_CHECK(wt.scalar_type() == xt.scalar_type(), "gemv: weight dtype");
    check_activations(xt, ot, wt.size(1), wt.size(0));
    check_launch(lowbit_launch_gemv(dtype_code(xt), xt.data_ptr(), xt.stride(0), wt.data_ptr(), ot.data_ptr(),
                                    ot.stride(0), (int)xt.size(0), (int)wt.size(0), (int)wt.size(1), stream_ptr()), "gemv");
  });
}

// out[B, N] = x[B, K] @ dequant(packed[N, K/2], scales[N, G], zeros[N, G])^T, group = K / G, B <= 16.
int lowbit_int4_linear(void* x, void* packed, void* scales, void* zeros, int group, void* out) {
  return guarded([&] {
    auto& xt = T(x);
    auto& pt = T(packed);
    auto& st = T(scales);
    auto& zt = T(zeros);
    auto& ot = T(out);
    check_cuda(xt, "x");
    // Launch on the tensor's device and that device's current stream (a pipeline shard may sit on any GPU).
    const c10::cuda::OptionalCUDAGuard device_guard(xt.device());
    TORCH_CHECK(pt.scalar_type() == at::kByte && pt.dim() == 2 && pt.is_contiguous() && aligned16(pt), "int4: packed uint8 [N, K/2]");
    const int64_t n = pt.size(0), k = pt.size(1) * 2;
    TORCH_CHECK(group % 32 == 0 && k % group == 0, "int4: group ", group, " must be a multiple of 32 dividing K=", k);
    TORCH_CHECK(st.scalar_type() == at::kHalf && zt.scalar_type() == at::kHalf, "int4: scales/zeros must be float16");
    TORCH_CHECK(st.is_contiguous() && zt.is_contiguous() && st.numel() == n * (k / group) && zt.numel() == st.numel(), "int4: scales/zeros [N, K/group]");
    check_activations(xt, ot, k, n);
    check_launch(lowbit_launch_int4(dtype_code(xt), xt.data_ptr(), xt.stride(0), pt.data_ptr(), st.data_ptr(),
                                    zt.data_ptr(), ot.data_ptr(), ot.stride(0), (int)xt.size(0), (int)n, (int)k, group,
                                    stream_ptr()), "int4");
  });
}

}  // extern "C"
