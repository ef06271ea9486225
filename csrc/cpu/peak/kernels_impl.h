// The FMA loop over one ISA's vector vocabulary (simd/<isa>.h, namespace
// simd::CONVPOOL_PEAK_ISA): included once per ISA by that ISA's file, after its target pragma.
#ifndef CONVPOOL_PEAK_ISA
#error "define CONVPOOL_PEAK_ISA (avx2, avx512) before including kernels_impl.h"
#endif

namespace convpool::cpu::peak::CONVPOOL_PEAK_ISA {
namespace vec = ::convpool::cpu::simd::CONVPOOL_PEAK_ISA;

int lanes() { return vec::kLanes; }

float fma_loop(int64_t iterations) {
  vec::V acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = vec::set1(static_cast<float>(i));
  // x * 1 + 0 keeps every value finite and the chains independent.
  const vec::V one = vec::set1(1.0f), zero = vec::zero();
  for (int64_t k = 0; k < iterations; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = vec::fmadd(acc[i], one, zero);
  }
  vec::V sum = vec::zero();
  for (int i = 0; i < kChains; ++i) sum = vec::add(sum, acc[i]);
  float lanes[vec::kLanes];  // not hsum: GCC 12 warns inside _mm512_reduce_add_ps
  vec::store(lanes, sum);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

}  // namespace convpool::cpu::peak::CONVPOOL_PEAK_ISA
