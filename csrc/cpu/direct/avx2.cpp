// The direct-convolution tile for AVX2 + FMA (8 lanes): kernels_impl.h compiled once for this ISA.
// Everything before the pragma is plain C++ (<immintrin.h>, our headers without torch), so
// nothing of torch's is built for avx2 (see simd/avx2.h).
#include <immintrin.h>

#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#include "../simd/avx2.h"
#define CONVPOOL_DIRECT_ISA avx2
#include "kernels_impl.h"

namespace convpool::cpu::direct::avx2 {

// 6 pixels x 16 channels: 12 accumulators, 2 weight vectors, 1 broadcast of the 16 ymm registers.
const Kernels kKernels = make_kernels<6>("avx2");

}  // namespace convpool::cpu::direct::avx2
#endif
