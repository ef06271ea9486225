// The vector vocabulary for AVX2 + FMA (8 float lanes), the same names as simd/avx512.h (see
// there). The file that includes this header sets `#pragma GCC target("avx2,fma")` first.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <initializer_list>

namespace convpool::cpu::simd::avx2 {

using V = __m256;
constexpr int kLanes = 8;
inline __m256i lanes_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline V zero() { return _mm256_setzero_ps(); }
inline V set1(float v) { return _mm256_set1_ps(v); }
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline V load_n(const float* p, int n) { return _mm256_maskload_ps(p, lanes_mask(n)); }
inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
inline void store_n(float* p, V v, int n) { _mm256_maskstore_ps(p, lanes_mask(n), v); }
inline V add(V a, V b) { return _mm256_add_ps(a, b); }
inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V load_bits(const float* p, uint32_t bits) {
  const __m256i pow2 = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i set = _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), pow2);
  return _mm256_maskload_ps(p, _mm256_cmpeq_epi32(set, pow2));
}
inline float hsum(V v) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
// r[i][j] <- r[j][i], as simd/avx512.h's transpose: rounds b = 4 (128-bit halves), 2 (pairs), 1.
inline void transpose(V r[kLanes]) {
  for (int i = 0; i < 4; ++i) {
    const V top = r[i], bottom = r[i + 4];
    r[i] = _mm256_permute2f128_ps(top, bottom, 0x20);
    r[i + 4] = _mm256_permute2f128_ps(top, bottom, 0x31);
  }
  for (int i : {0, 1, 4, 5}) {
    const V top = r[i], bottom = r[i + 2];
    r[i] = _mm256_shuffle_ps(top, bottom, _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 2] = _mm256_shuffle_ps(top, bottom, _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i : {0, 2, 4, 6}) {
    const V top = r[i], bottom = r[i + 1];
    r[i] = _mm256_blend_ps(top, _mm256_moveldup_ps(bottom), 0xAA);
    r[i + 1] = _mm256_blend_ps(_mm256_movehdup_ps(top), bottom, 0xAA);
  }
}

}  // namespace convpool::cpu::simd::avx2
