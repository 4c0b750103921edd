// streamscore native scorer: a generic TorchScript Model and the FraudScorer (normalisation + MLP) on LibTorch.
//
// Nothing in this header or scorer.cpp touches Python: the pybind11 layer (bindings.cpp) validates Python objects,
// takes raw pointers to the caller's buffers while holding the GIL, and calls into these classes with the GIL
// released.
//
// Thread safety: after construction, Model::forward and FraudScorer::score are safe to call concurrently from any
// number of threads. The TorchScript module and the MLP parameters are never mutated after construction; every
// call takes its own staging buffer from a mutex-protected pool (a buffer is reused only once the call that held it
// has returned, so steady-state scoring allocates no staging memory). Construction and destruction must not race
// with calls (the Python wrapper guarantees this by holding a reference for the duration of a call).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/script.h>

#include "cpu_kernels.hpp"

namespace ss {

// Error messages are built with std::to_string and snprintf, never iostreams: on an H100 host (Python 3.12, numpy
// 2.5.2, torch 2.11) writing an integer to a std::ostringstream in this module crashed the process, so a malformed
// column killed the caller instead of raising ValueError.
template <class It>
std::string join_ints(It begin, It end) {
  std::string s;
  for (It i = begin; i != end; ++i) s += (i == begin ? "" : ", ") + std::to_string(*i);
  return s;
}
std::string format_double(double v);

// Error kinds the Python layer maps to builtin exceptions.
struct TypeError : std::runtime_error {        // -> TypeError
  using std::runtime_error::runtime_error;
};
struct ValueError : std::invalid_argument {    // -> ValueError
  using std::invalid_argument::invalid_argument;
};
struct FileNotFound : std::runtime_error {     // -> FileNotFoundError
  using std::runtime_error::runtime_error;
};
struct DeviceError : std::runtime_error {      // -> RuntimeError
  using std::runtime_error::runtime_error;
};

// "auto" -> cuda when LibTorch sees a CUDA device, else cpu; "cpu"; "cuda" / "cuda:N" (error when unavailable).
torch::Device resolve_device(const std::string& spec);
bool cuda_available();
int cuda_device_count();
void set_num_threads(int n);
int get_num_threads();

// A TorchScript module on one device.
class Model {
 public:
  Model(const std::string& path, const std::string& device);

  // Inputs are CPU tensors (possibly views of caller memory); they are moved to the model's device, and every
  // tensor in the output (tensor, tuple/list of tensors, or dict of str -> tensor) is returned on the CPU,
  // contiguous. Runs under c10::InferenceMode. No GIL needed.
  c10::IValue forward(const std::vector<at::Tensor>& inputs) const;

  const std::string& path() const { return path_; }
  const torch::Device& device() const { return device_; }
  std::string device_str() const { return device_.str(); }
  torch::jit::Module& module() const { return module_; }

 private:
  std::string path_;
  torch::Device device_;
  mutable torch::jit::Module module_;  // forward() is const for callers; the interpreter does not mutate it
};

// One input column as the caller's memory: `n` contiguous values of float32 or int64.
struct Column {
  enum class Kind { Float32, Int64 };
  const void* data = nullptr;
  Kind kind = Kind::Float32;
};

struct FeatureSpec {
  std::vector<std::string> names;
  std::vector<bool> log1p;
  std::vector<double> mean;
  std::vector<double> std;
  double clip = 0.0;
};

// The scorer: preprocessing (cpu_kernels, vectorised) and the MLP. On the CPU a Linear/ReLU chain runs on our own
// kernels (`cpu_kernel`: "auto" = the best ISA, or "avx512" / "avx2" / "generic"), or on LibTorch's matmuls with
// "aten"; on CUDA always through LibTorch. Any other module (or allow_fused = false) runs through forward().
class FraudScorer {
 public:
  FraudScorer(const std::string& model_path, FeatureSpec spec, const std::string& device, bool allow_fused = true,
              const std::string& cpu_kernel = "auto");
  ~FraudScorer();

  // Scores `n` rows given d columns (d = number of features, already validated by the caller to be of length n),
  // writing n float32 probabilities to `out`. Throws ValueError on a non-finite input value. No GIL needed.
  void score(const std::vector<Column>& columns, int64_t n, float* out) const;

  // The preprocessing step alone, into a row-major [n, d] float32 buffer (exposed for tests).
  void preprocess(const std::vector<Column>& columns, int64_t n, float* dst) const;

  int64_t input_width() const { return static_cast<int64_t>(spec_.names.size()); }
  const FeatureSpec& spec() const { return spec_; }
  const Model& model() const { return model_; }
  bool fast_path() const { return fast_ || own_; }
  // What runs the MLP: an ISA name (our CPU kernels), "aten" (LibTorch matmuls) or "torchscript" (forward()).
  std::string kernel() const { return own_ ? kern_->isa : (fast_ ? "aten" : "torchscript"); }
  // Largest |difference| from forward() on the probe batch at load (the check that enabled the fast path).
  double probe_max_diff() const { return probe_diff_; }

 private:
  struct Staging;
  struct StagingLease;
  std::unique_ptr<Staging> acquire(int64_t n) const;
  void release(std::unique_ptr<Staging> s) const;
  at::Tensor run_mlp(const at::Tensor& x, Staging& st) const;  // x: [n, d] on device
  // Our CPU kernels on n preprocessed rows, x(r, k) = in[r * rs + k * cs].
  void cpu_forward(const float* in, int64_t rs, int64_t cs, int64_t n, Staging& st, float* out) const;
  // Feature-major preprocessing into xcol [d][ld].
  void preprocess_cols(const std::vector<Column>& columns, int64_t n, float* xcol, int64_t ld) const;
  void probe();

  FeatureSpec spec_;
  Model model_;
  bool cuda_ = false;
  // The fused path: the module's Linear weights, used directly with preallocated outputs. Enabled only when the
  // module's parameters form a Linear/ReLU chain and the fused result matches module.forward() on a probe batch.
  bool allow_fused_ = true;
  bool fast_ = false;
  // Our CPU kernels: the hidden layers, the output layer as a padded weight vector, and the activations' stride.
  const cpu::Kernels* kern_ = nullptr;
  bool want_own_ = false;
  bool own_ = false;
  std::vector<cpu::Layer> layers_;
  std::vector<float> out_w_;
  float out_b_ = 0.0f;
  int64_t hidden_ld_ = 0;
  double probe_diff_ = 0.0;
  std::vector<at::Tensor> weights_t_;  // W_k^T, [in, out], contiguous, on device
  std::vector<at::Tensor> biases_;     // b_k, [out], on device
  mutable std::mutex pool_mu_;
  mutable std::vector<std::unique_ptr<Staging>> pool_;
};

}  // namespace ss
