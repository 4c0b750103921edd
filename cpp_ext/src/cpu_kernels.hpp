// CPU kernels of the fraud scorer: feature preprocessing and the Linear/ReLU MLP, without LibTorch.
//
// Why not ATen on the CPU: at the batch sizes the job scores (tens to a few thousand rows) a 3-layer MLP through
// ATen paid its per-op dispatch (20 us against our 8 us for one row, the whole call), and a scalar std::log1p loop
// cost 27 ns per value against 3.6 ns vectorised. These
// kernels are compiled once per instruction set (cpu_kernels_impl.inc: AVX-512, AVX2+FMA, baseline SSE2) and picked
// at run time from what the CPU supports, so one wheel serves every x86-64 machine.
//
// Layouts: the preprocessed input is feature-major, [d][ld] floats (one contiguous run per feature, so
// preprocessing vectorises per column); hidden activations are row-major [rows][ld]. Layer widths are padded to
// kWidthPad with zero weights and biases, so padded lanes hold relu(0) = 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ss::cpu {

constexpr int kWidthPad = 16;  // floats per AVX-512 vector: widths padded to this suit every kernel

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// One hidden Linear layer, transposed and padded: wt is [in][out_pad], bias [out_pad]; lanes out..out_pad are 0.
struct Layer {
  int in = 0, out = 0, out_pad = 0;
  std::vector<float> wt;
  std::vector<float> bias;
};

// Per-instruction-set entry points (cpu_kernels_impl.inc, compiled into namespaces avx512 / avx2 / generic).
struct Kernels {
  const char* isa;
  // dst[i] = clip((f(src[i]) - mean) / sd, -clip, clip) with f = log1p(max(., 0)) when log1p, else identity;
  // computed in double, stored as float. Returns the first row whose value is not finite, or -1 (dst complete).
  int64_t (*preprocess_f32)(const float* src, int64_t n, bool log1p, double mean, double sd, double clip,
                            float* dst);
  // out[r * ld_out + j] = act(sum_{k < in} in[r * rs + k * cs] * wt[k][j] + bias[j]) for r < rows,
  // j < out_pad; act = relu when relu, else identity. rs/cs let the first layer read the
  // feature-major input (rs 1, cs ld) and later ones row-major activations (rs ld, cs 1).
  void (*linear)(const float* in, int64_t rs, int64_t cs, int64_t rows, const Layer& layer, bool relu, float* out,
                 int64_t ld_out);
  // out[r] = sigmoid(sum_k in[r * ld + k] * w[k] + b) for r < n, k < k_pad (the one-logit output layer).
  void (*logit_sigmoid)(const float* in, int64_t ld, int64_t n, const float* w, int64_t k_pad, float b, float* out);
};

// The instruction sets this CPU runs, best first, among those compiled in ("avx512", "avx2", "generic").
std::vector<std::string> available_isas();
// "auto" -> the best available; otherwise that ISA (throws std::invalid_argument when unknown or unsupported).
const Kernels& kernels(const std::string& isa);

}  // namespace ss::cpu
