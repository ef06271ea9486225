// GEMM micro-kernels and their run-time selection (see gemm.h for the design).
//
// Only the functions marked __attribute__((target(...))) use AVX2/FMA (or AVX-512) instructions;
// the rest of the library is built for the baseline ISA, so it imports on any x86-64 CPU (and
// any other architecture, where only the portable kernel exists).
#include "gemm.h"
#include "isa.h"

#ifndef CONVPOOL_AVX512_ROWS
#define CONVPOOL_AVX512_ROWS 8
#endif

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define CONVPOOL_X86 1
#endif

namespace convpool::cpu::gemm {
namespace {

// Copy an MR x NR register tile (spilled to `tile`) into the m x n valid corner of C.
template <typename T>
inline void store_edge(const T* tile, int nr, T* c, int64_t rs_c, int m, int n, bool accumulate) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      T& dst = c[i * rs_c + j];
      dst = accumulate ? dst + tile[i * nr + j] : tile[i * nr + j];
    }
}

// ---- portable kernel: plain loops the compiler may vectorise for the baseline ISA ------------

template <typename T, int MR, int NR>
void kernel_generic(int64_t kc, const T* a, const T* b, T* c, int64_t rs_c, int m, int n,
                    bool accumulate) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
  store_edge(&acc[0][0], NR, c, rs_c, m, n, accumulate);
}

#ifdef CONVPOOL_X86

// ---- AVX2 + FMA: 6 x 16 floats / 6 x 8 doubles, 12 accumulator registers ---------------------
// Each k step: 2 vector loads of B, 6 broadcasts of A, 12 FMAs (the two FMA pipes stay busy).

#define CONVPOOL_AVX2 __attribute__((target("avx2,fma")))
#define CONVPOOL_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

struct Avx2F32 {
  using T = float;
  using V = __m256;
  static constexpr int W = 8;
  CONVPOOL_AVX2_INLINE V zero() { return _mm256_setzero_ps(); }
  CONVPOOL_AVX2_INLINE V load(const T* p) { return _mm256_loadu_ps(p); }
  CONVPOOL_AVX2_INLINE V bcast(const T* p) { return _mm256_broadcast_ss(p); }
  CONVPOOL_AVX2_INLINE V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  CONVPOOL_AVX2_INLINE V add(V a, V b) { return _mm256_add_ps(a, b); }
  CONVPOOL_AVX2_INLINE void store(T* p, V v) { _mm256_storeu_ps(p, v); }
};

struct Avx2F64 {
  using T = double;
  using V = __m256d;
  static constexpr int W = 4;
  CONVPOOL_AVX2_INLINE V zero() { return _mm256_setzero_pd(); }
  CONVPOOL_AVX2_INLINE V load(const T* p) { return _mm256_loadu_pd(p); }
  CONVPOOL_AVX2_INLINE V bcast(const T* p) { return _mm256_broadcast_sd(p); }
  CONVPOOL_AVX2_INLINE V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  CONVPOOL_AVX2_INLINE V add(V a, V b) { return _mm256_add_pd(a, b); }
  CONVPOOL_AVX2_INLINE void store(T* p, V v) { _mm256_storeu_pd(p, v); }
};

// Store one row of the register tile: two vectors, added to C when accumulating.
template <class O>
CONVPOOL_AVX2_INLINE void store_row(typename O::T* row, typename O::V r0, typename O::V r1,
                                    bool accumulate) {
  if (accumulate) {
    r0 = O::add(O::load(row), r0);
    r1 = O::add(O::load(row + O::W), r1);
  }
  O::store(row, r0);
  O::store(row + O::W, r1);
}

// 6 x (2 vectors): 12 accumulators, 2 B vectors and 1 broadcast A value live in 15 of the 16
// ymm registers. The accumulators are named variables: GCC keeps an array of them in memory
// and stores it back on every iteration.
template <class O>
CONVPOOL_AVX2 void kernel_avx2(int64_t kc, const typename O::T* a, const typename O::T* b,
                               typename O::T* c, int64_t rs_c, int m, int n, bool accumulate) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int MR = 6, NR = 2 * O::W;
  V c00 = O::zero(), c01 = O::zero(), c10 = O::zero(), c11 = O::zero();
  V c20 = O::zero(), c21 = O::zero(), c30 = O::zero(), c31 = O::zero();
  V c40 = O::zero(), c41 = O::zero(), c50 = O::zero(), c51 = O::zero();
  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR) {
    const V b0 = O::load(b), b1 = O::load(b + O::W);
    V ai = O::bcast(a + 0);
    c00 = O::fma(ai, b0, c00);
    c01 = O::fma(ai, b1, c01);
    ai = O::bcast(a + 1);
    c10 = O::fma(ai, b0, c10);
    c11 = O::fma(ai, b1, c11);
    ai = O::bcast(a + 2);
    c20 = O::fma(ai, b0, c20);
    c21 = O::fma(ai, b1, c21);
    ai = O::bcast(a + 3);
    c30 = O::fma(ai, b0, c30);
    c31 = O::fma(ai, b1, c31);
    ai = O::bcast(a + 4);
    c40 = O::fma(ai, b0, c40);
    c41 = O::fma(ai, b1, c41);
    ai = O::bcast(a + 5);
    c50 = O::fma(ai, b0, c50);
    c51 = O::fma(ai, b1, c51);
  }
  const bool full = m == MR && n == NR;
  alignas(32) T tile[MR * NR];
  T* dst = full ? c : tile;
  const int64_t rs = full ? rs_c : NR;
  const bool acc = full && accumulate;
  store_row<O>(dst + 0 * rs, c00, c01, acc);
  store_row<O>(dst + 1 * rs, c10, c11, acc);
  store_row<O>(dst + 2 * rs, c20, c21, acc);
  store_row<O>(dst + 3 * rs, c30, c31, acc);
  store_row<O>(dst + 4 * rs, c40, c41, acc);
  store_row<O>(dst + 5 * rs, c50, c51, acc);
  if (!full) store_edge(tile, NR, c, rs_c, m, n, accumulate);
}

CONVPOOL_AVX2 void transpose8_avx2(const float* const* rows, float* dst, int64_t ld) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = rows[i] ? _mm256_loadu_ps(rows[i]) : _mm256_setzero_ps();
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * ld, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * ld, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// ---- AVX-512F: MR x 32 floats / MR x 16 doubles (MR = 8 by default), 2 * MR accumulators ----
// Each k step: 2 vector loads of B, MR broadcasts of A, 2 * MR FMAs.

#define CONVPOOL_AVX512 __attribute__((target("avx512f")))
#define CONVPOOL_AVX512_INLINE __attribute__((target("avx512f"), always_inline)) static inline

struct Avx512F32 {
  using T = float;
  using V = __m512;
  static constexpr int W = 16;
  CONVPOOL_AVX512_INLINE V zero() { return _mm512_setzero_ps(); }
  CONVPOOL_AVX512_INLINE V load(const T* p) { return _mm512_loadu_ps(p); }
  CONVPOOL_AVX512_INLINE V bcast(const T* p) { return _mm512_set1_ps(*p); }
  CONVPOOL_AVX512_INLINE V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  CONVPOOL_AVX512_INLINE V add(V a, V b) { return _mm512_add_ps(a, b); }
  CONVPOOL_AVX512_INLINE void store(T* p, V v) { _mm512_storeu_ps(p, v); }
};

struct Avx512F64 {
  using T = double;
  using V = __m512d;
  static constexpr int W = 8;
  CONVPOOL_AVX512_INLINE V zero() { return _mm512_setzero_pd(); }
  CONVPOOL_AVX512_INLINE V load(const T* p) { return _mm512_loadu_pd(p); }
  CONVPOOL_AVX512_INLINE V bcast(const T* p) { return _mm512_set1_pd(*p); }
  CONVPOOL_AVX512_INLINE V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  CONVPOOL_AVX512_INLINE V add(V a, V b) { return _mm512_add_pd(a, b); }
  CONVPOOL_AVX512_INLINE void store(T* p, V v) { _mm512_storeu_pd(p, v); }
};

template <class O>
CONVPOOL_AVX512_INLINE void store_row512(typename O::T* row, typename O::V r0, typename O::V r1,
                                         bool accumulate) {
  if (accumulate) {
    r0 = O::add(O::load(row), r0);
    r1 = O::add(O::load(row + O::W), r1);
  }
  O::store(row, r0);
  O::store(row + O::W, r1);
}

// MR rows (MR <= 12) of 2 vectors. Rows beyond MR are declared but never used (dead code).
template <class O, int MR>
CONVPOOL_AVX512 void kernel_avx512(int64_t kc, const typename O::T* a, const typename O::T* b,
                                   typename O::T* c, int64_t rs_c, int m, int n, bool accumulate) {
  using T = typename O::T;
  using V = typename O::V;
  static_assert(MR <= 12);
  constexpr int NR = 2 * O::W;
#define CONVPOOL_ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define CONVPOOL_DECL(i) V c##i##_0 = O::zero(), c##i##_1 = O::zero();
#define CONVPOOL_FMA(i)                     \
  if constexpr (i < MR) {                   \
    const V ai = O::bcast(a + i);           \
    c##i##_0 = O::fma(ai, b0, c##i##_0);    \
    c##i##_1 = O::fma(ai, b1, c##i##_1);    \
  }
#define CONVPOOL_STORE(i) \
  if constexpr (i < MR) store_row512<O>(dst + i * rs, c##i##_0, c##i##_1, acc);
  CONVPOOL_ROWS12(CONVPOOL_DECL)
  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR) {
    const V b0 = O::load(b), b1 = O::load(b + O::W);
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

#endif  // CONVPOOL_X86

Isa isa() { return cpu::active_isa(); }

}  // namespace

const char* active_isa() { return isa_name(isa()); }

// Cache blocks: B micro-panel (KC x NR) about 16 KiB so it stays in L1 next to the A micro-panel;
// A block (MC x KC) about 100-200 KiB and B block (KC x NC) under 1 MiB: both in the per-core L2
// (conv GEMMs often have small M, so B is rarely reused across A blocks and must not go to L3).
// AVX-512 register tile rows: CNN channel counts are multiples of 8 (64, 128, 256...), which 12
// would leave a partial tile for (64 = 5 * 12 + 4: 11% of the FMAs wasted).
#ifdef CONVPOOL_X86
constexpr int kAvx512Rows = CONVPOOL_AVX512_ROWS;
#endif

template <>
const KernelInfo<float>& kernel_info<float>() {
  static const KernelInfo<float> info = [] {
#ifdef CONVPOOL_X86
    if (isa() >= Isa::avx512)
      return KernelInfo<float>{&kernel_avx512<Avx512F32, kAvx512Rows>, kAvx512Rows, 32, 144, 192, 1024, "avx512"};
    if (isa() >= Isa::avx2) return KernelInfo<float>{&kernel_avx2<Avx2F32>, 6, 16, 192, 256, 1024, "avx2"};
#endif
    return KernelInfo<float>{&kernel_generic<float, 6, 16>, 6, 16, 96, 256, 4096, "generic"};
  }();
  return info;
}

template <>
const KernelInfo<double>& kernel_info<double>() {
  static const KernelInfo<double> info = [] {
#ifdef CONVPOOL_X86
    if (isa() >= Isa::avx512)
      return KernelInfo<double>{&kernel_avx512<Avx512F64, kAvx512Rows>, kAvx512Rows, 16, 96, 192, 512, "avx512"};
    if (isa() >= Isa::avx2) return KernelInfo<double>{&kernel_avx2<Avx2F64>, 6, 8, 96, 256, 512, "avx2"};
#endif
    return KernelInfo<double>{&kernel_generic<double, 6, 8>, 6, 8, 96, 256, 2048, "generic"};
  }();
  return info;
}

void pack_transpose8(const float* const* rows, int mr, float* dst) {
#ifdef CONVPOOL_X86
  if (mr == 8 && isa() >= Isa::avx2) {
    transpose8_avx2(rows, dst, 8);
    return;
  }
#endif
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < 8; ++j) dst[j * mr + i] = rows[i] ? rows[i][j] : 0.0f;
}

void transpose8x8(const float* const* rows, float* dst, int64_t ld) {
#ifdef CONVPOOL_X86
  if (isa() >= Isa::avx2) {
    transpose8_avx2(rows, dst, ld);
    return;
  }
#endif
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) dst[j * ld + i] = rows[i] ? rows[i][j] : 0.0f;
}

void* thread_buffer(int which, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[kThreadBuffers];
  Buffer& buf = buffers[which];
  if (buf.size < bytes) {
    std::free(buf.data);
    buf.size = static_cast<size_t>(round_up(static_cast<int64_t>(bytes), 4096));
    buf.data = std::aligned_alloc(64, buf.size);
    TORCH_CHECK(buf.data != nullptr, "convpool: out of memory for a GEMM packing buffer of ",
                buf.size, " bytes");
  }
  return buf.data;
}

}  // namespace convpool::cpu::gemm
