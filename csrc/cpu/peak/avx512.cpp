// The FMA peak loop for avx512 (16 float lanes): kernels_impl.h compiled once for this ISA.
// Everything before the pragma is plain C++, so nothing of torch's is built for avx512.
#include <immintrin.h>

#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx2,fma")
#include "../simd/avx512.h"
#define CONVPOOL_PEAK_ISA avx512
#include "kernels_impl.h"
#endif
