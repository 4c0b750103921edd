// LibTorch side of the native scorer. See scorer.hpp for the contract and the thread-safety notes.
#include "scorer.hpp"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstdio>

namespace ss {

std::string format_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);  // what an ostream's default (6 significant digits) would print
  return buf;
}

namespace {

// c10::Error messages carry a C++ backtrace, and errors raised inside the TorchScript interpreter (which are not
// always c10::Error) a TorchScript traceback; callers get the error itself without either.
std::string torch_message(const std::exception& e) {
  const auto* ce = dynamic_cast<const c10::Error*>(&e);
  std::string msg = ce ? ce->what_without_backtrace() : e.what();
  if (msg.find("Traceback of TorchScript") != std::string::npos) {
    // The interpreter's message ends with the original error after the traceback: keep the last non-empty line.
    size_t end = msg.find_last_not_of(" \n");
    if (end != std::string::npos) {
      size_t start = msg.rfind('\n', end);
      msg = msg.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
    }
  }
  return msg;
}

// Tensor::to() only when a copy is needed (also keeps valgrind quiet about a std::optional read inside
// at::native::to_will_alias on no-op conversions).
at::Tensor to_cpu(const at::Tensor& t) { return t.device().is_cpu() ? t : t.to(torch::kCPU); }

std::string fmt_value(double v) {
  if (std::isnan(v)) return "nan";
  return v > 0 ? "inf" : "-inf";
}

}  // namespace

bool cuda_available() { return torch::cuda::is_available(); }
int cuda_device_count() { return static_cast<int>(torch::cuda::device_count()); }
void set_num_threads(int n) {
  if (n < 1) throw ValueError("set_num_threads: n must be >= 1, got " + std::to_string(n));
  at::set_num_threads(n);
}
int get_num_threads() { return at::get_num_threads(); }

torch::Device resolve_device(const std::string& spec) {
  if (spec == "auto") return cuda_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (spec == "cpu") return torch::Device(torch::kCPU);
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    torch::Device dev(torch::kCUDA, 0);
    try {
      dev = torch::Device(spec);
    } catch (const c10::Error& e) {
      throw ValueError("device " + spec + " is not a valid device: " + torch_message(e));
    }
    if (!cuda_available())
      throw DeviceError("device '" + spec + "' requested but CUDA is not available to LibTorch "
                        "(no GPU or driver); use device='auto' or 'cpu'");
    if (!dev.has_index()) dev = torch::Device(torch::kCUDA, 0);
    if (dev.index() >= cuda_device_count())
      throw DeviceError("device '" + spec + "' requested but only " + std::to_string(cuda_device_count()) +
                        " CUDA device(s) are visible");
    return dev;
  }
  throw ValueError("device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got '" + spec + "'");
}

// ---------------------------------------------------------------------------------------------------------------
// Model

Model::Model(const std::string& path, const std::string& device) : path_(path), device_(resolve_device(device)) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw FileNotFound("model file not found: " + path);
  try {
    module_ = torch::jit::load(path, device_);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot load TorchScript model " + path + ": " + torch_message(e));
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot load TorchScript model " + path + ": " + torch_message(e));
  }
  module_.eval();
}

namespace {

c10::IValue to_host(const c10::IValue& v) {
  if (v.isTensor()) return to_cpu(v.toTensor()).contiguous();
  if (v.isTuple()) {
    std::vector<c10::IValue> items;
    for (const auto& e : v.toTupleRef().elements()) items.push_back(to_host(e));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  if (v.isList()) {
    c10::impl::GenericList out(c10::AnyType::get());
    for (const c10::IValue& e : v.toListRef()) out.push_back(to_host(e));
    return out;
  }
  if (v.isGenericDict()) {
    c10::impl::GenericDict out(c10::StringType::get(), c10::AnyType::get());
    for (const auto& kv : v.toGenericDict()) {
      if (!kv.key().isString()) throw TypeError("model output dict keys must be strings");
      out.insert(kv.key(), to_host(kv.value()));
    }
    return out;
  }
  throw TypeError("model output must be a tensor, a tuple/list of tensors or a dict of tensors, got " +
                  v.tagKind());
}

}  // namespace

c10::IValue Model::forward(const std::vector<at::Tensor>& inputs) const {
  c10::InferenceMode guard;
  std::vector<c10::IValue> args;
  args.reserve(inputs.size());
  const bool cuda = device_.is_cuda();
  for (const auto& t : inputs) args.emplace_back(cuda ? t.to(device_) : t);
  try {
    return to_host(module_.forward(args));
  } catch (const TypeError&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error("model " + path_ + " failed: " + torch_message(e));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// FraudScorer

struct FraudScorer::Staging {
  int64_t cap = 0;
  std::vector<float> xcol;         // [d][cap] preprocessed input, feature-major
  std::vector<float> h0, h1;       // [cap][hidden_ld_] activations of our CPU kernels (ping-pong)
  at::Tensor host;                 // [cap, d] float32; pinned when the model is on CUDA
  at::Tensor dev_in;               // [cap, d] on the device (CUDA only)
  std::vector<at::Tensor> hidden;  // per fused layer output, [cap, out_k] on the device
};

std::unique_ptr<FraudScorer::Staging> FraudScorer::acquire(int64_t n) const {
  std::unique_ptr<Staging> s;
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (!pool_.empty()) {
      s = std::move(pool_.back());
      pool_.pop_back();
    }
  }
  if (!s) s = std::make_unique<Staging>();
  if (s->cap < n) {
    const int64_t cap = std::max<int64_t>(n, std::max<int64_t>(64, s->cap * 2));
    const int64_t d = input_width();
    s->xcol.assign(d * cap, 0.0f);
    s->h0.assign(cap * hidden_ld_, 0.0f);
    s->h1.assign(cap * hidden_ld_, 0.0f);
    s->cap = cap;
    if (own_) return s;  // LibTorch buffers are not used
    auto host_opts = at::TensorOptions().dtype(at::kFloat);
    if (cuda_) host_opts = host_opts.pinned_memory(true);
    auto dev_opts = at::TensorOptions().dtype(at::kFloat).device(model_.device());
    s->host = at::empty({cap, d}, host_opts);
    if (cuda_) s->dev_in = at::empty({cap, d}, dev_opts);
    s->hidden.clear();
    for (const auto& w : weights_t_) s->hidden.push_back(at::empty({cap, w.size(1)}, dev_opts));
    s->cap = cap;
  }
  return s;
}

void FraudScorer::release(std::unique_ptr<Staging> s) const {
  std::lock_guard<std::mutex> lock(pool_mu_);
  pool_.push_back(std::move(s));
}

// Returns the staging buffer to the pool when the call ends, normally or by exception. After an exception on CUDA
// an asynchronous host->device copy may still read the pinned buffer, so the device is synchronised first.
struct FraudScorer::StagingLease {
  const FraudScorer& owner;
  std::unique_ptr<Staging> s;
  bool ok = false;
  ~StagingLease() {
    if (!ok && owner.cuda_) {
      try {
        torch::cuda::synchronize();
      } catch (...) {
        return;  // the device is in trouble: drop the buffer rather than reuse it
      }
    }
    owner.release(std::move(s));
  }
};

FraudScorer::FraudScorer(const std::string& model_path, FeatureSpec spec, const std::string& device,
                         bool allow_fused, const std::string& cpu_kernel)
    : spec_(std::move(spec)), model_(model_path, device), allow_fused_(allow_fused) {
  try {
    kern_ = &cpu::kernels(cpu_kernel == "aten" ? "auto" : cpu_kernel);
  } catch (const std::invalid_argument& e) {
    throw ValueError(std::string(e.what()) + "; 'aten' runs the MLP on LibTorch");
  }
  want_own_ = cpu_kernel != "aten";
  const size_t d = spec_.names.size();
  if (d == 0) throw ValueError("the feature list is empty");
  if (spec_.log1p.size() != d || spec_.mean.size() != d || spec_.std.size() != d) {
    throw ValueError("meta fields disagree on the input width: " + std::to_string(d) + " features, " +
                     std::to_string(spec_.log1p.size()) + " log1p, " + std::to_string(spec_.mean.size()) +
                     " mean, " + std::to_string(spec_.std.size()) + " std");
  }
  for (size_t i = 0; i < d; ++i) {
    if (!std::isfinite(spec_.mean[i]))
      throw ValueError("mean of feature '" + spec_.names[i] + "' is not finite");
    if (!std::isfinite(spec_.std[i]) || spec_.std[i] <= 0.0)
      throw ValueError("std of feature '" + spec_.names[i] + "' must be finite and > 0");
  }
  if (!std::isfinite(spec_.clip) || spec_.clip <= 0.0) throw ValueError("clip must be finite and > 0");
  cuda_ = model_.device().is_cuda();
  probe();
}

FraudScorer::~FraudScorer() = default;

void FraudScorer::probe() {
  c10::InferenceMode guard;
  const int64_t d = input_width();
  const int64_t rows = 256;
  // Inputs spanning the clipped range, both signs, so every ReLU sees negative and positive pre-activations.
  at::Tensor x = (at::rand({rows, d}, at::TensorOptions().dtype(at::kFloat)) * 2.0 - 1.0) * spec_.clip;
  if (cuda_) x = x.to(model_.device());
  at::Tensor ref;
  try {
    c10::IValue outv = model_.module().forward({x});
    if (!outv.isTensor()) throw ValueError("model " + model_.path() + " must return a tensor of probabilities");
    ref = outv.toTensor();
  } catch (const ValueError&) {
    throw;
  } catch (const std::exception& e) {
    throw ValueError("model " + model_.path() + " does not accept input of width " + std::to_string(d) +
                     " (the number of features in meta.json): " + torch_message(e));
  }
  if (ref.numel() != rows || !(ref.dim() == 1 || (ref.dim() == 2 && ref.size(1) == 1))) {
    const auto sizes = ref.sizes();
    throw ValueError("model " + model_.path() + " returned shape [" + join_ints(sizes.begin(), sizes.end()) +
                     "] for input [" + std::to_string(rows) + ", " + std::to_string(d) + "]; expected [" +
                     std::to_string(rows) + "]");
  }
  ref = to_cpu(ref.reshape({rows}));
  if (ref.scalar_type() != at::kFloat) ref = ref.to(at::kFloat);
  {
    const double lo = ref.min().item<double>(), hi = ref.max().item<double>();
    if (!(lo >= 0.0 && hi <= 1.0)) {  // also catches NaN
      throw ValueError("model " + model_.path() + " does not output probabilities: forward() returned values in [" +
                       format_double(lo) + ", " + format_double(hi) +
                       "] on a probe batch (is the sigmoid missing from forward()?)");
    }
  }

  // The fused Linear/ReLU chain: parameters in registration order W0, b0, W1, b1, ... with chained shapes.
  std::vector<at::Tensor> params;
  for (const auto& p : model_.module().parameters(/*recurse=*/true)) params.push_back(p.detach());
  bool chain = !params.empty() && params.size() % 2 == 0;
  int64_t width = d;
  for (size_t k = 0; chain && k < params.size(); k += 2) {
    const auto& w = params[k];
    const auto& b = params[k + 1];
    chain = w.dim() == 2 && b.dim() == 1 && w.size(1) == width && b.size(0) == w.size(0) &&
            w.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat;
    if (chain) width = w.size(0);
  }
  chain = chain && width == 1 && allow_fused_;
  if (chain && !cuda_ && want_own_) {
    // Our CPU kernels: W_k^T padded to kWidthPad lanes; the last layer (one logit) as a padded weight vector.
    hidden_ld_ = cpu::round_up(d, cpu::kWidthPad);
    for (size_t k = 0; k + 2 < params.size(); k += 2) {
      at::Tensor w = to_cpu(params[k]).contiguous();
      at::Tensor b = to_cpu(params[k + 1]).contiguous();
      cpu::Layer l;
      l.in = static_cast<int>(w.size(1));
      l.out = static_cast<int>(w.size(0));
      l.out_pad = static_cast<int>(cpu::round_up(l.out, cpu::kWidthPad));
      l.wt.assign(static_cast<size_t>(l.in) * l.out_pad, 0.0f);
      l.bias.assign(l.out_pad, 0.0f);
      const float* wp = w.data_ptr<float>();
      for (int o = 0; o < l.out; ++o) {
        for (int i = 0; i < l.in; ++i) l.wt[static_cast<size_t>(i) * l.out_pad + o] = wp[o * l.in + i];
        l.bias[o] = b.data_ptr<float>()[o];
      }
      hidden_ld_ = std::max<int64_t>(hidden_ld_, l.out_pad);
      layers_.push_back(std::move(l));
    }
    {
      at::Tensor w = to_cpu(params[params.size() - 2]).contiguous();
      out_w_.assign(cpu::round_up(w.size(1), cpu::kWidthPad), 0.0f);
      std::copy(w.data_ptr<float>(), w.data_ptr<float>() + w.size(1), out_w_.begin());
      out_b_ = to_cpu(params.back()).contiguous().data_ptr<float>()[0];
    }
    std::vector<float> got(rows);
    {
      auto st = acquire(rows);
      at::Tensor xin = x.contiguous();
      cpu_forward(xin.data_ptr<float>(), d, 1, rows, *st, got.data());
      release(std::move(st));
    }
    at::Tensor fused = at::from_blob(got.data(), {rows}, at::TensorOptions().dtype(at::kFloat));
    const double diff = (fused - ref).abs().max().item<double>();
    // Our kernels sum in another order than LibTorch: allow the parity bound the scorer promises (1e-5).
    own_ = std::isfinite(diff) && diff <= 1e-5;
    probe_diff_ = diff;
    if (!own_) {
      layers_.clear();
      out_w_.clear();
      hidden_ld_ = 0;
    }
    std::lock_guard<std::mutex> lock(pool_mu_);
    pool_.clear();  // buffers from before own_ was decided
  }
  if (chain && !own_) {
    for (size_t k = 0; k < params.size(); k += 2) {
      weights_t_.push_back(params[k].t().contiguous());  // already on the model's device
      biases_.push_back(params[k + 1].contiguous());
    }
    auto st = acquire(rows);
    at::Tensor xin = x.contiguous();
    at::Tensor fused = to_cpu(run_mlp(xin, *st).reshape({rows}));
    release(std::move(st));
    const double diff = (fused - ref).abs().max().item<double>();
    fast_ = std::isfinite(diff) && diff <= 1e-6;
    probe_diff_ = diff;
    if (!fast_) {
      weights_t_.clear();
      biases_.clear();
      std::lock_guard<std::mutex> lock(pool_mu_);
      pool_.clear();  // buffers sized for the fused layers are not needed
    }
  }
}

at::Tensor FraudScorer::run_mlp(const at::Tensor& x, Staging& st) const {
  const int64_t n = x.size(0);
  at::Tensor h = x;
  const size_t layers = weights_t_.size();
  for (size_t k = 0; k < layers; ++k) {
    at::Tensor out = st.hidden[k].narrow(0, 0, n);
    at::addmm_out(out, biases_[k], h, weights_t_[k]);
    if (k + 1 < layers) {
      at::relu_(out);
    } else {
      at::sigmoid_(out);
    }
    h = out;
  }
  return h;
}

void FraudScorer::cpu_forward(const float* in, int64_t rs, int64_t cs, int64_t n, Staging& st, float* out) const {
  float* bufs[2] = {st.h0.data(), st.h1.data()};
  int cur = 0;
  if (layers_.empty()) {  // logistic regression: the output layer reads row-major, zero-padded rows
    const int64_t d = input_width();
    for (int64_t r = 0; r < n; ++r) {
      float* row = bufs[0] + r * hidden_ld_;
      for (int64_t k = 0; k < d; ++k) row[k] = in[r * rs + k * cs];
      std::fill(row + d, row + hidden_ld_, 0.0f);
    }
    in = bufs[0];
    rs = hidden_ld_;
    cs = 1;
    cur = 1;
  }
  for (const cpu::Layer& layer : layers_) {
    kern_->linear(in, rs, cs, n, layer, /*relu=*/true, bufs[cur], hidden_ld_);
    in = bufs[cur];
    rs = hidden_ld_;
    cs = 1;
    cur ^= 1;
  }
  kern_->logit_sigmoid(in, rs, n, out_w_.data(), static_cast<int64_t>(out_w_.size()), out_b_, out);
}

void FraudScorer::preprocess_cols(const std::vector<Column>& columns, int64_t n, float* xcol, int64_t ld) const {
  const int64_t d = input_width();
  if (static_cast<int64_t>(columns.size()) != d)
    throw ValueError("expected " + std::to_string(d) + " columns, got " + std::to_string(columns.size()));
  const double clip = spec_.clip;
  for (int64_t j = 0; j < d; ++j) {
    const Column& c = columns[j];
    const double mean = spec_.mean[j];
    const double sd = spec_.std[j];
    const bool lg = spec_.log1p[j];
    float* o = xcol + j * ld;
    if (c.kind == Column::Kind::Float32) {
      const float* src = static_cast<const float*>(c.data);
      const int64_t bad = kern_->preprocess_f32(src, n, lg, mean, sd, clip, o);
      if (bad >= 0)
        throw ValueError("column " + std::to_string(j) + " ('" + spec_.names[j] + "') has a non-finite value (" +
                         fmt_value(src[bad]) + ") at row " + std::to_string(bad));
    } else {
      // int64 (rare): scalar double, as the reference (values beyond 2^24 must not round through float).
      const int64_t* src = static_cast<const int64_t*>(c.data);
      for (int64_t i = 0; i < n; ++i) {
        double v = static_cast<double>(src[i]);
        if (lg) v = std::log1p(std::max(v, 0.0));
        v = (v - mean) / sd;
        o[i] = static_cast<float>(std::min(std::max(v, -clip), clip));
      }
    }
  }
}

void FraudScorer::preprocess(const std::vector<Column>& columns, int64_t n, float* dst) const {
  if (n <= 0) return;
  StagingLease lease{*this, acquire(n)};
  const int64_t d = input_width();
  const int64_t ld = lease.s->cap;
  const float* xcol = lease.s->xcol.data();
  preprocess_cols(columns, n, lease.s->xcol.data(), ld);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) dst[i * d + j] = xcol[j * ld + i];
  lease.ok = true;
}

void FraudScorer::score(const std::vector<Column>& columns, int64_t n, float* out) const {
  if (n <= 0) return;
  StagingLease lease{*this, acquire(n)};
  Staging& st = *lease.s;
  const int64_t d = input_width();
  const int64_t ld = st.cap;
  preprocess_cols(columns, n, st.xcol.data(), ld);
  if (own_) {
    cpu_forward(st.xcol.data(), 1, ld, n, st, out);
    lease.ok = true;
    return;
  }
  c10::InferenceMode guard;
  {
    float* h = st.host.data_ptr<float>();
    const float* xcol = st.xcol.data();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) h[i * d + j] = xcol[j * ld + i];
  }
  at::Tensor x = st.host.narrow(0, 0, n);
  if (cuda_) {
    // Pinned host buffer -> device, asynchronous on the current stream; the blocking copy of the result below is
    // ordered after it on the same stream, so the buffer is free for reuse when this call returns.
    at::Tensor xd = st.dev_in.narrow(0, 0, n);
    xd.copy_(x, /*non_blocking=*/true);
    x = xd;
  }
  at::Tensor y;
  try {
    if (fast_) {
      y = run_mlp(x, st);
    } else {
      c10::IValue v = model_.module().forward({x});
      if (!v.isTensor()) throw std::runtime_error("model " + model_.path() + " did not return a tensor");
      y = v.toTensor();
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("model " + model_.path() + " failed on a batch of " + std::to_string(n) + " x " +
                             std::to_string(d) + ": " + torch_message(e));
  }
  if (y.numel() != n)
    throw std::runtime_error("model " + model_.path() + " returned " + std::to_string(y.numel()) +
                             " values for " + std::to_string(n) + " rows");
  at::Tensor dst = at::from_blob(out, {n}, at::TensorOptions().dtype(at::kFloat));
  dst.copy_(y.reshape({n}));  // device -> host is blocking (synchronises the stream); also converts the dtype
  lease.ok = true;
}

}  // namespace ss
