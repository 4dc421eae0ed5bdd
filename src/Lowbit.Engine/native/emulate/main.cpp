#include "cuda_runtime.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>
extern "C" int lowbit_launch_gemv_v2(int, const void*, int64_t, const void*, void*, int64_t, int, int, int, void*);
extern "C" int lowbit_launch_int4_v2(int, const void*, int64_t, const void*, const void*, const void*, void*, int64_t, int, int, int, int, void*);
extern "C" int lowbit_v2_attention_splits(int, int, int, int, int);
extern "C" int lowbit_launch_decode_attention_v2(int, const void*, int64_t, const void*, const void*, void*, void*, const int64_t*, void*, int64_t, float*, int*, int, int, int, int, int, int, int, void*);
extern "C" int lowbit_launch_rope_kv(int, const void*, int64_t, const void*, const void*, const int64_t*, void*, void*, void*, int, int, int, int, int, void*);

// Decode attention against a float64 softmax reference: rows at different positions (one past the length bucket), the
// cache's rows past each position NaN,
// grouped heads, a padded query row stride; every output element written, launched twice (the split counters must be
// back at zero after each launch, or the second launch's last blocks would not merge). Then the fused RoPE version on a
// q/k/v row: bit-identical to rope_kv followed by the attention, output and cache.
int run_attention(int batch, int kv_heads, int group, int d, int max_len, int length, int sms) {
  g_sms = sms;
  std::mt19937 rng(batch * 131 + kv_heads * 7 + group + d + length);
  std::normal_distribution<float> nd(0, 1);
  const int heads = kv_heads * group;
  const int64_t qs = (int64_t)(heads + 2 * kv_heads) * d + 16;
  std::vector<__nv_bfloat16> q((size_t)batch * qs), k((size_t)batch * max_len * kv_heads * d), v(k.size());
  std::vector<__nv_bfloat16> cs((size_t)batch * d), sn(cs.size());
  for (auto& x : q) x = __float2bfloat16(nd(rng));
  for (auto& x : k) x = __float2bfloat16(nd(rng));
  for (auto& x : v) x = __float2bfloat16(nd(rng));
  for (size_t i = 0; i < cs.size(); i++) cs[i] = __float2bfloat16(std::cos(0.1f * i)), sn[i] = __float2bfloat16(std::sin(0.1f * i));
  std::vector<int64_t> pos(batch);
  for (int b = 0; b < batch; b++) pos[b] = b == batch - 1 ? length + 3 : (int64_t)((b * 37 + 5) % length);
  // Rows at and past each row's attended length are poisoned: the kernel loads them before it knows the position.
  for (int b = 0; b < batch; b++) {
    const int attend = (int)std::min<int64_t>(pos[b], length - 1) + 1;
    for (size_t i = ((size_t)b * max_len + attend) * kv_heads * d; i < ((size_t)b + 1) * max_len * kv_heads * d; i++)
      k[i] = v[i] = __float2bfloat16(NAN);
  }
  const int splits = lowbit_v2_attention_splits(batch, kv_heads, group, d, length);
  std::vector<float> work((size_t)batch * heads * splits * (d + 2));
  std::vector<int> arrivals((size_t)batch * kv_heads, 0);
  std::vector<__nv_bfloat16> out((size_t)batch * heads * d);
  auto launch = [&](const std::vector<__nv_bfloat16>& query, int64_t stride, bool rope, std::vector<__nv_bfloat16>& keys,
                    std::vector<__nv_bfloat16>& values) {
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
      std::fill(out.begin(), out.end(), __float2bfloat16(NAN));
      rc = lowbit_launch_decode_attention_v2(0, query.data(), stride, rope ? cs.data() : nullptr, rope ? sn.data() : nullptr,
                                             keys.data(), values.data(), pos.data(), out.data(), (int64_t)heads * d, work.data(),
                                             arrivals.data(), batch, kv_heads, group, d, max_len, length, splits, nullptr);
      for (int a : arrivals) rc = rc ? rc : a != 0 ? 99 : 0;
    }
    return rc;
  };
  // The fused RoPE path first, on copies of the cache: its output and cache against rope_kv + the attention below.
  std::vector<__nv_bfloat16> k2 = k, v2 = v, qo((size_t)batch * heads * d);
  int rc = launch(q, qs, true, k2, v2);
  const std::vector<__nv_bfloat16> fused = out;
  if (!rc) rc = lowbit_launch_rope_kv(0, q.data(), qs, cs.data(), sn.data(), pos.data(), qo.data(), k.data(), v.data(), batch, heads,
                                      kv_heads, d, max_len, nullptr);
  if (!rc) rc = launch(qo, (int64_t)heads * d, false, k, v);
  if (rc) { printf("attention rc %d\n", rc); return 1; }
  size_t differing = 0;
  for (size_t i = 0; i < out.size(); i++) differing += memcmp(&out[i], &fused[i], sizeof(out[i])) != 0;
  for (size_t i = 0; i < k.size(); i++) differing += memcmp(&k[i], &k2[i], sizeof(k[i])) != 0 || memcmp(&v[i], &v2[i], sizeof(v[i])) != 0;
  double err = 0, norm = 0;
  bool written = true;
  for (int b = 0; b < batch; b++) for (int h = 0; h < heads; h++) {
    const int kvh = h / group;
    const int attend = (int)std::min<int64_t>(pos[b], length - 1) + 1;
    std::vector<double> score(attend);
    double top = -1e300;
    for (int j = 0; j < attend; j++) {
      double dot = 0;
      for (int e = 0; e < d; e++)
        dot += (double)__bfloat162float(qo[((size_t)b * heads + h) * d + e]) * __bfloat162float(k[(((size_t)b * max_len + j) * kv_heads + kvh) * d + e]);
      score[j] = dot / std::sqrt((double)d);
      top = std::max(top, score[j]);
    }
    double sum = 0;
    for (auto& x : score) { x = std::exp(x - top); sum += x; }
    for (int e = 0; e < d; e++) {
      double ref = 0;
      for (int j = 0; j < attend; j++) ref += score[j] / sum * __bfloat162float(v[(((size_t)b * max_len + j) * kv_heads + kvh) * d + e]);
      const float got = __bfloat162float(out[((size_t)b * heads + h) * d + e]);
      written = written && got == got;
      err += (got - ref) * (got - ref);
      norm += ref * ref;
    }
  }
  printf("attention batch %d kv %d group %d d %d length %d splits %d: rel err %.3e, all written %d; fused RoPE: %zu elements differ\n",
         batch, kv_heads, group, d, length, splits, std::sqrt(err / norm), written, differing);
  return std::sqrt(err / norm) < 1e-2 && written && differing == 0 ? 0 : 1;
}

extern "C" int lowbit_launch_int4_dequantize_v2(int, const void*, const void*, const void*, void*, int64_t, int, int, void*);

// Random 4-bit codes q [n, k] in our packing (code 2j low nibble of byte j) with fp16 scales and zeros per group:
// normal scales around 0 and zeros around 7.5 (`normal`), or a fixed small pattern.
struct RandomInt4 {
  std::vector<int> q;
  std::vector<uint8_t> packed;
  std::vector<__half> s, z;
};

RandomInt4 random_int4(std::mt19937& rng, int n, int k, int group, bool normal) {
  std::uniform_int_distribution<int> code(0, 15);
  std::normal_distribution<float> nd(0, 1);
  RandomInt4 w;
  w.q.resize((size_t)n * k);
  for (auto& v : w.q) v = code(rng);
  w.packed.resize((size_t)n * k / 2);
  for (size_t i = 0; i < w.packed.size(); i++) w.packed[i] = (uint8_t)(w.q[2 * i] | (w.q[2 * i + 1] << 4));
  w.s.resize((size_t)n * (k / group));
  w.z.resize(w.s.size());
  for (size_t i = 0; i < w.s.size(); i++) {
    w.s[i] = __float2half(normal ? 0.02f * nd(rng) : 0.01f + 0.001f * (i % 7));
    w.z[i] = __float2half(normal ? 7.5f + nd(rng) : 7.5f + 0.13f * (i % 5));
  }
  return w;
}


// The dense weight of the int4 dequantize kernel against the reference arithmetic (fp32 q - z, times s, one rounding to
// the 16-bit type): bit-identical, every element written.
int run_dequantize(int dtype, int n, int k, int group, int sms) {
  g_sms = sms;
  std::mt19937 rng(n * 7 + k + group);
  const int G = k / group;
  auto [q, packed, s, z] = random_int4(rng, n, k, group, true);
  std::vector<unsigned short> out((size_t)n * k, 0xFFFF);
  int rc = lowbit_launch_int4_dequantize_v2(dtype, packed.data(), s.data(), z.data(), out.data(), n, k, group, nullptr);
  if (rc) { printf("dequantize n %d k %d: rc %d\n", n, k, rc); return 1; }
  size_t wrong = 0;
  for (int r = 0; r < n; r++) for (int i = 0; i < k; i++) {
    const float sv = __half2float(s[(size_t)r * G + i / group]), zv = __half2float(z[(size_t)r * G + i / group]);
    const float w = ((float)q[(size_t)r * k + i] - zv) * sv;
    const unsigned short want = dtype == 0 ? __float2bfloat16(w).v : __float2half(w).v;
    wrong += out[(size_t)r * k + i] != want;
  }
  printf("dequantize %s n %d k %d group %d sms %d: %zu of %zu differ\n", dtype == 0 ? "bf16" : "fp16", n, k, group, sms, wrong, out.size());
  return wrong == 0 ? 0 : 1;
}
extern "C" int lowbit_launch_int4_v2_fused(int, const void*, int64_t, const void*, const void*, const void*, void*, int64_t, int, int, int, int, int, int, const void*, float, const void*, int64_t, float*, int*, void*);
extern "C" int lowbit_v2_int4_fused_supports(int, int, int, int, int, int);
extern "C" int64_t lowbit_v2_int4_workspace(int, int, int, int);
extern "C" int64_t lowbit_v2_int4_arrivals(int, int, int, int);

// int4-mma16's K splits: the workspace and zeroed counters a launch needs (empty without splits); counters_left_zero
// after the launch says the last block of every tile reset its counter.
struct SplitBuffers {
  std::vector<float> work;
  std::vector<int> arrivals;
  SplitBuffers(int batch, int n, int k, int geometry)
      : work((size_t)lowbit_v2_int4_workspace(batch, n, k, geometry), NAN), arrivals((size_t)lowbit_v2_int4_arrivals(batch, n, k, geometry), 0) {}
  float* w() { return work.empty() ? nullptr : work.data(); }
  int* a() { return arrivals.empty() ? nullptr : arrivals.data(); }
  bool counters_left_zero() const {
    for (int v : arrivals) if (v != 0) return false;
    return true;
  }
};

static float bf(float v) { return __bfloat162float(__float2bfloat16(v)); }

// The int4 GEMV's fused variants (the decode step's): RMSNorm or SiLU·mul before the product, the residual added
// after, in both geometries. The reference applies the prologue with the separate kernels' roundings (rmsnorm_kernel,
// silu_mul_kernel), then a float64 product, then T(T(v) + residual); the exact result none of those roundings (the
// deferred RMSNorm of the packed-fp16 kernels is closer to it than the separate kernels are); padding columns stay
// untouched.
int run_fused(int batch, int n, int k, int group, int sms, int geometry, int prologue, bool residual) {
  g_sms = sms;
  std::mt19937 rng(n * 13 + k + batch + geometry * 5 + prologue);
  std::normal_distribution<float> nd(0, 1);
  const int G = k / group;
  auto [q, packed, s, z] = random_int4(rng, n, k, group, false);
  const int width = prologue == 2 ? 2 * k : k;
  const int64_t xs = width + 8;
  std::vector<__nv_bfloat16> x((size_t)batch * xs), w(k), res((size_t)batch * (n + 5));
  for (auto& v : x) v = __float2bfloat16(3.0f * nd(rng));
  for (auto& v : w) v = __float2bfloat16(0.5f + std::abs(nd(rng)));
  for (auto& v : res) v = __float2bfloat16(nd(rng));
  std::vector<__nv_bfloat16> out((size_t)batch * (n + 3), __float2bfloat16(NAN));
  if (!lowbit_v2_int4_fused_supports(0, batch, k, geometry, prologue, residual ? 1 : 0)) { printf("fused variant not supported\n"); return 1; }
  const float eps = 1e-5f;
  SplitBuffers split(batch, n, k, geometry);
  int rc = lowbit_launch_int4_v2_fused(0, x.data(), xs, packed.data(), s.data(), z.data(), out.data(), n + 3, batch, n, k, group,
                                       geometry, prologue, w.data(), eps, residual ? res.data() : nullptr, n + 5, split.w(), split.a(), nullptr);
  if (rc) { printf("fused rc %d\n", rc); return 1; }
  // Row r of the weights (dequantized, float64) times the activations.
  auto product = [&](int r, const auto& act) {
    double v = 0;
    for (int i = 0; i < k; i++) {
      const int g = i / group;
      v += (double)act[i] * ((q[(size_t)r * k + i] - (double)__half2float(z[r * G + g])) * (double)__half2float(s[r * G + g]));
    }
    return v;
  };
  double err = 0, norm = 0, exact_err = 0, exact_norm = 0, ref_exact_err = 0;
  for (int b = 0; b < batch; b++) {
    std::vector<float> a(k);
    for (int i = 0; i < k; i++) a[i] = __bfloat162float(x[b * xs + i]);
    // The same in float64 without the separate kernels' intermediate roundings (the mathematically exact result for
    // these int4 weights): how far each arithmetic is from the truth, not only from the other.
    std::vector<double> e(k);
    for (int i = 0; i < k; i++) e[i] = a[i];
    if (prologue == 1 || prologue == 3) {
      double ss = 0;
      for (int i = 0; i < k; i++) ss += e[i] * e[i];
      const double inv = 1.0 / std::sqrt(ss / k + eps);
      for (int i = 0; i < k; i++) e[i] = (double)__bfloat162float(w[i]) * e[i] * inv;
    } else if (prologue == 2) {
      for (int i = 0; i < k; i++) {
        const double g = e[i], u = __bfloat162float(x[b * xs + k + i]);
        e[i] = g / (1.0 + std::exp(-g)) * u;
      }
    }
    std::vector<double> exact(n);
    for (int r = 0; r < n; r++) exact[r] = product(r, e) + (residual ? __bfloat162float(res[b * (n + 5) + r]) : 0.0);
    if (prologue == 1 || prologue == 3) {
      double ss = 0;
      for (int i = 0; i < k; i++) ss += (double)a[i] * a[i];
      const float inv = 1.0f / std::sqrt((float)(ss / k) + eps);
      for (int i = 0; i < k; i++) a[i] = bf(__bfloat162float(w[i]) * bf(a[i] * inv));
    } else if (prologue == 2) {
      for (int i = 0; i < k; i++) {
        const float g = a[i], u = __bfloat162float(x[b * xs + k + i]);
        a[i] = bf(bf(g / (1.f + std::exp(-g))) * u);
      }
    }
    std::vector<double> refs(n);
    for (int r = 0; r < n; r++) {
      double ref = product(r, a);
      if (residual) ref = (double)bf((float)ref) + __bfloat162float(res[b * (n + 5) + r]);
      refs[r] = ref;
    }
    // Prologue 3: output i is SiLU(gate row i)·(up row n/2 + i) of the rounded outputs (silu_mul_kernel's arithmetic).
    for (int r = 0; r < (prologue == 3 ? n / 2 : n); r++) {
      double ref = refs[r];
      if (prologue == 3) {
        const float g = bf((float)refs[r]);
        ref = bf(bf(g / (1.f + std::exp(-g))) * bf((float)refs[n / 2 + r]));
      }
      const double o = __bfloat162float(out[b * (n + 3) + r]);
      err += (o - ref) * (o - ref);
      norm += ref * ref;
      const double truth = prologue == 3 ? exact[r] / (1.0 + std::exp(-exact[r])) * exact[n / 2 + r] : exact[r];
      exact_err += (o - truth) * (o - truth);
      exact_norm += truth * truth;
      ref_exact_err += (ref - truth) * (ref - truth);
    }
  }
  bool pad = true;
  for (int b = 0; b < batch; b++) for (int r = prologue == 3 ? n / 2 : n; r < n + 3; r++) pad &= std::isnan(__bfloat162float(out[b * (n + 3) + r]));
  const bool counters = split.counters_left_zero();
  printf("fused batch %d n %d k %d g %d sms %d geometry %d prologue %d residual %d: rel err %.3e (to exact %.3e, the "
         "reference's own %.3e), padding untouched %d%s\n",
         batch, n, k, group, sms, geometry, prologue, residual, std::sqrt(err / norm), std::sqrt(exact_err / exact_norm),
         std::sqrt(ref_exact_err / exact_norm), pad,
         split.arrivals.empty() ? "" : counters ? ", K splits, counters left zero" : ", K splits, COUNTERS LEFT NONZERO");
  // Within 1e-2 of the exact result, and of the separate kernels' (whose own roundings are up to ~7e-3 from it).
  return std::sqrt(exact_err / exact_norm) < 1e-2 && std::sqrt(err / norm) < 2e-2 && pad && counters ? 0 : 1;
}

// The tensor-core int4 GEMV (geometry 9) without a prologue in fp16: 1-8 activation rows against a float64
// reference of the dequantized weight, padding columns untouched.
int run_mma_fp16(int batch, int n, int k, int group, int sms, int geometry) {
  g_sms = sms;
  std::mt19937 rng(n * 17 + k + batch + geometry);
  std::normal_distribution<float> nd(0, 1);
  const int G = k / group;
  auto [q, packed, s, z] = random_int4(rng, n, k, group, true);
  const int64_t xs = k + 8;
  std::vector<__half> x((size_t)batch * xs), out((size_t)batch * (n + 3), __float2half(NAN));
  for (auto& v : x) v = __float2half(2.0f * nd(rng));
  SplitBuffers split(batch, n, k, geometry);
  int rc = lowbit_launch_int4_v2_fused(1, x.data(), xs, packed.data(), s.data(), z.data(), out.data(), n + 3, batch, n, k, group,
                                       geometry, 0, nullptr, 0.f, nullptr, 0, split.w(), split.a(), nullptr);
  if (rc) { printf("mma fp16 rc %d\n", rc); return 1; }
  double err = 0, norm = 0;
  bool pad = true;
  for (int b = 0; b < batch; b++) {
    for (int r = 0; r < n; r++) {
      double ref = 0;
      for (int i = 0; i < k; i++)
        ref += (double)__half2float(x[b * xs + i]) * ((q[(size_t)r * k + i] - (double)__half2float(z[r * G + i / group])) * (double)__half2float(s[r * G + i / group]));
      const double o = __half2float(out[b * (n + 3) + r]);
      err += (o - ref) * (o - ref);
      norm += ref * ref;
    }
    for (int r = n; r < n + 3; r++) pad &= std::isnan(__half2float(out[b * (n + 3) + r]));
  }
  const bool counters = split.counters_left_zero();
  printf("mma fp16 batch %d n %d k %d g %d sms %d geometry %d: rel err %.3e, padding untouched %d%s\n", batch, n, k, group, sms, geometry,
         std::sqrt(err / norm), pad, split.arrivals.empty() ? "" : counters ? ", K splits, counters left zero" : ", K splits, COUNTERS LEFT NONZERO");
  return std::sqrt(err / norm) < 1e-2 && pad && counters ? 0 : 1;
}

// int4-v2-h2 and -h2s (geometries 13 and 15: fp16 products, activations scaled per chunk of 32 by a power of two) over activations
// whose chunks span 1e-6 to 1e6 (past fp16's range, inside bf16's), with all-zero chunks and outliers, against a
// float64 reference, next to int4-v2-wide (the fp32 products) on the same input: within 3e-3 normwise (the bf16
// output's rounding ~1e-3), nothing infinite.
int run_h2_range(int n, int k, int group, int sms) {
  g_sms = sms;
  std::mt19937 rng(n * 31 + k + group);
  std::normal_distribution<float> nd(0, 1);
  const int G = k / group;
  auto [q, packed, s, z] = random_int4(rng, n, k, group, true);
  const int64_t xs = k + 8;
  std::vector<__nv_bfloat16> x(xs);
  const float magnitudes[] = {1e-6f, 1e-3f, 0.f, 1.f, 30.f, 1e3f, 1e6f, 5.f};
  for (int i = 0; i < k; i++) x[i] = __float2bfloat16(magnitudes[(i / 32) % 8] * nd(rng) * (i % 97 == 0 ? 20.f : 1.f));
  std::vector<double> ref(n);
  for (int r = 0; r < n; r++) {
    double v = 0;
    for (int i = 0; i < k; i++)
      v += (double)__bfloat162float(x[i]) * ((q[(size_t)r * k + i] - (double)__half2float(z[r * G + i / group])) * (double)__half2float(s[r * G + i / group]));
    ref[r] = v;
  }
  double errs[4] = {0, 0, 0, 0};
  const int geometries[4] = {3, 13, 15, 17};
  for (int t = 0; t < 4; t++) {
    if (!lowbit_v2_int4_fused_supports(0, 1, k, geometries[t], 0, 0)) continue;   // -h2b: with LOWBIT_INT4_HALF2=2
    std::vector<__nv_bfloat16> out(n + 3, __float2bfloat16(NAN));
    int rc = lowbit_launch_int4_v2_fused(0, x.data(), xs, packed.data(), s.data(), z.data(), out.data(), n + 3, 1, n, k, group,
                                         geometries[t], 0, nullptr, 0.f, nullptr, 0, nullptr, nullptr, nullptr);
    if (rc) { printf("h2 range geometry %d rc %d\n", geometries[t], rc); return 1; }
    double err = 0, norm = 0;
    for (int r = 0; r < n; r++) {
      const double o = __bfloat162float(out[r]);
      err += (o - ref[r]) * (o - ref[r]);
      norm += ref[r] * ref[r];
    }
    errs[t] = std::sqrt(err / norm);
  }
  printf("h2 range n %d k %d g %d sms %d: rel err int4-v2-wide %.3e, int4-v2-h2 %.3e, int4-v2-h2s %.3e, int4-v2-h2b %.3e\n", n, k, group, sms,
         errs[0], errs[1], errs[2], errs[3]);
  return errs[0] > 0 && errs[1] > 0 && errs[1] < 3e-3 && errs[2] > 0 && errs[2] < 3e-3 && errs[3] < 3e-3 ? 0 : 1;
}

// RoPE + KV-cache write against the rope kernel's arithmetic on the CPU: bit-identical, and nothing else in the cache
// touched (rows at other positions and other slots stay NaN).
int run_rope_kv(int batch, int heads, int kv_heads, int d, int max_len) {
  std::mt19937 rng(batch * 3 + heads + d);
  std::normal_distribution<float> nd(0, 1);
  const int all = heads + 2 * kv_heads;
  const int64_t stride = (int64_t)all * d + 8;
  std::vector<__nv_bfloat16> qkv((size_t)batch * stride), cs((size_t)batch * d), sn((size_t)batch * d);
  for (auto& v : qkv) v = __float2bfloat16(nd(rng));
  for (auto& v : cs) v = __float2bfloat16(std::cos(nd(rng)));
  for (auto& v : sn) v = __float2bfloat16(std::sin(nd(rng)));
  std::vector<int64_t> pos(batch);
  for (int b = 0; b < batch; b++) pos[b] = b == batch - 1 ? max_len + 4 : (b * 7 + 3) % max_len;
  const size_t cache = (size_t)(batch + 1) * max_len * kv_heads * d;
  std::vector<__nv_bfloat16> qo((size_t)batch * heads * d, __float2bfloat16(NAN)), keys(cache, __float2bfloat16(NAN)), values(cache, __float2bfloat16(NAN));
  int rc = lowbit_launch_rope_kv(0, qkv.data(), stride, cs.data(), sn.data(), pos.data(), qo.data(), keys.data(), values.data(), batch, heads, kv_heads, d, max_len, nullptr);
  if (rc) { printf("rope_kv rc %d\n", rc); return 1; }
  size_t wrong = 0, written = 0;
  auto rope = [&](int b, int h, int i) {
    const __nv_bfloat16* row = qkv.data() + b * stride + (int64_t)h * d;
    const float xv = __bfloat162float(row[i]);
    const float rot = i < d / 2 ? -__bfloat162float(row[i + d / 2]) : __bfloat162float(row[i - d / 2]);
    return __float2bfloat16(bf(xv * __bfloat162float(cs[b * d + i])) + bf(rot * __bfloat162float(sn[b * d + i]))).v;
  };
  for (int b = 0; b < batch; b++) {
    const int64_t p = std::min<int64_t>(pos[b], max_len - 1);
    for (int h = 0; h < heads; h++) for (int i = 0; i < d; i++) wrong += qo[((size_t)b * heads + h) * d + i].v != rope(b, h, i);
    for (int h = 0; h < kv_heads; h++) for (int i = 0; i < d; i++) {
      const size_t at = (((size_t)b * max_len + p) * kv_heads + h) * d + i;
      wrong += keys[at].v != rope(b, heads + h, i);
      wrong += values[at].v != qkv[b * stride + (int64_t)(heads + kv_heads + h) * d + i].v;
    }
  }
  for (size_t i = 0; i < cache; i++) written += !std::isnan(__bfloat162float(keys[i])) + !std::isnan(__bfloat162float(values[i]));
  const size_t expected = (size_t)2 * batch * kv_heads * d;
  printf("rope_kv batch %d heads %d/%d d %d: %zu wrong, %zu of %zu cache values written\n", batch, heads, kv_heads, d, wrong, written, expected);
  return wrong == 0 && written == expected ? 0 : 1;
}

int run(int batch, int n, int k, int group, int sms, int xstride_extra) {
  g_sms = sms;
  std::mt19937 rng(n * 31 + k + batch);
  std::normal_distribution<float> nd(0, 1);
  int G = k / group;
  auto [q, packed, s, z] = random_int4(rng, n, k, group, false);
  int64_t xs = k + xstride_extra;
  std::vector<__nv_bfloat16> x((size_t)batch * xs);
  for (auto& v : x) v = __float2bfloat16(nd(rng));
  std::vector<__nv_bfloat16> out((size_t)batch * (n + 3), __float2bfloat16(NAN));
  int rc = lowbit_launch_int4_v2(0, x.data(), xs, packed.data(), s.data(), z.data(), out.data(), n + 3, batch, n, k, group, nullptr);
  if (rc) { printf("batch %d k %d: rc %d\n", batch, k, rc); return 1; }
  double err = 0, norm = 0;
  for (int b = 0; b < batch; b++) for (int r = 0; r < n; r++) {
    double ref = 0;
    for (int i = 0; i < k; i++) {
      int g = i / group;
      ref += (double)__bfloat162float(x[b * xs + i]) * ((q[(size_t)r * k + i] - (double)__half2float(z[r * G + g])) * (double)__half2float(s[r * G + g]));
    }
    double o = __bfloat162float(out[b * (n + 3) + r]);
    err += (o - ref) * (o - ref); norm += ref * ref;
  }
  // untouched padding columns stay NaN
  bool pad = true;
  for (int b = 0; b < batch; b++) for (int r = n; r < n + 3; r++) pad &= std::isnan(__bfloat162float(out[b * (n + 3) + r]));
  printf("batch %d n %d k %d g %d sms %d: rel err %.3e, padding untouched %d\n", batch, n, k, group, sms, sqrt(err / norm), pad);
  return sqrt(err / norm) < 1e-2 && pad ? 0 : 1;
}
int run_dense(int batch, int n, int k, int sms, int xstride_extra) {
  g_sms = sms;
  std::mt19937 rng(n * 7 + k + batch);
  std::normal_distribution<float> nd(0, 1);
  std::vector<__nv_bfloat16> w((size_t)n * k);
  for (auto& v : w) v = __float2bfloat16(nd(rng) * 0.02f);
  int64_t xs = k + xstride_extra;
  std::vector<__nv_bfloat16> x((size_t)batch * xs);
  for (auto& v : x) v = __float2bfloat16(nd(rng));
  std::vector<__nv_bfloat16> out((size_t)batch * (n + 3), __float2bfloat16(NAN));
  int rc = lowbit_launch_gemv_v2(0, x.data(), xs, w.data(), out.data(), n + 3, batch, n, k, nullptr);
  if (rc) { printf("dense batch %d k %d: rc %d\n", batch, k, rc); return 1; }
  double err = 0, norm = 0;
  bool pad = true;
  for (int b = 0; b < batch; b++) {
    for (int r = 0; r < n; r++) {
      double ref = 0;
      for (int i = 0; i < k; i++) ref += (double)__bfloat162float(x[b * xs + i]) * __bfloat162float(w[(size_t)r * k + i]);
      double o = __bfloat162float(out[b * (n + 3) + r]);
      err += (o - ref) * (o - ref); norm += ref * ref;
    }
    for (int r = n; r < n + 3; r++) pad &= std::isnan(__bfloat162float(out[b * (n + 3) + r]));
  }
  printf("dense batch %d n %d k %d sms %d: rel err %.3e, padding untouched %d\n", batch, n, k, sms, sqrt(err / norm), pad);
  return sqrt(err / norm) < 1e-2 && pad ? 0 : 1;
}

extern "C" int lowbit_launch_greedy_step(int, const void*, int64_t, int, int64_t*, int64_t*, int, int64_t*, int, void*);

// The greedy step against torch.argmax's rules on rows that test them: a tie (the first index wins), a NaN (wins), the
// largest value in the last element, every value −∞ (index 0); the token goes to next, to the history at the clamped
// position + 1 (a row past the end stays at the last column), and the positions advance by one.
int run_greedy(int vocab) {
  const int batch = 5, max_len = 9;
  const int64_t stride = vocab + 3;
  std::mt19937 rng(vocab);
  std::normal_distribution<float> nd(0, 1);
  std::vector<__nv_bfloat16> logits((size_t)batch * stride);
  for (auto& x : logits) x = __float2bfloat16(nd(rng));
  auto at = [&](int b, int i) -> __nv_bfloat16& { return logits[(size_t)b * stride + i]; };
  at(0, 7) = at(0, vocab - 2) = __float2bfloat16(50.f);   // a tie: 7
  at(1, vocab / 2) = __float2bfloat16(NAN);               // a NaN: vocab / 2, over a larger value
  at(1, 3) = __float2bfloat16(60.f);
  at(2, vocab - 1) = __float2bfloat16(70.f);              // the last element
  for (int i = 0; i < vocab; i++) at(3, i) = __float2bfloat16(-INFINITY);
  std::vector<int64_t> next(batch, -1), history((size_t)batch * max_len, -1), pos = {0, 3, 7, -2, 20};
  const std::vector<int64_t> before = pos;
  const int rc = lowbit_launch_greedy_step(0, logits.data(), stride, vocab, next.data(), history.data(), max_len, pos.data(), batch, nullptr);
  int bad = rc != 0;
  for (int b = 0; b < batch; b++) {
    int64_t want = -1;
    if (b == 0) want = 7;
    else if (b == 1) want = vocab / 2;
    else if (b == 2) want = vocab - 1;
    else if (b == 3) want = 0;
    else {
      want = 0;
      for (int i = 1; i < vocab; i++) if (__bfloat162float(at(b, i)) > __bfloat162float(at(b, (int)want))) want = i;
    }
    const int64_t clamped = std::min<int64_t>(std::max<int64_t>(before[b], 0), max_len - 1);
    const int64_t column = std::min<int64_t>(clamped + 1, max_len - 1);
    for (int c = 0; c < max_len; c++) bad += history[(size_t)b * max_len + c] != (c == column ? want : -1);
    bad += next[b] != want || pos[b] != before[b] + 1;
  }
  printf("greedy step vocab %d: %s\n", vocab, bad ? "WRONG" : "ok");
  return bad ? 1 : 0;
}

// int4-v2-h2 / -h2s at 2-3 chunks per thread (K <= 12,288), offered only with LOWBIT_INT4_HALF2=2 (read once per
// process): run.sh runs this binary a second time with the variable set and this argument.
int half2_wide() {
  int f = 0;
  f += run_fused(1, 19, 11008, 64, 2, 15, 0, false);
  f += run_fused(1, 13, 11008, 64, 3, 15, 2, true);
  f += run_fused(1, 30, 11008, 64, 3, 13, 3, false);
  f += run_fused(1, 9, 12288, 128, 1, 13, 0, true);
  f += run_fused(1, 21, 8192, 128, 2, 15, 1, false);   // the deferred RMSNorm at 2-3 chunks
  f += run_fused(1, 26, 5120, 64, 3, 13, 1, false);
  f += run_h2_range(17, 11008, 128, 1);
  // int4-v2-h2b (geometry 17: 384 threads, one chunk per thread up to K = 12,288): dead threads past K / 32, every
  // fused variant but the paired rows, fp16.
  f += run_fused(1, 21, 11008, 64, 2, 17, 0, false);
  f += run_fused(1, 13, 11008, 64, 3, 17, 2, true);
  f += run_fused(1, 9, 12288, 128, 1, 17, 1, false);
  f += run_fused(1, 17, 4096, 64, 2, 17, 0, true);
  f += run_mma_fp16(1, 23, 11008, 128, 2, 17);
  f += lowbit_v2_int4_fused_supports(0, 1, 4096, 17, 3, 0) == 0 ? 0 : 1;   // not the paired gate/up rows
  f += lowbit_v2_int4_fused_supports(0, 1, 12320, 17, 0, 0) == 0 ? 0 : 1;  // K <= 12,288
  printf(f == 0 ? "ok\n" : "FAIL\n");
  return f == 0 ? 0 : 1;
}

// The RMSNorm prologues with rmsnorm_kernel's roundings (LOWBIT_NORM_DEFER=0, read once per process; the default
// defers the norm's factor to the sums in int4-v2, -wide, -h2 and -h2s at one row): run.sh runs this binary a third
// time with the variable set and this argument. The q/k/v prologue (1) and the paired gate/up rows (3), N not a
// multiple of the tile, several tiles per block, dead threads past K / 32, one to three chunks per thread.
int norm_rounded() {
  int f = 0;
  f += run_fused(1, 29, 4096, 64, 3, 15, 1, false);
  f += run_fused(1, 102, 4096, 64, 2, 15, 3, false);
  f += run_fused(1, 29, 4096, 64, 3, 13, 1, false);
  f += run_fused(1, 30, 2048, 64, 3, 13, 3, false);
  f += run_fused(1, 21, 3072, 128, 2, 15, 1, false);
  f += run_fused(1, 29, 4096, 64, 3, 1, 1, false);
  f += run_fused(1, 27, 5120, 128, 2, 1, 1, false);
  f += run_fused(1, 38, 4096, 128, 1, 1, 3, false);
  f += run_fused(1, 21, 8192, 128, 2, 3, 1, false);
  f += run_fused(1, 30, 11008, 64, 3, 3, 3, false);
  f += run_fused(1, 45, 4096, 64, 2, 7, 1, false);
  f += run_fused(1, 17, 8192, 128, 2, 7, 1, false);
  printf(f == 0 ? "ok\n" : "FAIL\n");
  return f == 0 ? 0 : 1;
}

// -shared past three chunks per thread (on unless LOWBIT_INT4_SHARED_LONG=0, read once per process): K = 13,824 (four chunks: a
// 13B's down projection), 20,480 and 24,576 (five, six), 28,672 (seven: a 70B's, 112 KB of activations) and 32,768
// (eight, 128 KB), plain and with the residual, tail rows, one row only.
int shared_long() {
  int f = 0;
  f += run_fused(1, 13, 13824, 64, 2, 7, 0, false);
  f += run_fused(1, 11, 20480, 64, 3, 7, 0, true);
  f += run_fused(1, 6, 24576, 128, 2, 7, 0, false);
  f += run_fused(1, 9, 28672, 64, 2, 7, 0, true);
  f += run_fused(1, 7, 32768, 128, 1, 7, 0, false);
  f += run_mma_fp16(1, 10, 28672, 64, 2, 7);
  f += run_fused(1, 23, 11328, 64, 3, 7, 1, false);   // three chunks past 44 KB: every variant offered there
  f += lowbit_v2_int4_fused_supports(0, 1, 28672, 7, 1, 0) == 0 ? 0 : 1;   // no prologue past three chunks
  f += lowbit_v2_int4_fused_supports(0, 2, 13824, 7, 0, 0) == 0 ? 0 : 1;   // one row only
  f += lowbit_v2_int4_fused_supports(1, 1, 28672, 7, 0, 1) == 0 ? 0 : 1;   // the residual add in bfloat16 only
  f += lowbit_v2_int4_fused_supports(0, 1, 32832, 7, 0, 0) == 0 ? 0 : 1;   // K <= 32,768
  f += lowbit_v2_int4_fused_supports(0, 1, 28672, 1, 0, 0) == 0 ? 0 : 1;   // int4-v2 itself still stops at 16,384
  printf(f == 0 ? "ok\n" : "FAIL\n");
  return f == 0 ? 0 : 1;
}

// int4-v2-h2c (geometry 19: -h2s at one row with K split over the blocks of a cluster, which add each other's sums
// through their shared memory), offered only with LOWBIT_INT4_CLUSTER=1 (read once per process): run.sh runs this
// binary with the variable set and this argument. The emulation runs a cluster's blocks together (their own shared
// memory, one cluster barrier). Several tiles per block, several clusters, a tail tile, 2 to 7 splits of 65 to 128
// chunks, plain in both dtypes, with the residual and with SiLU·mul + residual (the decode step's down projection), and
// more tiles than one resident cluster may keep (38: two clusters).
int cluster() {
  int f = 0;
  f += run_fused(1, 37, 11008, 64, 3, 19, 0, false);    // one cluster of 3 blocks: five tiles each
  f += run_fused(1, 45, 11008, 64, 7, 19, 0, true);     // two clusters, a tail tile
  f += run_fused(1, 29, 11008, 64, 6, 19, 2, true);     // SiLU·mul + residual
  f += run_fused(1, 29, 13824, 128, 4, 19, 0, true);    // 4 splits
  f += run_fused(1, 19, 28672, 64, 7, 19, 0, false);    // 7 splits
  f += run_fused(1, 21, 4160, 64, 2, 19, 0, false);     // 2 splits of 65 chunks
  f += run_fused(1, 300, 11008, 64, 3, 19, 0, false);   // 38 tiles: two clusters though one fits
  f += run_mma_fp16(1, 23, 11008, 128, 3, 19);
  f += lowbit_v2_int4_fused_supports(0, 1, 4096, 19, 0, 0) == 0 ? 0 : 1;    // K <= 4,096: -h2s itself
  f += lowbit_v2_int4_fused_supports(0, 2, 11008, 19, 0, 0) == 0 ? 0 : 1;   // one row
  f += lowbit_v2_int4_fused_supports(0, 1, 11008, 19, 1, 0) == 0 ? 0 : 1;   // no RMSNorm prologue
  f += lowbit_v2_int4_fused_supports(1, 1, 11008, 19, 0, 1) == 0 ? 0 : 1;   // the residual add in bf16 only
  f += lowbit_v2_int4_fused_supports(0, 1, 32800, 19, 0, 0) == 0 ? 0 : 1;   // at most 8 splits
  f += lowbit_v2_int4_workspace(1, 37, 11008, 19) == 0 ? 0 : 1;            // no workspace, no counters
  printf(f == 0 ? "ok\n" : "FAIL\n");
  return f == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "shared-long") == 0) return shared_long();
  if (argc > 1 && strcmp(argv[1], "half2-wide") == 0) return half2_wide();
  if (argc > 1 && strcmp(argv[1], "cluster") == 0) return cluster();
  // int4-v2-h2c is opt-in (LOWBIT_INT4_CLUSTER=1): not offered without it.
  if (lowbit_v2_int4_fused_supports(0, 1, 11008, 19, 0, 0) != 0) { printf("int4-v2-h2c offered without LOWBIT_INT4_CLUSTER=1\n"); return 1; }
  if (argc > 1 && strcmp(argv[1], "norm-rounded") == 0) return norm_rounded();
  // int4-mma's fused variants at 3-8 rows (opt-in on the GPU until timed there): checked here.
  setenv("LOWBIT_MMA_FUSED_ROWS", "8", 1);
  int f = 0;
  // Not taken: 3 rows at K = 11008 (two chunks per thread), 5 rows.
  f += lowbit_launch_int4_v2(0, nullptr, 0, nullptr, nullptr, nullptr, nullptr, 0, 3, 8, 11008, 64, nullptr) == -3 ? 0 : 1;
  f += lowbit_launch_int4_v2(0, nullptr, 0, nullptr, nullptr, nullptr, nullptr, 0, 5, 8, 4096, 64, nullptr) == -3 ? 0 : 1;
  f += run(1, 20, 4096, 64, 2, 0);
  f += run(2, 13, 4096, 128, 1, 8);
  f += run(1, 9, 11008, 64, 1, 0);
  f += run(2, 17, 11008, 128, 1, 0);
  f += run(1, 33, 5120, 128, 3, 0);
  f += run(1, 3, 16384, 64, 1, 0);
  f += run(3, 21, 4096, 64, 1, 8);
  f += run(4, 9, 4096, 128, 1, 0);
  f += run(4, 5, 2048, 64, 1, 0);
  f += run_fused(1, 101, 4096, 64, 2, 3, 0, false);  // the wide geometry (128 threads, 32 codes per chunk), plain
  f += run_fused(2, 33, 4096, 128, 2, 3, 0, false);
  f += run_fused(1, 19, 11008, 64, 2, 3, 0, false);
  f += run_fused(1, 77, 4096, 64, 2, 5, 0, false);   // int4-v2-occ (one row, one chunk per thread)
  f += run_fused(1, 33, 4096, 128, 3, 5, 1, false);
  f += run_fused(1, 29, 4096, 64, 2, 5, 2, true);
  f += run_fused(1, 101, 4096, 64, 2, 7, 0, false);  // int4-v2-shared (activations in shared memory, quad scales)
  f += run_fused(2, 37, 4096, 128, 3, 7, 0, false);
  f += run_fused(1, 45, 4096, 64, 2, 7, 1, false);
  f += run_fused(2, 21, 2048, 64, 2, 7, 0, true);
  f += run_fused(1, 19, 2752, 64, 3, 7, 2, true);
  f += run_fused(1, 23, 11008, 64, 3, 7, 0, false);  // int4-v2-shared at 2-3 chunks per thread (one row)
  f += run_fused(1, 17, 8192, 128, 2, 7, 1, false);
  f += run_fused(1, 23, 11264, 64, 3, 7, 1, false);  // the deferred RMSNorm at three chunks (the most -shared's memory takes)
  f += lowbit_v2_int4_fused_supports(0, 1, 11328, 7, 0, 0) == 0 ? 0 : 1;   // past 44 KB of activations: not offered
  f += lowbit_v2_int4_fused_supports(0, 1, 28672, 7, 0, 1) == 0 ? 0 : 1;   // past three chunks: not with LOWBIT_INT4_SHARED_LONG=0 (run.sh)
  f += run_fused(1, 13, 11008, 64, 2, 7, 2, true);
  f += run_fused(2, 45, 11008, 128, 2, 1, 0, false);
  f += run_fused(1, 29, 4096, 64, 3, 1, 1, false);   // RMSNorm prologue (the QKV and gate/up projections)
  f += run_fused(1, 21, 8192, 128, 2, 3, 1, false);
  f += run_fused(1, 19, 4096, 64, 2, 3, 0, true);    // residual add (the output projection)
  f += run_fused(2, 23, 4096, 128, 3, 1, 0, true);
  f += run_fused(1, 17, 2752, 64, 2, 1, 2, true);    // SiLU·mul prologue and residual add (the down projection)
  f += run_fused(1, 13, 11008, 64, 3, 3, 2, true);
  f += run_fused(2, 13, 11008, 64, 3, 1, 2, true);
  // The fused gate/up projection's paired rows and SiLU·mul epilogue (one row, the int4-v2 kernel's geometries): N not a
  // multiple of the tile, several tiles per block, K of one and three chunks per thread.
  f += run_fused(1, 102, 4096, 64, 2, 3, 3, false);
  f += run_fused(1, 38, 4096, 128, 1, 1, 3, false);
  f += run_fused(1, 22, 2048, 64, 2, 1, 3, false);
  f += lowbit_v2_int4_fused_supports(0, 1, 4096, 5, 3, 0) == 0 ? 0 : 1;   // nor int4-v2-occ
  f += run_fused(1, 30, 11008, 64, 3, 3, 3, false);
  // The deferred RMSNorm at 2-4 chunks per thread (the norm weight loaded with x after the wait: a 13B's K = 5,120, a
  // 70B's 8,192, K past 12,288): int4-v2 and -wide, the q/k/v prologue; the paired rows there round as rmsnorm_kernel
  // (deferred only at one chunk per thread).
  f += run_fused(1, 27, 5120, 128, 2, 1, 1, false);
  f += run_fused(1, 21, 16384, 64, 2, 1, 1, false);
  f += run_fused(1, 46, 8192, 64, 3, 1, 3, false);
  f += run_fused(1, 25, 5120, 64, 2, 3, 1, false);
  f += run_fused(1, 42, 12288, 128, 3, 3, 3, false);
  f += lowbit_v2_int4_fused_supports(0, 1, 4096, 7, 3, 0) == 0 ? 0 : 1;   // not the shared or tensor-core kernels
  f += lowbit_v2_int4_fused_supports(0, 1, 4096, 9, 3, 0) == 0 ? 0 : 1;
  f += lowbit_v2_int4_fused_supports(0, 2, 4096, 3, 3, 0) == 0 ? 0 : 1;   // one row only
  // int4-v2-h2 (geometry 13: -wide's layout, packed fp16 products): one row at one chunk per thread (K <= 4,096), every
  // fused variant, fp16 activations, a range of magnitudes past fp16's.
  f += run_fused(1, 101, 4096, 64, 2, 13, 0, false);
  f += run_fused(1, 9, 2048, 128, 1, 13, 0, false);
  f += run_fused(1, 29, 4096, 64, 3, 13, 1, false);
  f += run_fused(1, 19, 4096, 128, 2, 13, 0, true);
  f += run_fused(1, 13, 4096, 64, 3, 13, 2, true);
  f += run_fused(1, 102, 4096, 64, 2, 13, 3, false);
  f += run_fused(1, 30, 2048, 64, 3, 13, 3, false);
  f += run_mma_fp16(1, 37, 4096, 64, 2, 13);
  f += run_h2_range(45, 4096, 64, 2);
  f += run_h2_range(17, 3072, 128, 1);
  f += run_fused(1, 101, 4096, 64, 2, 15, 0, false);   // int4-v2-h2s (geometry 15: the codes as fp16 subnormals)
  f += run_fused(1, 29, 4096, 64, 3, 15, 1, false);
  f += run_fused(1, 19, 4096, 128, 2, 15, 0, true);
  f += run_fused(1, 13, 4096, 64, 3, 15, 2, true);
  f += run_fused(1, 102, 4096, 64, 2, 15, 3, false);
  f += run_mma_fp16(1, 37, 2048, 128, 2, 15);
  f += lowbit_v2_int4_fused_supports(0, 2, 4096, 13, 0, 0) == 0 ? 0 : 1;   // one row only
  f += lowbit_v2_int4_fused_supports(0, 1, 4128, 15, 0, 0) == 0 ? 0 : 1;   // one chunk per thread (K <= 4,096) by default
  // 2-3 chunks per thread (K <= 12,288): offered with LOWBIT_INT4_HALF2=2 only, checked by `emulate half2-wide`.
  f += lowbit_v2_int4_fused_supports(0, 1, 4112, 13, 0, 0) == 0 ? 0 : 1;   // K % 32
  // int4-mma (tensor cores, 16-row tiles, 1-8 activation rows): tail tiles, several tiles per block, dead units past
  // K / 64 (K = 11,008: 172 groups over 8 warps), groups of 128 and 256, both dtypes, the fused variants.
  f += run_fused(1, 101, 4096, 64, 2, 9, 0, false);
  f += run_fused(2, 37, 4096, 128, 2, 9, 0, false);
  f += run_fused(1, 23, 11008, 64, 1, 9, 0, false);
  f += run_fused(3, 19, 2048, 64, 1, 9, 0, false);
  f += run_fused(5, 17, 1024, 128, 2, 9, 0, false);
  f += run_fused(8, 33, 2048, 64, 1, 9, 0, false);
  f += run_fused(1, 45, 4096, 64, 3, 9, 1, false);
  f += run_fused(2, 29, 4096, 128, 2, 9, 1, false);
  f += run_fused(1, 21, 4096, 64, 2, 9, 0, true);
  f += run_fused(1, 13, 11008, 64, 2, 9, 2, true);
  f += run_fused(2, 11, 2816, 64, 2, 9, 2, true);
  f += run_fused(1, 7, 256, 64, 1, 9, 0, false);     // one round in all: warps 1-7 have no groups
  f += run_fused(1, 17, 11008, 128, 1, 9, 2, true);
  f += run_fused(3, 27, 4096, 64, 2, 9, 1, false);     // the fused variants at 3-8 rows (LOWBIT_MMA_FUSED_ROWS)
  f += run_fused(4, 19, 2048, 128, 1, 9, 0, true);
  f += run_fused(6, 23, 2816, 64, 2, 9, 2, true);
  f += run_fused(8, 17, 4096, 64, 3, 9, 1, false);
  f += run_fused(8, 13, 11008, 64, 1, 9, 2, true);    // a 7B's down projection at 8 rows: 204 KB of shared memory
  f += lowbit_v2_int4_fused_supports(0, 8, 11008, 9, 0, 0) == 1 ? 0 : 1;
  // 8 rows at K = 14,336 take 238 KB, over the 227 KB a block may have: two launches of 4 rows, each on its rows of x,
  // the output and the residual.
  f += lowbit_v2_int4_fused_supports(0, 8, 14336, 9, 0, 0) == 1 ? 0 : 1;
  f += run_fused(8, 9, 14336, 64, 1, 9, 2, true);
  // More than 8 rows: slices of 8 (12 = 8 + 4, 20 = 8 + 8 + 4), plain only (the fused variants stop at 8 rows).
  f += run_fused(12, 37, 4096, 64, 2, 9, 0, false);
  f += run_fused(20, 19, 2048, 128, 1, 9, 0, false);
  // int4-mma16 (geometry 11): 16 activation rows per launch, two B column sets per A fragment; 9-32 rows, a tail of 8 or
  // fewer as int4-mma; plain only, where 16 rows' activations fit.
  f += run_fused(16, 37, 4096, 64, 2, 11, 0, false);
  f += run_fused(20, 19, 2048, 128, 1, 11, 0, false);   // 16 + 4
  f += run_fused(32, 17, 1024, 64, 1, 11, 0, false);    // 16 + 16
  f += run_fused(11, 21, 4096, 128, 1, 11, 0, false);   // 11 rows in one launch, 11 of 16 columns live
  f += lowbit_v2_int4_workspace(16, 100, 4096, 11) == 0 ? 0 : 1;            // K = 4,096 fits: no splits
  // Past K = 4,096 in K splits, each block staging one split's activations: 4,352 in two (2,048 + 2,304), a 7B's down
  // projection (11,008) in three (3,584 + 3,584 + 3,840), one tile of 16 x 16 fp32 per split and row tile. Fewer blocks
  // than splits (one SM), several tiles per block, tail tiles, a tail of 4 rows as int4-mma.
  f += lowbit_v2_int4_workspace(16, 4096, 11008, 11) == 256 * 3 * 256 ? 0 : 1;
  f += lowbit_v2_int4_arrivals(16, 4097, 11008, 11) == 257 ? 0 : 1;
  f += lowbit_v2_int4_workspace(16, 100, 4352, 11) == 7 * 2 * 256 ? 0 : 1;
  f += run_fused(16, 37, 4352, 64, 2, 11, 0, false);
  f += run_fused(20, 21, 11008, 64, 1, 11, 0, false);
  f += run_fused(12, 45, 5120, 128, 3, 11, 0, false);
  f += lowbit_launch_int4_v2_fused(0, nullptr, 0, nullptr, nullptr, nullptr, nullptr, 0, 16, 8, 11008, 64, 11, 0, nullptr, 0.f, nullptr, 0,
                                   nullptr, nullptr, nullptr) == -3 ? 0 : 1;   // splits without a workspace: refused
  f += lowbit_v2_int4_fused_supports(0, 8, 4096, 11, 0, 0) == 0 ? 0 : 1;    // 8 rows: int4-mma's
  f += lowbit_v2_int4_fused_supports(0, 16, 4096, 11, 1, 0) == 0 ? 0 : 1;   // no fused variants
  f += lowbit_v2_int4_fused_supports(0, 33, 4096, 11, 0, 0) == 0 ? 0 : 1;
  f += run_mma_fp16(1, 35, 4096, 64, 2, 9);
  f += run_mma_fp16(4, 18, 2048, 128, 1, 9);
  f += run_mma_fp16(7, 9, 1024, 64, 1, 9);
  f += run_mma_fp16(2, 21, 2048, 128, 2, 9);
  f += run_mma_fp16(17, 9, 1024, 64, 1, 9);
  f += run_mma_fp16(24, 9, 1024, 128, 1, 11);   // int4-mma16 in fp16: 16 + 8
  f += run_mma_fp16(16, 19, 4608, 64, 2, 11);   // and in K splits (2,304 + 2,304)
  // Not taken by int4-mma: 33 rows, a fused variant past 8 rows, K % 256 != 0, fp16 fused, groups other than 64 and
  // 128 (checked at launch).
  f += lowbit_v2_int4_fused_supports(0, 32, 4096, 9, 0, 0) == 1 ? 0 : 1;
  f += lowbit_v2_int4_fused_supports(0, 33, 4096, 9, 0, 0) == 0 ? 0 : 1;
  f += lowbit_v2_int4_fused_supports(0, 9, 4096, 9, 1, 0) == 0 ? 0 : 1;
  f += lowbit_launch_int4_v2_fused(0, nullptr, 0, nullptr, nullptr, nullptr, nullptr, 0, 1, 8, 4096, 256, 9, 0, nullptr, 0.f, nullptr, 0, nullptr, nullptr, nullptr) == -3 ? 0 : 1;
  f += lowbit_v2_int4_fused_supports(0, 1, 4128, 9, 0, 0) == 0 ? 0 : 1;
  f += lowbit_v2_int4_fused_supports(1, 1, 4096, 9, 1, 0) == 0 ? 0 : 1;
  f += lowbit_launch_int4_v2_fused(0, nullptr, 0, nullptr, nullptr, nullptr, nullptr, 0, 1, 8, 3072, 96, 9, 0, nullptr, 0.f, nullptr, 0, nullptr, nullptr, nullptr) == -3 ? 0 : 1;
  f += run_rope_kv(1, 4, 4, 128, 9);
  f += run_rope_kv(3, 8, 2, 64, 5);
  f += run_dense(1, 21, 4096, 2, 0);
  f += run_dense(2, 13, 11008, 1, 8);
  f += run_dense(3, 9, 4096, 1, 0);
  f += run_dense(8, 17, 4096, 2, 16);
  f += run_dense(5, 6, 2048, 1, 0);
  f += run_dense(1, 5, 16384, 1, 0);
  f += run_dense(4, 7, 8192, 1, 0);
  f += run_dequantize(0, 37, 256, 64, 2);
  f += run_dequantize(1, 19, 384, 128, 1);
  f += run_dequantize(0, 300, 4096, 64, 3);
  f += lowbit_launch_int4_dequantize_v2(0, nullptr, nullptr, nullptr, nullptr, 8, 100, 32, nullptr) == -3 ? 0 : 1;
  f += run_attention(1, 4, 1, 128, 300, 256, 2);
  f += run_attention(3, 2, 4, 128, 130, 128, 3);
  f += run_attention(2, 2, 3, 64, 70, 64, 1);
  f += run_attention(1, 4, 1, 128, 300, 256, 64);   // 16 splits of 16 positions
  f += run_attention(8, 4, 1, 64, 210, 200, 1);     // one split of 200: 12-13 rounds per warp through both register sets
  f += run_attention(2, 2, 4, 128, 100, 97, 1);     // one split of 97 with grouped heads: 6-7 rounds, a partial last one
  f += run_attention(2, 2, 2, 128, 200, 160, 16);   // 10 splits, the last row past the bucket
  f += run_attention(4, 2, 1, 64, 40, 32, 1);       // one split: the blocks write the output themselves
  f += run_greedy(1000);
  f += run_greedy(32000);
  f += lowbit_v2_attention_splits(1, 8, 9, 128, 64) == 0 ? 0 : 1;
  f += lowbit_v2_attention_splits(1, 8, 1, 96, 64) == 0 ? 0 : 1;
  // Not taken: 8 rows at K = 11008 (three chunks per thread), 9 rows, K over 16384.
  f += lowbit_launch_gemv_v2(0, nullptr, 0, nullptr, nullptr, 0, 1, 8, 28672, nullptr) == -3 ? 0 : 1;
  f += lowbit_launch_gemv_v2(0, nullptr, 0, nullptr, nullptr, 0, 8, 8, 11008, nullptr) == -3 ? 0 : 1;
  f += lowbit_launch_gemv_v2(0, nullptr, 0, nullptr, nullptr, 0, 9, 8, 4096, nullptr) == -3 ? 0 : 1;
  printf("%s\n", f ? "FAIL" : "ok");
  return f;
}
