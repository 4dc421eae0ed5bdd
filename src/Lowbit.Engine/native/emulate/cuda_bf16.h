#pragma once
#include <string.h>
struct __nv_bfloat16 { unsigned short v; };
inline float __bfloat162float(__nv_bfloat16 h) { unsigned u = (unsigned)h.v << 16; float f; memcpy(&f, &u, 4); return f; }
inline __nv_bfloat16 __float2bfloat16(float f) { unsigned u; memcpy(&u, &f, 4); u += 0x7FFF + ((u >> 16) & 1); return {(unsigned short)(u >> 16)}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.v; }
