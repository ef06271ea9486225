// The vector vocabulary for AVX2 + FMA (8 float lanes), the same names as simd/avx512.h and
// simd/generic.h (see there). The file that includes this header sets
// `#pragma GCC target("avx2,fma")` first.
// Lane masks (M) are vectors here (all bits of a lane set), bit masks in simd/avx512.h.
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

// ---- added for the GEMM (gemm/kernels_impl.h): float and double written once, 8 x 8 packing ----

// The vocabulary as a type, for code written once over float and double: Vec<float> is the
// functions above, Vec<double> the same names over 4 double lanes.
template <typename T>
struct Vec;

template <>
struct Vec<float> {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_n(const float* p, int n) { return _mm256_maskload_ps(p, lanes_mask(n)); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store_n(float* p, V v, int n) { _mm256_maskstore_ps(p, lanes_mask(n), v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(V v) { return avx2::hsum(v); }
};

template <>
struct Vec<double> {
  using V = __m256d;
  static constexpr int kLanes = 4;
  static __m256i mask(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static V zero() { return _mm256_setzero_pd(); }
  static V set1(double v) { return _mm256_set1_pd(v); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V load_n(const double* p, int n) { return _mm256_maskload_pd(p, mask(n)); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static void store_n(double* p, V v, int n) { _mm256_maskstore_pd(p, mask(n), v); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static double hsum(V v) {
    const __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
  }
};

// 8 x 8 float blocks (the GEMM's and Winograd's packing transposes), the same names in every
// ISA's header: V8, zero8, load8, store8, transpose8 (r[i][j] <- r[j][i]: unpack pairs, shuffle
// quads, swap 128-bit halves; 24 shuffles).
using V8 = __m256;
inline V8 zero8() { return _mm256_setzero_ps(); }
inline V8 load8(const float* p) { return _mm256_loadu_ps(p); }
inline void store8(float* p, V8 v) { _mm256_storeu_ps(p, v); }
inline void transpose8(V8 r[8]) {
  const V8 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const V8 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const V8 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const V8 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const V8 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const V8 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const V8 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const V8 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// ---- added for Winograd's transforms (winograd/kernels_impl.h) ----
inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }


// ---- lane masks, selects, int32 lanes: max pooling's primitives (pool/kernels_impl.h) -----------

using M = __m256i;  // a lane mask: every bit of a selected lane set
using I = __m256i;  // kLanes int32 lanes
inline I iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
inline I iset1(int32_t v) { return _mm256_set1_epi32(v); }
inline I iadd(I a, I b) { return _mm256_add_epi32(a, b); }
inline I imul(I a, I b) { return _mm256_mullo_epi32(a, b); }
inline I iload(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline void istore(int32_t* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
// Lanes [begin, end), clipped to [0, kLanes).
inline M mask_range(int64_t begin, int64_t end) {
  const int b = static_cast<int>(begin < 0 ? 0 : begin > kLanes ? kLanes : begin);
  const int e = static_cast<int>(end < 0 ? 0 : end > kLanes ? kLanes : end);
  return _mm256_and_si256(_mm256_cmpgt_epi32(iota(), _mm256_set1_epi32(b - 1)),
                          _mm256_cmpgt_epi32(_mm256_set1_epi32(e), iota()));
}
inline M mask_none() { return _mm256_setzero_si256(); }
inline M mask_and(M a, M b) { return _mm256_and_si256(a, b); }
inline M mask_or(M a, M b) { return _mm256_or_si256(a, b); }
inline M mask_andnot(M a, M b) { return _mm256_andnot_si256(b, a); }  // a and not b
inline bool all_of(M m) { return _mm256_movemask_ps(_mm256_castsi256_ps(m)) == 0xFF; }
inline bool any_of(M m) { return !_mm256_testz_si256(m, m); }
inline M ieq(I a, I b) { return _mm256_cmpeq_epi32(a, b); }
// Lanes where v replaces the maximum b: greater, or NaN (PyTorch's rule).
inline M greater_or_nan(V v, V b) {
  return _mm256_castps_si256(_mm256_or_ps(_mm256_cmp_ps(v, b, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}
inline V select(M m, V if_false, V if_true) { return _mm256_blendv_ps(if_false, if_true, _mm256_castsi256_ps(m)); }
inline I select(M m, I if_false, I if_true) {
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(if_false), _mm256_castsi256_ps(if_true),
                                              _mm256_castsi256_ps(m)));
}
// a + b in the lanes of m, a + 0 elsewhere (a, unless a is -0; b's other lanes, NaN included,
// never reach the sum).
inline V mask_add(V a, M m, V b) { return _mm256_add_ps(a, _mm256_and_ps(b, _mm256_castsi256_ps(m))); }
// The lanes of m from p (only their memory is read), zero elsewhere.
inline V load_mask(const float* p, M m) { return _mm256_maskload_ps(p, m); }
// Lanes 0, 2, 4, ... of the 2 * kLanes floats lo:hi (a stride-2 row in two loads).
inline V even_lanes(V lo, V hi) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
}
// base[offsets] in the lanes of m, zero elsewhere.
inline V gather(const float* base, I offsets, M m) {
  return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, offsets, _mm256_castsi256_ps(m), 4);
}
// The kLanes int32 lanes widened to int64 at p.
inline void store_int64(int64_t* p, I v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
}
// n <= kLanes int64 values from p as int32 lanes (lanes from n on: 0); `bad` gains the lanes
// whose value lies outside [-1, limit), so a value that does not fit in int32 is never used.
inline I load_index(const int64_t* p, int n, int64_t limit, M& bad) {
  const __m256i lo_mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  const __m256i hi_mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(4, 5, 6, 7));
  const __m256i lo = n >= kLanes ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                 : _mm256_maskload_epi64(reinterpret_cast<const long long*>(p), lo_mask);
  const __m256i hi = n >= kLanes ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 4))
                                 : _mm256_maskload_epi64(reinterpret_cast<const long long*>(p + 4), hi_mask);
  const __m256i minus_one = _mm256_set1_epi64x(-1), lim = _mm256_set1_epi64x(limit);
  // outside: x < -1 or x >= limit
  const __m256i out_lo = _mm256_or_si256(_mm256_cmpgt_epi64(minus_one, lo),
                                         _mm256_andnot_si256(_mm256_cmpgt_epi64(lim, lo), lo_mask));
  const __m256i out_hi = _mm256_or_si256(_mm256_cmpgt_epi64(minus_one, hi),
                                         _mm256_andnot_si256(_mm256_cmpgt_epi64(lim, hi), hi_mask));
  // The low dword of every int64 lane, in order.
  const __m256i low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const auto pack = [&](__m256i a, __m256i b) {
    return _mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(a, low_dwords),
                                     _mm256_permutevar8x32_epi32(b, low_dwords), 0x20);
  };
  bad = _mm256_or_si256(bad, pack(out_lo, out_hi));
  return pack(lo, hi);
}

}  // namespace convpool::cpu::simd::avx2
