#pragma once
// Declarations only (see ATen/ATen.h here).
#include <cuda_runtime_api.h>
namespace c10::cuda {
class CUDAStream {
 public:
  cudaStream_t stream() const;
};
CUDAStream getCurrentCUDAStream(int8_t device = -1);
}  // namespace c10::cuda
