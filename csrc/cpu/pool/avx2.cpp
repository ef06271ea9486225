// The max_pool2d vector kernels for AVX2 + FMA (8 lanes): kernels_impl.h compiled once for this ISA.
// Everything before the pragma is plain C++ (the standard library, <immintrin.h>, our headers
// without torch), so nothing of torch's is built for avx2 (see simd/avx2.h).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#include "../simd/avx2.h"
#define CONVPOOL_POOL_ISA avx2
#include "kernels_impl.h"
#endif
