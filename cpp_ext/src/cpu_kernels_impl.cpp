// The CPU kernels for one instruction set. CMake compiles this file once per ISA with SS_ISA (avx512 | avx2 |
// generic), SS_VBYTES (vector width in bytes) and SS_COLS (vectors per register tile) defined and matching -m flags;
// cpu_kernels.cpp picks one at run time. GCC vector extensions keep the code portable: the same source becomes
// zmm, ymm or xmm code depending on the flags. -ffp-contract=fast lets the multiply-adds fuse.
#include <cmath>
#include <cstring>

#include "cpu_kernels.hpp"

#ifndef SS_ISA
#error "SS_ISA must be defined (avx512 | avx2 | generic)"
#endif
#define SS_STR2(x) #x
#define SS_STR(x) SS_STR2(x)

namespace ss::cpu::SS_ISA {

namespace {

typedef float vf __attribute__((vector_size(SS_VBYTES)));
constexpr int L = SS_VBYTES / 4;  // lanes
constexpr int R = SS_ROWS;        // rows per register tile
constexpr int C = SS_COLS;        // vectors per tile
static_assert(kWidthPad % L == 0, "widths are padded to a multiple of every ISA's lane count");

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// log1p for finite x >= 0, branch-free so the column loop vectorises (std::log1p does not). log(u) of u = 1 + x from
// u = m * 2^e with m in [sqrt(1/2), sqrt(2)) and log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716 (series
// to s^17: truncation below 1e-14); then the rounding of 1 + x is corrected: log1p(x) = log(u) + (x - (u - 1)) / u.
// Double precision, as the reference: the float32 result then matches it to the last bit almost always.
inline double log1p_pos(double x) {
  const double u = 1.0 + x;
  uint64_t bits;
  std::memcpy(&bits, &u, 8);
  const uint64_t ix = bits - 0x3fe6a09e667f3bcdULL;  // sqrt(1/2); u >= 1, so no wrap-around
  const uint64_t eb = 0x4330000000000000ULL | (ix >> 52);  // 2^52 + e as a double: an exact int -> double
  double e;
  std::memcpy(&e, &eb, 8);
  e -= 4503599627370496.0;
  const uint64_t mb = (ix & 0x000fffffffffffffULL) + 0x3fe6a09e667f3bcdULL;
  double m;
  std::memcpy(&m, &mb, 8);
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  const double series =
      z * (2.0 / 3 + z * (2.0 / 5 + z * (2.0 / 7 + z * (2.0 / 9 + z * (2.0 / 11 + z * (2.0 / 13 + z * (2.0 / 15 +
                                                                                                      z * (2.0 / 17))))))));
  const double logu = e * 6.93147180369123816490e-01 + (2.0 * s + s * series + e * 1.90821492927058770002e-10);
  return logu + (x - (u - 1.0)) / u;
}

int64_t preprocess_f32(const float* src, int64_t n, bool log1p, double mean, double sd, double clip, float* dst) {
  // Non-finite check first, as a bit test the compiler vectorises (std::isfinite does not).
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, src + i, 4);
    bad |= static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
  }
  if (bad) {
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(src[i])) return i;
  }
  if (log1p) {
    // Two passes: GCC 12 does not vectorise the clamp at 0 and log1p_pos in one loop ("control flow in loop").
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i] > 0.0f ? src[i] : 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      double v = (log1p_pos(dst[i]) - mean) / sd;
      v = v < -clip ? -clip : v;
      dst[i] = static_cast<float>(v > clip ? clip : v);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      double v = (static_cast<double>(src[i]) - mean) / sd;
      v = v < -clip ? -clip : v;
      dst[i] = static_cast<float>(v > clip ? clip : v);
    }
  }
  return -1;
}

// One RR x (CN * L) output tile: bias, then a rank-1 update per input feature, then ReLU; the RR * CN accumulators
// stay in registers (R and C per ISA: as many as the register file holds beside CN weight vectors and a broadcast).
template <int RR, int CN>
inline void tile(const float* in, int64_t rs, int64_t cs, int k, const float* wt, int64_t ldw, const float* bias,
                 bool relu, float* out, int64_t ld_out) {
  vf acc[RR][CN];
  for (int c = 0; c < CN; ++c) {
    const vf b = load(bias + c * L);
    for (int r = 0; r < RR; ++r) acc[r][c] = b;
  }
  for (int kk = 0; kk < k; ++kk) {
    vf w[CN];
    for (int c = 0; c < CN; ++c) w[c] = load(wt + kk * ldw + c * L);
    for (int r = 0; r < RR; ++r) {
      const float a = in[r * rs + kk * cs];
      for (int c = 0; c < CN; ++c) acc[r][c] += a * w[c];
    }
  }
  const vf zero = {};
  for (int r = 0; r < RR; ++r)
    for (int c = 0; c < CN; ++c) store(out + r * ld_out + c * L, relu ? (acc[r][c] > zero ? acc[r][c] : zero) : acc[r][c]);
}

template <int RR>
inline void row_tiles(const float* in, int64_t rs, int64_t cs, const Layer& layer, bool relu, float* out,
                      int64_t ld_out) {
  const int k = layer.in;
  const int64_t ldw = layer.out_pad;
  int64_t j = 0;
  for (; j + C * L <= layer.out_pad; j += C * L)
    tile<RR, C>(in, rs, cs, k, layer.wt.data() + j, ldw, layer.bias.data() + j, relu, out + j, ld_out);
  for (; j < layer.out_pad; j += L)
    tile<RR, 1>(in, rs, cs, k, layer.wt.data() + j, ldw, layer.bias.data() + j, relu, out + j, ld_out);
}

void linear(const float* in, int64_t rs, int64_t cs, int64_t rows, const Layer& layer, bool relu, float* out,
            int64_t ld_out) {
  int64_t r0 = 0;
  for (; r0 + R <= rows; r0 += R) row_tiles<R>(in + r0 * rs, rs, cs, layer, relu, out + r0 * ld_out, ld_out);
  for (; r0 < rows; ++r0) row_tiles<1>(in + r0 * rs, rs, cs, layer, relu, out + r0 * ld_out, ld_out);
}

void logit_sigmoid(const float* in, int64_t ld, int64_t n, const float* w, int64_t k_pad, float b, float* out) {
  for (int64_t r = 0; r < n; ++r) {
    vf acc = {};
    const float* x = in + r * ld;
    for (int64_t k = 0; k < k_pad; k += L) acc += load(x + k) * load(w + k);
    float z = b;
    for (int l = 0; l < L; ++l) z += acc[l];
    // Stable in both directions: exp of a non-positive number only (as the numpy reference).
    const float e = std::exp(-std::fabs(z));
    out[r] = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
  }
}

}  // namespace

extern const Kernels kKernels;
const Kernels kKernels = {SS_STR(SS_ISA), &preprocess_f32, &linear, &logit_sigmoid};

}  // namespace ss::cpu::SS_ISA
