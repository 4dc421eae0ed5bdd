// liblowbit_memory.so: c10's CUDA caching-allocator statistics and emptyCache, for serve's memory report and the
// planner's calibration (docs/planner.md). Built apart from liblowbit_native.so by build.sh, so that a change in these
// c10 APIs between PyTorch versions costs only this report, never the decode kernels.
#include <c10/cuda/CUDACachingAllocator.h>
#include <cstdint>

extern "C" {
// out[0..3]: allocated now, allocated peak, reserved now, reserved peak (bytes; aggregate over pools). 0 on success.
int lowbit_memory_stats(int device, int64_t* out) {
  try {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    out[0] = stats.allocated_bytes[0].current;
    out[1] = stats.allocated_bytes[0].peak;
    out[2] = stats.reserved_bytes[0].current;
    out[3] = stats.reserved_bytes[0].peak;
    return 0;
  } catch (...) {
    return 1;
  }
}

// Resets the peak statistics of `device` (torch.cuda.reset_peak_memory_stats). 0 on success.
int lowbit_reset_peak(int device) {
  try {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return 1;
  }
}

// Returns the allocator's unused cached blocks to the driver (torch.cuda.empty_cache()). 0 on success.
int lowbit_empty_cache() {
  try {
    c10::cuda::CUDACachingAllocator::emptyCache();
    return 0;
  } catch (...) {
    return 1;
  }
}
}
