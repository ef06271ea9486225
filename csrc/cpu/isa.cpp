// The CPU's instruction set (isa.h), detected once.
#include "isa.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace convpool::cpu {
namespace {

Isa detect_isa() {
  Isa best = Isa::generic;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
  if (best == Isa::avx2 && __builtin_cpu_supports("avx512f")) best = Isa::avx512;
#endif
  const char* env = std::getenv("CONVPOOL_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  const std::string want(env);
  Isa cap;
  if (want == "generic") {
    cap = Isa::generic;
  } else if (want == "avx2") {
    cap = Isa::avx2;
  } else if (want == "avx512" || want == "native") {
    cap = Isa::avx512;
  } else {
    TORCH_CHECK(false, "CONVPOOL_CPU_ISA must be generic, avx2, avx512 or native, but got '", want,
                "'");
  }
  return static_cast<int>(cap) < static_cast<int>(best) ? cap : best;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic: return "generic";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

Isa active_isa() {
  static const Isa value = detect_isa();
  return value;
}

}  // namespace convpool::cpu
