// Whether the CPU kernels outside the GEMM may use AVX2 / AVX-512. The decision has one home, the GEMM's
// run-time ISA choice (gemm.cpp: CPU features, capped by CONVPOOL_CPU_ISA=generic|avx2|avx512).
// The library is compiled for baseline x86-64 (it must import anywhere); AVX2 / AVX-512 kernels
// are functions built with __attribute__((target(...))) or files compiled under the ISA's
// `#pragma GCC target` (depthwise/avx2.cpp, depthwise/avx512.cpp).
#pragma once

#include <cstring>

#include "gemm.h"

namespace convpool::cpu {

inline bool use_avx2() {
  static const bool enabled = std::strcmp(gemm::active_isa(), "generic") != 0;
  return enabled;
}

// AVX-512F (the GEMM chose it: the CPU has it and CONVPOOL_CPU_ISA allows it).
inline bool use_avx512() {
  static const bool enabled = std::strcmp(gemm::active_isa(), "avx512") == 0;
  return enabled;
}

}  // namespace convpool::cpu
