// The max_pool2d vector kernels for AVX-512F (16 lanes): kernels_impl.h compiled once for this ISA.
// Everything before the pragma is plain C++ (the standard library, <immintrin.h>, our headers
// without torch), so nothing of torch's is built for avx512 (see simd/avx512.h).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx2,fma")
#include "../simd/avx512.h"
#define CONVPOOL_POOL_ISA avx512
#include "kernels_impl.h"
#endif
