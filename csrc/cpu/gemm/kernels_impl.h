// The GEMM micro-kernel and the 8 x 8 packing transpose, written once over the vector vocabulary
// of simd/<isa>.h (Vec<T>: V, kLanes, zero, set1, load, store, add, fmadd; V8, load8, store8,
// transpose8): generic.cpp, avx2.cpp and avx512.cpp each compile this file once, for their ISA,
// into namespace gemm::<isa>, and define their Kernels table (kernels.h) with the ISA's register
// tile and cache blocks. The including file defines CONVPOOL_GEMM_ISA (generic, avx2, avx512),
// sets the ISA's `#pragma GCC target` first (not for generic) and includes simd/<isa>.h.
#pragma once

#ifndef CONVPOOL_GEMM_ISA
#error "kernels_impl.h is compiled by gemm/generic.cpp, gemm/avx2.cpp and gemm/avx512.cpp only"
#endif

#include "kernels.h"

namespace convpool::cpu::gemm::CONVPOOL_GEMM_ISA {
namespace {

using namespace convpool::cpu::simd::CONVPOOL_GEMM_ISA;

// Copy an MR x NR register tile (spilled to `tile`) into the m x n valid corner of C.
template <typename T>
inline void store_edge(const T* tile, int nr, T* c, int64_t rs_c, int m, int n, bool accumulate) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      T& dst = c[i * rs_c + j];
      dst = accumulate ? dst + tile[i * nr + j] : tile[i * nr + j];
    }
}

// Store one row of the register tile: two vectors, added to C when accumulating.
template <typename T>
inline void store_row(T* row, typename Vec<T>::V r0, typename Vec<T>::V r1, bool accumulate) {
  using O = Vec<T>;
  if (accumulate) {
    r0 = O::add(O::load(row), r0);
    r1 = O::add(O::load(row + O::kLanes), r1);
  }
  O::store(row, r0);
  O::store(row + O::kLanes, r1);
}

// MR rows (MR <= 12) of 2 vectors: NR = 2 * kLanes columns, 2 * MR accumulators. Each k step: 2
// vector loads of B, MR broadcasts of A, 2 * MR FMAs. The accumulators are named variables: GCC
// keeps an array of them in memory and stores it back on every iteration. Rows beyond MR are
// declared but never used (dead code). AVX2 (16 ymm registers) takes MR = 6: 12 accumulators, 2
// B vectors and 1 broadcast A value.
template <typename T, int MR>
void micro_kernel(int64_t kc, const T* a, const T* b, T* c, int64_t rs_c, int m, int n,
                  bool accumulate) {
  using O = Vec<T>;
  using Vt = typename O::V;
  static_assert(MR <= 12);
  constexpr int W = O::kLanes, NR = 2 * W;
#define CONVPOOL_ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define CONVPOOL_DECL(i) Vt c##i##_0 = O::zero(), c##i##_1 = O::zero();
#define CONVPOOL_FMA(i)                     \
  if constexpr (i < MR) {                   \
    const Vt ai = O::set1(a[i]);            \
    c##i##_0 = O::fmadd(ai, b0, c##i##_0);  \
    c##i##_1 = O::fmadd(ai, b1, c##i##_1);  \
  }
#define CONVPOOL_STORE(i) \
  if constexpr (i < MR) store_row<T>(dst + i * rs, c##i##_0, c##i##_1, acc);
  CONVPOOL_ROWS12(CONVPOOL_DECL)
  // C's rows are a large stride apart (a conv's output) and were last touched a whole K block
  // ago, so they miss every cache and no hardware prefetcher predicts them: ask for them now,
  // while the k loop runs.
  for (int i = 0; i < m; ++i) {
    __builtin_prefetch(c + i * rs_c, 1);
    __builtin_prefetch(c + i * rs_c + NR - 1, 1);
  }
  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR) {
    const Vt b0 = O::load(b), b1 = O::load(b + W);
    CONVPOOL_ROWS12(CONVPOOL_FMA)
  }
  const bool full = m == MR && n == NR;
  alignas(64) T tile[MR * NR];
  T* dst = full ? c : tile;
  const int64_t rs = full ? rs_c : NR;
  const bool acc = full && accumulate;
  CONVPOOL_ROWS12(CONVPOOL_STORE)
  if (!full) store_edge(tile, NR, c, rs_c, m, n, accumulate);
#undef CONVPOOL_STORE
#undef CONVPOOL_FMA
#undef CONVPOOL_DECL
#undef CONVPOOL_ROWS12
}

// dst[j * ld + i] = rows[i][j] for i, j < 8; a null row reads as zeros.
void transpose8x8(const float* const* rows, float* dst, int64_t ld) {
  V8 r[8];
  for (int i = 0; i < 8; ++i) r[i] = rows[i] ? load8(rows[i]) : zero8();
  transpose8(r);
  for (int i = 0; i < 8; ++i) store8(dst + i * ld, r[i]);
}

}  // namespace
}  // namespace convpool::cpu::gemm::CONVPOOL_GEMM_ISA
