// The direct-convolution tile (kernels.h), written once over the vector vocabulary of
// simd/<isa>.h (V, kLanes, zero, set1, load, load_n, store, store_n, fmadd) and compiled once per
// ISA by generic.cpp, avx2.cpp and avx512.cpp into namespace direct::<isa>. The including file
// defines CONVPOOL_DIRECT_ISA, sets the ISA's `#pragma GCC target` first (not for generic) and
// includes simd/<isa>.h.
#pragma once

#ifndef CONVPOOL_DIRECT_ISA
#error "kernels_impl.h is compiled by direct/generic.cpp, direct/avx2.cpp and direct/avx512.cpp only"
#endif

#include "kernels.h"

namespace convpool::cpu::direct::CONVPOOL_DIRECT_ISA {
namespace {

using namespace convpool::cpu::simd::CONVPOOL_DIRECT_ISA;

// M rows x 2 vectors of output channels, 2 * M accumulators (named variables: GCC keeps an
// array of vectors in memory). Each step of the reduction: 2 vectors of `w`, M broadcasts of
// input values, 2 * M FMAs. The input is read straight from the padded copy: no im2col, no
// packing of the input.
template <int M>
void tile(const float* x, int64_t xs, const int64_t* off, int64_t taps, int64_t cin, int64_t xc,
          const float* w, int64_t wts, const float* init, float* out, int64_t os, int n) {
  static_assert(M >= 1 && M <= kMaxRows);
  constexpr int W = kLanes, NR = 2 * W;
  const V i0 = init ? load_n(init, n < W ? n : W) : zero();
  const V i1 = init && n > W ? load_n(init + W, n - W) : zero();
#define CONVPOOL_ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define CONVPOOL_DECL(i) V c##i##_0 = i0, c##i##_1 = i1;
#define CONVPOOL_FMA(i)                          \
  if constexpr (i < M) {                         \
    const V a = set1(xt[i * xs]);                \
    c##i##_0 = fmadd(a, b0, c##i##_0);           \
    c##i##_1 = fmadd(a, b1, c##i##_1);           \
  }
#define CONVPOOL_STORE(i)                                                      \
  if constexpr (i < M) {                                                       \
    float* o = out + i * os;                                                   \
    if (n == NR) {                                                             \
      store(o, c##i##_0);                                                      \
      store(o + W, c##i##_1);                                                  \
    } else if (n > W) {                                                        \
      store(o, c##i##_0);                                                      \
      store_n(o + W, c##i##_1, n - W);                                         \
    } else {                                                                   \
      store_n(o, c##i##_0, n);                                                 \
    }                                                                          \
  }
  CONVPOOL_ROWS12(CONVPOOL_DECL)
  for (int64_t t = 0; t < taps; ++t) {
    const float* xt = x + off[t];
    const float* wt = w + t * wts;
    for (int64_t c = 0; c < cin; ++c, xt += xc, wt += NR) {
      const V b0 = load(wt), b1 = load(wt + W);
      CONVPOOL_ROWS12(CONVPOOL_FMA)
    }
  }
  CONVPOOL_ROWS12(CONVPOOL_STORE)
#undef CONVPOOL_STORE
#undef CONVPOOL_FMA
#undef CONVPOOL_DECL
#undef CONVPOOL_ROWS12
}

// The table's tiles for 1 .. MR pixels.
template <int MR>
constexpr Kernels make_kernels(const char* isa) {
  static_assert(MR >= 1 && MR <= kMaxRows);
  return Kernels{MR,
                 2 * kLanes,
                 {&tile<1>, MR >= 2 ? &tile<2> : nullptr, MR >= 3 ? &tile<3> : nullptr,
                  MR >= 4 ? &tile<4> : nullptr, MR >= 5 ? &tile<5> : nullptr,
                  MR >= 6 ? &tile<6> : nullptr, MR >= 7 ? &tile<7> : nullptr,
                  MR >= 8 ? &tile<8> : nullptr, MR >= 9 ? &tile<9> : nullptr,
                  MR >= 10 ? &tile<10> : nullptr, MR >= 11 ? &tile<11> : nullptr,
                  MR >= 12 ? &tile<12> : nullptr},
                 isa};
}

}  // namespace
}  // namespace convpool::cpu::direct::CONVPOOL_DIRECT_ISA
