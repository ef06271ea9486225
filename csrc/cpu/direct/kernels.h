// What the direct-convolution driver (dispatch.cpp) and its tile kernel compiled once per ISA
// (kernels_impl.h, built by generic.cpp, avx2.cpp and avx512.cpp) share: the tile's signature and
// the table each ISA fills. Plain C++ (no torch), so the per-ISA files include nothing of torch's.
#pragma once

#include <cstdint>

namespace convpool::cpu::direct {

// The most output pixels one tile holds in registers (AVX-512: 12 rows x 2 vectors = 24 of the 32
// zmm registers, 2 for the weight vectors, 1 for the broadcast input value).
constexpr int kMaxRows = 12;

// One register tile of m rows (m = the table slot + 1) x n output channels (n <= nr):
//   out[i * os + j] = init[j] + sum over t < taps, c < cin of
//                     x[i * xs + off[t] + c * xc] * w[t * wts + c * nr + j]
// for i < m, j < n; init null reads as zeros. `x` is a zero-padded channels-last copy of the
// input (so every read is inside it), `w` packed channel vectors (columns j >= n hold zeros).
// fprop and dgrad: rows are output pixels, (t, c) the reduction's taps and channels (xc = 1,
// w the packed weight, wts = cin * nr). wgrad: rows are weight entries (kw, c) of a kernel row,
// (t, c) the output rows and columns (xc = the stride's step in the copy, w the packed
// grad_output). Only the n valid channels of each row are written.
using Tile = void (*)(const float* x, int64_t xs, const int64_t* off, int64_t taps, int64_t cin,
                      int64_t xc, const float* w, int64_t wts, const float* init, float* out,
                      int64_t os, int n);

struct Kernels {
  int mr, nr;                // the widest tile: mr rows x nr (two vectors of) channels
  Tile tile[kMaxRows];       // tile[m - 1] computes m rows, m <= mr
  const char* isa;
};

namespace generic {
extern const Kernels kKernels;
}
namespace avx2 {
extern const Kernels kKernels;
}
namespace avx512 {
extern const Kernels kKernels;
}

}  // namespace convpool::cpu::direct
