// The FMA peak loop for avx2 (8 float lanes): kernels_impl.h compiled once for this ISA.
// Everything before the pragma is plain C++, so nothing of torch's is built for avx2.
#include <immintrin.h>

#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#include "../simd/avx2.h"
#define CONVPOOL_PEAK_ISA avx2
#include "kernels_impl.h"
#endif
