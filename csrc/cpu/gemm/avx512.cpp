// The GEMM kernels for AVX-512F: kernels_impl.h compiled once for this ISA, and its table.
// Everything before the pragma is plain C++ (<immintrin.h>, our headers without torch), so
// nothing of torch's is built for avx512 (see simd/avx512.h).
#include <immintrin.h>

#include <cstdint>

#include "kernels.h"

// Register tile rows (at most 12); a build may override it (-DCONVPOOL_AVX512_ROWS=...).
#ifndef CONVPOOL_AVX512_ROWS
#define CONVPOOL_AVX512_ROWS 8
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx2,fma")
#include "../simd/avx512.h"
#define CONVPOOL_GEMM_ISA avx512
#include "kernels_impl.h"

namespace convpool::cpu::gemm::avx512 {

// MR x 32 floats / MR x 16 doubles, 2 * MR accumulators of the 32 zmm registers. MR = 8: CNN
// channel counts are multiples of 8 (64, 128, 256...), which 12 would leave a partial tile for
// (64 = 5 * 12 + 4: 11% of the FMAs wasted). Cache blocks as in avx2.cpp: the B micro-panel in
// L1, the A and B blocks in the per-core L2.
constexpr int kRows = CONVPOOL_AVX512_ROWS;
const Kernels kKernels = {
    {&micro_kernel<float, kRows>, kRows, 32, 144, 192, 1024, "avx512"},
    {&micro_kernel<double, kRows>, kRows, 16, 96, 192, 512, "avx512"},
    &transpose8x8,
};

}  // namespace convpool::cpu::gemm::avx512
#endif
