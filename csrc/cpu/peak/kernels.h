// The FMA loop of peak.h, once per ISA (kernels_impl.h compiled by avx2.cpp, avx512.cpp; the
// portable one in peak.cpp). Plain C++: no torch header (see simd/avx512.h).
#pragma once

#include <cstdint>

namespace convpool::cpu::peak {

// Multiply-adds done by one call of fma_loop(iterations): kChains vectors per iteration.
constexpr int kChains = 12;  // independent chains: enough to cover the FMA latency of 2 pipes

#define CONVPOOL_PEAK_DECLARE(ISA)                                                             \
  namespace ISA {                                                                              \
  int lanes();                                                                                 \
  /* Runs iterations x kChains vector FMAs; returns a sum of the results (keeps the loop). */ \
  float fma_loop(int64_t iterations);                                                          \
  }
CONVPOOL_PEAK_DECLARE(portable)
CONVPOOL_PEAK_DECLARE(avx2)
CONVPOOL_PEAK_DECLARE(avx512)
#undef CONVPOOL_PEAK_DECLARE

}  // namespace convpool::cpu::peak
