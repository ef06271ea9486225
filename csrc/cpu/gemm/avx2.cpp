// The GEMM kernels for AVX2 + FMA: kernels_impl.h compiled once for this ISA, and its table.
// Everything before the pragma is plain C++ (<immintrin.h>, our headers without torch), so
// nothing of torch's is built for avx2 (see simd/avx2.h).
#include <immintrin.h>

#include <cstdint>
#include <initializer_list>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#include "../simd/avx2.h"
#define CONVPOOL_GEMM_ISA avx2
#include "kernels_impl.h"

namespace convpool::cpu::gemm::avx2 {

// 6 x 16 floats / 6 x 8 doubles: 12 accumulators in 16 ymm registers. Cache blocks: the B
// micro-panel (KC x NR) about 16 KiB so it stays in L1 next to the A micro-panel; the A block
// (MC x KC) about 100-200 KiB and the B block (KC x NC) under 1 MiB: both in the per-core L2
// (conv GEMMs often have small M, so B is rarely reused across A blocks and must not go to L3).
const Kernels kKernels = {
    {&micro_kernel<float, 6>, 6, 16, 192, 256, 1024, "avx2"},
    {&micro_kernel<double, 6>, 6, 8, 96, 256, 512, "avx2"},
    &transpose8x8,
};

}  // namespace convpool::cpu::gemm::avx2
#endif
