#pragma once
// Declarations only (see ATen/ATen.h here).
#include <ATen/ATen.h>
namespace c10::cuda {
class OptionalCUDAGuard {
 public:
  explicit OptionalCUDAGuard(c10::Device device);
};
}  // namespace c10::cuda
