#pragma once
#include <string.h>
struct __half { unsigned short v; };
inline float __half2float(__half h) { _Float16 f; memcpy(&f, &h.v, 2); return (float)f; }
inline __half __float2half(float x) { _Float16 f = (_Float16)x; __half h; memcpy(&h.v, &f, 2); return h; }
inline __half __ushort_as_half(unsigned short u) { return {u}; }
inline unsigned short __half_as_ushort(__half h) { return h.v; }
