// Which vector instructions the CPU kernels may use, decided once at run time: the library is
// compiled for baseline x86-64 (it must import anywhere) and the AVX2 kernels are functions built
// with __attribute__((target(...))). CONVPOOL_CPU_ISA=generic forces the portable kernels (tests
// use it so both paths run in CI).
#pragma once

#include <cstdlib>
#include <cstring>

namespace convpool::cpu {

inline bool use_avx2() {
  static const bool enabled = [] {
    const char* forced = std::getenv("CONVPOOL_CPU_ISA");
    if (forced != nullptr && std::strcmp(forced, "generic") == 0) return false;
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
  }();
  return enabled;
}

}  // namespace convpool::cpu
