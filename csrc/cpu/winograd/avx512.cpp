// Winograd's transforms for AVX-512F: kernels_impl.h compiled once for this ISA.
// Everything before the pragma is plain C++ (the standard library, <immintrin.h>, our headers
// without torch), so nothing of torch's is built for avx512 (see simd/avx512.h).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx2,fma")
#include "../simd/avx512.h"
#define CONVPOOL_WINOGRAD_ISA avx512
#include "kernels_impl.h"
#endif
