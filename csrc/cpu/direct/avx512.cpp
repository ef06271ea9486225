// The direct-convolution tile for AVX-512F (16 lanes): kernels_impl.h compiled once for this ISA.
// Everything before the pragma is plain C++ (<immintrin.h>, our headers without torch), so
// nothing of torch's is built for avx512 (see simd/avx512.h).
#include <immintrin.h>

#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx2,fma")
#include "../simd/avx512.h"
#define CONVPOOL_DIRECT_ISA avx512
#include "kernels_impl.h"

namespace convpool::cpu::direct::avx512 {

// 12 pixels x 32 channels: 24 accumulators, 2 weight vectors, 1 broadcast of the 32 zmm registers.
const Kernels kKernels = make_kernels<12>("avx512");

}  // namespace convpool::cpu::direct::avx512
#endif
