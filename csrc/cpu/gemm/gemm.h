// Our own CPU GEMM, C (+)= A * B, in the BLIS style (Goto & van de Geijn; Van Zee & van de Geijn):
//
//   for jc (NC columns of C)        B block  [KC x NC] packed once, in NR-wide column panels
//     for pc (KC of the reduction)
//       for ic (MC rows of C)       A block  [MC x KC] packed in MR-tall row panels (L2 resident)
//         for jr, ir                micro-kernel: an MR x NR tile of C held in registers
//
// Operands are not matrices but *packers*: callables that write a block into the packed panel
// format. A strided-matrix packer covers plain GEMMs; conv2d passes packers that read its input
// directly (implicit im2col) so no column buffer is ever materialised.
//
// The micro-kernel (AVX-512, AVX2+FMA or portable C++) is chosen once at run time from the CPU's
// features, capped by the environment variable CONVPOOL_CPU_ISA=generic|avx2|avx512 (read at first
// use; "generic" forces the portable path, e.g. to test it). It is written once over the vector
// vocabulary (kernels_impl.h over simd/<isa>.h) and compiled once per ISA (generic.cpp, avx2.cpp,
// avx512.cpp: namespace gemm::<isa>, each with its table of kernels.h); dispatch.cpp picks the
// table. Panel sizes MR/NR belong to the kernel, so packers read them from the KernelInfo they
// are handed.
//
// Determinism: the K loop of every C element runs in the same order (pc blocks ascending, k
// ascending inside the kernel) whatever the thread count or split, so results are bitwise
// identical for 1 or N threads. Threads split C into disjoint column (or row) ranges.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "kernels.h"

namespace convpool::cpu::gemm {

// MicroKernel and KernelInfo (the register tile and cache blocks): kernels.h.

// The kernel for this CPU (and CONVPOOL_CPU_ISA); defined in dispatch.cpp.
template <typename T>
const KernelInfo<T>& kernel_info();

// Name of the instruction set the kernels use (isa.h's, as a name): "avx512", "avx2" or "generic".
const char* active_isa();

// Per-thread buffers, grown on demand and kept: 0, 1 the GEMM's packed panels (bounded by MC*KC +
// KC*NC elements), 2, 3 conv2d's packing tables, 4, 5 Winograd's transformed weight and tile block.
constexpr int kThreadBuffers = 6;
void* thread_buffer(int which, size_t bytes);

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// dst[j * mr + i] = rows[i][j] for i < mr, j < 8; a null row reads as zeros. An 8 x 8 register
// transpose when mr == 8 (the ISA's transpose8x8, kernels_impl.h); used to pack channels_last
// input (dispatch.cpp).
void pack_transpose8(const float* const* rows, int mr, float* dst);

// dst[j * ld + i] = rows[i][j] for i, j < 8 (null rows read as zeros): an 8 x 8 block transposed
// into a panel of row stride ld: the ISA's kernel (registers with AVX2 / AVX-512).
void transpose8x8(const float* const* rows, float* dst, int64_t ld);

// ---- strided-matrix packers ------------------------------------------------------------------

// A[i][k] = a[i * rs + k * cs]. Writes panels of MR rows: dst[panel][k][i], zero-padded.
template <typename T>
struct StridedA {
  const T* a;
  int64_t rs, cs;
  void operator()(const KernelInfo<T>& ki, int64_t i0, int64_t m, int64_t k0, int64_t kc,
                  T* dst) const {
    const int mr = ki.mr;
    for (int64_t ip = 0; ip < m; ip += mr, dst += kc * mr) {
      const int rows = static_cast<int>(std::min<int64_t>(mr, m - ip));
      const T* src = a + (i0 + ip) * rs + k0 * cs;
      if (rs == 1 && rows == mr) {  // columns of the panel are contiguous
        for (int64_t k = 0; k < kc; ++k)
          for (int i = 0; i < mr; ++i) dst[k * mr + i] = src[k * cs + i];
        continue;
      }
      for (int i = 0; i < mr; ++i) {  // one row at a time: sequential reads when cs == 1
        if (i < rows) {
          const T* row = src + i * rs;
          for (int64_t k = 0; k < kc; ++k) dst[k * mr + i] = row[k * cs];
        } else {
          for (int64_t k = 0; k < kc; ++k) dst[k * mr + i] = T(0);
        }
      }
    }
  }
};

// B[k][j] = b[k * rs + j * cs]. Writes panels of NR columns: dst[panel][k][j], zero-padded.
template <typename T>
struct StridedB {
  const T* b;
  int64_t rs, cs;
  void operator()(const KernelInfo<T>& ki, int64_t k0, int64_t kc, int64_t j0, int64_t n,
                  T* dst) const {
    const int nr = ki.nr;
    for (int64_t jp = 0; jp < n; jp += nr, dst += kc * nr) {
      const int cols = static_cast<int>(std::min<int64_t>(nr, n - jp));
      const T* src = b + k0 * rs + (j0 + jp) * cs;
      if (cs == 1) {  // rows of the panel are contiguous
        for (int64_t k = 0; k < kc; ++k) {
          const T* row = src + k * rs;
          T* out = dst + k * nr;
          for (int j = 0; j < cols; ++j) out[j] = row[j];
          for (int j = cols; j < nr; ++j) out[j] = T(0);
        }
        continue;
      }
      for (int j = 0; j < nr; ++j) {  // one column at a time: sequential reads when rs == 1
        if (j < cols) {
          const T* col = src + j * cs;
          for (int64_t k = 0; k < kc; ++k) dst[k * nr + j] = col[k * rs];
        } else {
          for (int64_t k = 0; k < kc; ++k) dst[k * nr + j] = T(0);
        }
      }
    }
  }
};

// ---- driver ----------------------------------------------------------------------------------

// Serial BLIS loops over C[i0:i1, j0:j1] (C row-major with row stride ldc, unit column stride).
template <typename T, class PackA, class PackB>
void gemm_block(const KernelInfo<T>& ki, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t k,
                const PackA& pack_a, const PackB& pack_b, T* c, int64_t ldc, bool accumulate) {
  const int64_t kc_max = std::min(ki.kc, k);
  T* a_buf = static_cast<T*>(
      thread_buffer(0, sizeof(T) * round_up(std::min(ki.mc, i1 - i0), ki.mr) * kc_max));
  T* b_buf = static_cast<T*>(
      thread_buffer(1, sizeof(T) * round_up(std::min(ki.nc, j1 - j0), ki.nr) * kc_max));
  for (int64_t jc = j0; jc < j1; jc += ki.nc) {
    const int64_t nc = std::min(ki.nc, j1 - jc);
    for (int64_t pc = 0; pc < k; pc += ki.kc) {
      const int64_t kc = std::min(ki.kc, k - pc);
      const bool acc = accumulate || pc > 0;
      pack_b(ki, pc, kc, jc, nc, b_buf);
      for (int64_t ic = i0; ic < i1; ic += ki.mc) {
        const int64_t mc = std::min(ki.mc, i1 - ic);
        pack_a(ki, ic, mc, pc, kc, a_buf);
        for (int64_t jr = 0; jr < nc; jr += ki.nr) {
          const int n = static_cast<int>(std::min<int64_t>(ki.nr, nc - jr));
          const T* b_panel = b_buf + jr * kc;
          for (int64_t ir = 0; ir < mc; ir += ki.mr) {
            const int m = static_cast<int>(std::min<int64_t>(ki.mr, mc - ir));
            ki.kernel(kc, a_buf + ir * kc, b_panel, c + (ic + ir) * ldc + jc + jr, ldc, m, n, acc);
          }
        }
      }
    }
  }
}

// C[m x n] (+)= A[m x k] * B[k x n]; C row-major with row stride ldc. Threads take disjoint
// ranges of the larger of m and n (in whole register tiles); see the determinism note above.
// With k == 0, C is zeroed (or left alone when accumulating).
template <typename T, class PackA, class PackB>
void gemm(int64_t m, int64_t n, int64_t k, const PackA& pack_a, const PackB& pack_b, T* c,
          int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, T(0));
    return;
  }
  const KernelInfo<T>& ki = kernel_info<T>();
  // Below ~4 MFLOP a second thread costs more than it saves.
  const int64_t threads =
      (at::in_parallel_region() || m * n * k < (int64_t(1) << 21)) ? 1 : at::get_num_threads();
  const bool split_n = n >= m;
  const int64_t unit = split_n ? ki.nr : ki.mr;
  const int64_t units = ((split_n ? n : m) + unit - 1) / unit;
  const int64_t tasks = std::max<int64_t>(1, std::min(threads, units));
  if (tasks == 1) {
    gemm_block(ki, 0, m, 0, n, k, pack_a, pack_b, c, ldc, accumulate);
    return;
  }
  const int64_t per_task = (units + tasks - 1) / tasks * unit;
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t lo = t * per_task;
      const int64_t hi = std::min(split_n ? n : m, lo + per_task);
      if (lo >= hi) continue;
      if (split_n)
        gemm_block(ki, 0, m, lo, hi, k, pack_a, pack_b, c, ldc, accumulate);
      else
        gemm_block(ki, lo, hi, 0, n, k, pack_a, pack_b, c, ldc, accumulate);
    }
  });
}

// Plain strided GEMM: C = A * B (or C += A * B), A[i][k] = a[i*rsa + k*csa], B[k][j] =
// b[k*rsb + j*csb].
template <typename T>
void gemm_strided(int64_t m, int64_t n, int64_t k, const T* a, int64_t rsa, int64_t csa,
                  const T* b, int64_t rsb, int64_t csb, T* c, int64_t ldc, bool accumulate) {
  gemm(m, n, k, StridedA<T>{a, rsa, csa}, StridedB<T>{b, rsb, csb}, c, ldc, accumulate);
}

}  // namespace convpool::cpu::gemm
