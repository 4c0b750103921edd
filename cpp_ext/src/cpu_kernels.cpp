// Run-time choice among the CPU kernels compiled into this module (see cpu_kernels.hpp).
#include "cpu_kernels.hpp"

#include <stdexcept>

namespace ss::cpu {

#if defined(SS_HAVE_AVX512)
namespace avx512 {
extern const Kernels kKernels;
}
#endif
#if defined(SS_HAVE_AVX2)
namespace avx2 {
extern const Kernels kKernels;
}
#endif
namespace generic {
extern const Kernels kKernels;
}

namespace {

struct Entry {
  const Kernels* k;
  bool (*supported)();
};

bool always() { return true; }
#if defined(__x86_64__) || defined(__i386__)
// __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
bool has_avx512() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"); }
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

std::vector<Entry> compiled() {
  std::vector<Entry> v;
#if defined(SS_HAVE_AVX512)
  v.push_back({&avx512::kKernels, &has_avx512});
#endif
#if defined(SS_HAVE_AVX2)
  v.push_back({&avx2::kKernels, &has_avx2});
#endif
  v.push_back({&generic::kKernels, &always});
  return v;
}

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (const Entry& e : compiled())
    if (e.supported()) out.emplace_back(e.k->isa);
  return out;
}

const Kernels& kernels(const std::string& isa) {
  for (const Entry& e : compiled()) {
    if (!e.supported()) continue;
    if (isa == "auto" || isa == e.k->isa) return *e.k;
  }
  std::string names;
  for (const std::string& n : available_isas()) names += (names.empty() ? "" : ", ") + n;
  throw std::invalid_argument("CPU kernel '" + isa + "' is not available on this machine (available: " + names +
                              ", or 'auto')");
}

}  // namespace ss::cpu
