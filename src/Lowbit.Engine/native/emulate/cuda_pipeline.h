#pragma once
// CPU emulation of the cp.async pipeline primitives: the copy happens at once, so commits and waits are no-ops (the
// kernel's barriers still order the buffers' reuse as on the GPU).
#include <string.h>
#include <stddef.h>
inline void __pipeline_memcpy_async(void* dst, const void* src, size_t bytes, size_t = 0) { memcpy(dst, src, bytes); }
inline void __pipeline_commit() {}
inline void __pipeline_wait_prior(size_t) {}
