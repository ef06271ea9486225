// What the GEMM driver (gemm.h, dispatch.cpp) and its kernels compiled once per ISA
// (kernels_impl.h, built by generic.cpp, avx2.cpp and avx512.cpp) share: the micro-kernel's
// signature, its register tile and cache blocks, and the table each ISA fills. Plain C++ (no
// torch), so the per-ISA files include nothing of torch's.
#pragma once

#include <cstdint>

namespace convpool::cpu::gemm {

// c[i * rs_c + j] (+)= sum_k a[k * mr + i] * b[k * nr + j] for i < m, j < n (m <= mr, n <= nr).
// `a` and `b` are packed panels; rows i >= m / columns j >= n of them hold zeros.
template <typename T>
using MicroKernel = void (*)(int64_t kc, const T* a, const T* b, T* c, int64_t rs_c, int m, int n,
                             bool accumulate);

template <typename T>
struct KernelInfo {
  MicroKernel<T> kernel;
  int mr, nr;          // register tile
  int64_t mc, kc, nc;  // cache blocks: A block MC x KC in L2, B panel KC x NR in L1
  const char* isa;
};

// One ISA's kernels: the float and double micro-kernels with their blocking, and the 8 x 8
// packing transpose (dst[j * ld + i] = rows[i][j], i, j < 8; a null row reads as zeros).
struct Kernels {
  KernelInfo<float> f32;
  KernelInfo<double> f64;
  void (*transpose8x8)(const float* const* rows, float* dst, int64_t ld);
};

// The kernels of each ISA (kernels_impl.h), defined by generic.cpp, avx2.cpp and avx512.cpp
// (the last two on x86-64 only).
namespace generic {
extern const Kernels kKernels;
}
namespace avx2 {
extern const Kernels kKernels;
}
namespace avx512 {
extern const Kernels kKernels;
}

}  // namespace convpool::cpu::gemm
