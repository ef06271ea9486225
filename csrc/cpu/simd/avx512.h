// The vector vocabulary for AVX-512F (16 float lanes), the same names as simd/avx2.h and
// simd/generic.h: V, kLanes, zero, set1, load, load_n (the first n lanes, others zero), store,
// store_n, add, sub, mul, fmadd, hsum, load_bits (lanes whose bit is set), transpose (16 x 16 in
// registers); for max pooling, lane masks M (bit masks here, vectors in avx2.h) with mask_range,
// mask_and/or/andnot, all_of, any_of; select, mask_add, greater_or_nan, load_mask, even_lanes,
// gather; int32 lanes I (iota, iset1, iadd, imul, ieq, iload, istore, store_int64) and
// load_index (int64 indices range-checked into int32 lanes); at the bottom Vec<float> /
// Vec<double> (the same names as a type, for code written once over float and double) and the
// 8 x 8 block names (V8, zero8, load8, store8, transpose8).
// A kernel family is written once over these names and compiled once per ISA (e.g.
// depthwise/avx512.cpp, gemm/avx512.cpp, pool/avx512.cpp): the file that includes this header sets
// `#pragma GCC target("avx512f,avx2,fma")` first and includes only <immintrin.h>, plain C++
// headers and ours before it, so no inline function of torch's is built for AVX-512 (a linker
// could pick that copy for generic code).
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

// ---- added for the GEMM (gemm/kernels_impl.h): float and double written once, 8 x 8 packing ----

// The vocabulary as a type, for code written once over float and double: Vec<float> is the
// functions above, Vec<double> the same names over 8 double lanes.
template <typename T>
struct Vec;

template <>
struct Vec<float> {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(lanes_mask(n), p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, lanes_mask(n), v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(V v) { return _mm512_reduce_add_ps(v); }
};

template <>
struct Vec<double> {
  using V = __m512d;
  static constexpr int kLanes = 8;
  static __mmask8 mask(int n) { return static_cast<__mmask8>((1u << n) - 1u); }
  static V zero() { return _mm512_setzero_pd(); }
  static V set1(double v) { return _mm512_set1_pd(v); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V load_n(const double* p, int n) { return _mm512_maskz_loadu_pd(mask(n), p); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static void store_n(double* p, V v, int n) { _mm512_mask_storeu_pd(p, mask(n), v); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static double hsum(V v) { return _mm512_reduce_add_pd(v); }
};

// 8 x 8 float blocks (the GEMM's and Winograd's packing transposes), the same names as
// simd/avx2.h: V8, zero8, load8, store8, transpose8 (in ymm registers, as AVX2 does it).
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
inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }


// ---- lane masks, selects, int32 lanes: max pooling's primitives (pool/kernels_impl.h) -----------

using M = __mmask16;  // a lane mask: bit j selects lane j
using I = __m512i;    // kLanes int32 lanes
inline I iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
inline I iset1(int32_t v) { return _mm512_set1_epi32(v); }
inline I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
inline I imul(I a, I b) { return _mm512_mullo_epi32(a, b); }
inline I iload(const int32_t* p) { return _mm512_loadu_si512(p); }
inline void istore(int32_t* p, I v) { _mm512_storeu_si512(p, v); }
// Lanes [begin, end), clipped to [0, kLanes).
inline M mask_range(int64_t begin, int64_t end) {
  begin = begin < 0 ? 0 : begin;
  end = end > kLanes ? kLanes : end;
  return end <= begin ? M(0) : static_cast<M>(((1u << (end - begin)) - 1u) << begin);
}
inline M mask_none() { return 0; }
inline M mask_and(M a, M b) { return a & b; }
inline M mask_or(M a, M b) { return a | b; }
inline M mask_andnot(M a, M b) { return a & static_cast<M>(~b); }  // a and not b
inline bool all_of(M m) { return m == 0xFFFF; }
inline bool any_of(M m) { return m != 0; }
inline M ieq(I a, I b) { return _mm512_cmpeq_epi32_mask(a, b); }
// Lanes where v replaces the maximum b: greater, or NaN (PyTorch's rule).
inline M greater_or_nan(V v, V b) {
  return _mm512_cmp_ps_mask(v, b, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
}
inline V select(M m, V if_false, V if_true) { return _mm512_mask_mov_ps(if_false, m, if_true); }
inline I select(M m, I if_false, I if_true) { return _mm512_mask_mov_epi32(if_false, m, if_true); }
// a + b in the lanes of m, a + 0 elsewhere (a, unless a is -0), as in simd/avx2.h. A full-width
// add: with _mm512_mask_add_ps, GCC turns load, masked add, store into a masked store, which
// made the channels_last backward 2-3x slower on Zen 4.
inline V mask_add(V a, M m, V b) { return _mm512_add_ps(a, _mm512_maskz_mov_ps(m, b)); }
// The lanes of m from p (only their memory is read), zero elsewhere.
inline V load_mask(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
// Lanes 0, 2, 4, ... of the 2 * kLanes floats lo:hi (a stride-2 row in two loads).
inline V even_lanes(V lo, V hi) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  return _mm512_permutex2var_ps(lo, even, hi);
}
// base[offsets] in the lanes of m, zero elsewhere.
inline V gather(const float* base, I offsets, M m) {
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, offsets, base, 4);
}
// The kLanes int32 lanes widened to int64 at p.
inline void store_int64(int64_t* p, I v) {
  // The maskz forms: GCC 12 warns about the plain ones' undefined pass-through operand.
  _mm512_storeu_si512(p, _mm512_maskz_cvtepi32_epi64(0xFF, _mm512_maskz_extracti64x4_epi64(0xFF, v, 0)));
  _mm512_storeu_si512(p + 8, _mm512_maskz_cvtepi32_epi64(0xFF, _mm512_maskz_extracti64x4_epi64(0xFF, v, 1)));
}
// n <= kLanes int64 values from p as int32 lanes (lanes from n on: 0); `bad` gains the lanes
// whose value lies outside [-1, limit), so a value that does not fit in int32 is never used.
// Masked loads only for a tail: they are slow on data not in cache (see pool/kernels_impl.h).
inline I load_index(const int64_t* p, int n, int64_t limit, M& bad) {
  const __mmask8 lo_mask = n >= 8 ? 0xFF : static_cast<__mmask8>((1u << n) - 1u);
  const __mmask8 hi_mask = n >= 16 ? 0xFF : n <= 8 ? 0 : static_cast<__mmask8>((1u << (n - 8)) - 1u);
  const __m512i lo = n >= kLanes ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi64(lo_mask, p);
  const __m512i hi = n >= kLanes ? _mm512_loadu_si512(p + 8) : _mm512_maskz_loadu_epi64(hi_mask, p + 8);
  // index + 1 >= limit + 1 as unsigned: every value outside [-1, limit)
  const __m512i one = _mm512_set1_epi64(1), lim = _mm512_set1_epi64(limit + 1);
  const __mmask8 out_lo = _mm512_mask_cmpge_epu64_mask(lo_mask, _mm512_add_epi64(lo, one), lim);
  const __mmask8 out_hi = _mm512_mask_cmpge_epu64_mask(hi_mask, _mm512_add_epi64(hi, one), lim);
  bad |= static_cast<M>(out_lo | (out_hi << 8));
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(lo)), _mm512_cvtepi64_epi32(hi), 1);
}

}  // namespace convpool::cpu::simd::avx512
