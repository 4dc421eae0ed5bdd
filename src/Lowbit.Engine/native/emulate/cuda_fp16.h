#pragma once
#include <string.h>
struct __half { unsigned short v; };
inline float __half2float(__half h) { _Float16 f; memcpy(&f, &h.v, 2); return (float)f; }
inline __half __float2half(float x) { _Float16 f = (_Float16)x; __half h; memcpy(&h.v, &f, 2); return h; }
inline __half __ushort_as_half(unsigned short u) { return {u}; }
inline unsigned short __half_as_ushort(__half h) { return h.v; }
// Packed fp16 pairs (int4-v2-h2): each operation rounds once to fp16, as HADD2/HFMA2 do (the product of two fp16
// values and an fp16 addend are exact in double, so double then one conversion is the single rounding).
struct alignas(4) __half2 { _Float16 x, y; };
inline __half2 __floats2half2_rn(float a, float b) { return {(_Float16)a, (_Float16)b}; }
inline __half2 __hsub2(__half2 a, __half2 b) { return {(_Float16)((double)a.x - (double)b.x), (_Float16)((double)a.y - (double)b.y)}; }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return {(_Float16)((double)a.x * (double)b.x + (double)c.x), (_Float16)((double)a.y * (double)b.y + (double)c.y)};
}
inline float __low2float(__half2 h) { return (float)h.x; }
inline float __high2float(__half2 h) { return (float)h.y; }
