// The precision of fp16 partial sums in the one-row int4 GEMV (docs/gpu.md, plan item 2): a CPU simulation, not a
// kernel. Per output: K = 4,096 bf16 activations (N(0, 1) or N(0, 30²), four outliers ×20), int4 codes, g64 fp16
// scales and integer zeros; against a float64 reference, the present design (one fp32 FMA per code, the zero term
// per group) and fp16 partial sums over 2, 4 or 8 centred codes (q − 8; one fp16 FMA each, as an HFMA2 would make)
// added into fp32 per group. Prints the normwise error ||y − ref|| / ||ref|| over 400 outputs per activation scale.
// Build and run: g++ -O2 -std=c++17 tools/int4-fp16-partials.cpp -o /tmp/p && /tmp/p
// Session 22: fp32 1.4e-7; fp16 partials 1.2e-4 (2 codes) to 2.8e-4 (8); the bf16 output's own rounding is ~1e-3.
// Session 23: 8 uncentred codes (int4-v2-h2s) 5.4-5.7e-4 (uniform codes here; RTN codes of Gaussian weights crowd the
// middle, which makes the uncentred partials larger against the centred result: ~3x the centred error on the GPU).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

constexpr int kK = 4096;
constexpr int kGroup = 64;
constexpr int kOutputs = 400;

float to_bf16(float a) {
  uint32_t u;
  std::memcpy(&u, &a, 4);
  u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

float to_fp16(float a) { return static_cast<float>(static_cast<_Float16>(a)); }

struct Row {
  std::vector<float> x;
  std::vector<int> q;
  std::vector<float> scale, zero;
};

Row random_row(std::mt19937& rng, float activation_scale) {
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> code(0, 15);
  std::uniform_real_distribution<float> uniform(0, 1);
  Row row{std::vector<float>(kK), std::vector<int>(kK), std::vector<float>(kK / kGroup), std::vector<float>(kK / kGroup)};
  for (auto& v : row.x) v = to_bf16(normal(rng) * activation_scale);
  for (int t = 0; t < 4; t++) {
    auto& v = row.x[rng() % kK];
    v = to_bf16(v * 20);
  }
  for (auto& v : row.q) v = code(rng);
  for (int g = 0; g < kK / kGroup; g++) {
    row.scale[g] = to_fp16(uniform(rng) * 0.02f + 0.005f);
    row.zero[g] = static_cast<float>(code(rng));
  }
  return row;
}

double reference(const Row& r) {
  double sum = 0;
  for (int i = 0; i < kK; i++) sum += static_cast<double>(r.x[i]) * ((r.q[i] - static_cast<double>(r.zero[i / kGroup])) * r.scale[i / kGroup]);
  return sum;
}

// partial == 0: fp32 FMA per code (int4-v2, -wide, -shared); else fp16 partial sums over `partial` codes, centred
// (q - 8, int4-v2-h2) or not (q, int4-v2-h2s: the codes as fp16 subnormals).
float kernel(const Row& r, int partial, bool centred = true) {
  const float offset = partial == 0 || !centred ? 0.f : 8.f;
  float acc = 0;
  for (int g = 0; g < kK / kGroup; g++) {
    float d = 0, sum_x = 0;
    for (int i = g * kGroup; i < (g + 1) * kGroup; i++) sum_x += r.x[i];
    if (partial == 0) {
      for (int i = g * kGroup; i < (g + 1) * kGroup; i++) d = std::fma(r.x[i], static_cast<float>(r.q[i]), d);
    } else {
      for (int i0 = g * kGroup; i0 < (g + 1) * kGroup; i0 += partial) {
        float p = 0;
        for (int i = i0; i < i0 + partial; i++) p = to_fp16(std::fma(to_fp16(r.x[i]), static_cast<float>(r.q[i]) - offset, p));
        d += p;
      }
    }
    acc = std::fma(r.scale[g], d - (r.zero[g] - offset) * sum_x, acc);
  }
  return acc;
}

}  // namespace

int main() {
  std::mt19937 rng(1);
  const int partials[] = {0, 2, 4, 8};
  for (float activation_scale : {1.0f, 30.0f}) {
    double ref2 = 0, err2[5] = {};
    for (int n = 0; n < kOutputs; n++) {
      const Row row = random_row(rng, activation_scale);
      const double ref = reference(row);
      ref2 += ref * ref;
      for (int p = 0; p < 4; p++) {
        const double e = kernel(row, partials[p]) - ref;
        err2[p] += e * e;
      }
      const double u = kernel(row, 8, false) - ref;
      err2[4] += u * u;
    }
    std::printf("activations N(0, %g²): ||err|| / ||ref|| fp32 %.2e, fp16 partials of 2 %.2e, of 4 %.2e, of 8 %.2e, of 8 uncentred %.2e\n",
                activation_scale, std::sqrt(err2[0] / ref2), std::sqrt(err2[1] / ref2), std::sqrt(err2[2] / ref2),
                std::sqrt(err2[3] / ref2), std::sqrt(err2[4] / ref2));
  }
}
