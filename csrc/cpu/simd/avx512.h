// The vector vocabulary for AVX-512F (16 float lanes), the same names as simd/avx2.h: V, kLanes,
// zero, set1, load, load_n (the first n lanes, others zero), store, store_n, add, fmadd, hsum,
// load_bits (lanes whose bit is set), transpose (16 x 16 in registers). A kernel family is written
// once over these names and compiled once per ISA (e.g. depthwise/avx512.cpp): the file that
// includes this header sets `#pragma GCC target("avx512f,avx2,fma")` first and includes only
// <immintrin.h>, plain C++ headers and ours before it, so no inline function of torch's is built
// for AVX-512 (a linker could pick that copy for generic code).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace convpool::cpu::simd::avx512 {

using V = __m512;
constexpr int kLanes = 16;
inline __mmask16 lanes_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
inline V zero() { return _mm512_setzero_ps(); }
inline V set1(float v) { return _mm512_set1_ps(v); }
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(lanes_mask(n), p); }
inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
inline void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, lanes_mask(n), v); }
inline V add(V a, V b) { return _mm512_add_ps(a, b); }
inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline float hsum(V v) { return _mm512_reduce_add_ps(v); }
inline V load_bits(const float* p, uint32_t bits) {
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>(bits), p);
}

// One round of the 16 x 16 transpose below (index vectors are compile-time constants, so the 16
// rows stay in registers).
template <int b>
inline void transpose_round(V r[kLanes]) {
  // lane m of the top row takes the bottom row's lane m - b where bit b of m is set, and vice versa
  const __m512i lo_idx = _mm512_setr_epi32(
      (0 & b) ? 16 + 0 - b : 0, (1 & b) ? 16 + 1 - b : 1, (2 & b) ? 16 + 2 - b : 2, (3 & b) ? 16 + 3 - b : 3,
      (4 & b) ? 16 + 4 - b : 4, (5 & b) ? 16 + 5 - b : 5, (6 & b) ? 16 + 6 - b : 6, (7 & b) ? 16 + 7 - b : 7,
      (8 & b) ? 16 + 8 - b : 8, (9 & b) ? 16 + 9 - b : 9, (10 & b) ? 16 + 10 - b : 10, (11 & b) ? 16 + 11 - b : 11,
      (12 & b) ? 16 + 12 - b : 12, (13 & b) ? 16 + 13 - b : 13, (14 & b) ? 16 + 14 - b : 14, (15 & b) ? 16 + 15 - b : 15);
  const __m512i hi_idx = _mm512_setr_epi32(
      (0 & b) ? 16 + 0 : 0 + b, (1 & b) ? 16 + 1 : 1 + b, (2 & b) ? 16 + 2 : 2 + b, (3 & b) ? 16 + 3 : 3 + b,
      (4 & b) ? 16 + 4 : 4 + b, (5 & b) ? 16 + 5 : 5 + b, (6 & b) ? 16 + 6 : 6 + b, (7 & b) ? 16 + 7 : 7 + b,
      (8 & b) ? 16 + 8 : 8 + b, (9 & b) ? 16 + 9 : 9 + b, (10 & b) ? 16 + 10 : 10 + b, (11 & b) ? 16 + 11 : 11 + b,
      (12 & b) ? 16 + 12 : 12 + b, (13 & b) ? 16 + 13 : 13 + b, (14 & b) ? 16 + 14 : 14 + b, (15 & b) ? 16 + 15 : 15 + b);
#pragma GCC unroll 16
  for (int i = 0; i < kLanes; ++i) {
    if (i & b) continue;
    const V top = r[i], bottom = r[i + b];
    r[i] = _mm512_permutex2var_ps(top, lo_idx, bottom);
    r[i + b] = _mm512_permutex2var_ps(top, hi_idx, bottom);
  }
}

// r[i][j] <- r[j][i]: one round per bit b of the index swaps bit b of the row with bit b of the
// column (the off-diagonal b x b blocks of every 2b x 2b block).
inline void transpose(V r[kLanes]) {
  transpose_round<8>(r);
  transpose_round<4>(r);
  transpose_round<2>(r);
  transpose_round<1>(r);
}

}  // namespace convpool::cpu::simd::avx512
