// The CPU's instruction set (isa.h), detected once.
#include "isa.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

bool detect_amx() {
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
  // The AMX file's stores use AVX-512BW/VL too (every AMX CPU has them; a VM may mask them).
  if (active_isa() != Isa::avx512 || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl"))
    return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24);
  if (!amx_bf16 || !amx_tile) return false;
  // Linux 5.16+: a process must ask before it may use the tile data state (else SIGILL).
  constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
  unsigned long granted = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &granted) != 0) return false;
  return (granted >> kXfeatureXtiledata) & 1;
#else
  return false;
#endif
}

}  // namespace

bool amx_usable() {
  static const bool value = detect_amx();
  return value;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic: return "generic";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::amx: return "amx";
  }
  return "?";
}

Isa active_isa() {
  static const Isa value = detect_isa();
  return value;
}

}  // namespace convpool::cpu
