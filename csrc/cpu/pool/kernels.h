// What the pool dispatcher (dispatch.cpp) and the vector kernels compiled once per ISA
// (kernels_impl.h, built by avx2.cpp and avx512.cpp) share: a call's operands as raw pointers and
// strides, the window geometry, and the table of kernel functions each ISA fills. Plain C++ (no
// torch), so the per-ISA files include nothing of torch's.
#pragma once

#include <cstdint>

#include "../../params.h"
#include "../helpers.h"

namespace convpool::cpu::pool {

// Output columns [begin, end) whose tap `kw` lands inside the input row.
inline Range columns_hitting(const Pool2dParams& p, int64_t kw) {
  const int64_t offset = kw * p.dilation_w - p.pad_w;  // iw = ow * stride_w + offset
  return outputs_inside(offset, p.stride_w, p.in_width, p.out_width);
}

// Output rows [begin, end) whose window has a tap in input rows [r0, r1).
inline Range rows_reaching(const Pool2dParams& p, int64_t r0, int64_t r1) {
  const int64_t reach = (p.kernel_h - 1) * p.dilation_h;  // window rows oh * stride_h - pad_h + [0, reach]
  const int64_t lo = r0 + p.pad_h - reach;
  const int64_t begin = lo <= 0 ? 0 : (lo + p.stride_h - 1) / p.stride_h;
  const int64_t end = std::min(p.out_height, (r1 - 1 + p.pad_h) / p.stride_h + 1);
  return {begin, std::max(begin, end)};
}

// A forward call: float input, values, and indices (nullptr: the values alone).
struct Forward {
  Pool2dParams p;
  const float* in;
  Strides4 is;
  float* out;
  Strides4 vs;
  int64_t* idx;
  Strides4 xs;
};

// A backward call: float grad_output, the forward's int64 indices, grad_input (dense: planes
// row-major for the planes kernel, channels_last for the channels_last kernel).
struct Backward {
  Pool2dParams p;
  const float* go;
  Strides4 gs;
  const int64_t* idx;
  Strides4 xs;
  float* gi;
  Strides4 is;
  int64_t band_rows;  // channels_last: grad_input rows per task
};

struct Kernels {
  int64_t lanes;                // floats per vector
  int64_t register_channels;    // channels_last pixels with at most this many channels keep them in registers
  // NCHW output rows [r0, r1) of N * C * out_height (unit-stride output rows; rows_supported).
  void (*forward_rows)(const Forward&, int64_t r0, int64_t r1);
  // channels_last output pixels [q0, q1) of N * out_height * out_width.
  void (*forward_channels_last)(const Forward&, int64_t q0, int64_t q1);
  // Planes [q0, q1) of N * C, each zeroed and scattered into. false: an index outside [-1,
  // plane) was met (nothing written out of bounds; the caller reruns the portable kernel, which
  // names it).
  bool (*backward_planes)(const Backward&, int64_t q0, int64_t q1);
  // Tasks [t0, t1) of N * bands (band_rows grad_input rows each): each task zeroes and sums its
  // rows. false: an index that is not one of its window's taps (or outside the plane) was met;
  // the caller reruns the portable kernel.
  bool (*backward_channels_last)(const Backward&, int64_t t0, int64_t t1);
};

// Whether forward_rows handles this problem: unit-stride output rows, int32 lane offsets.
inline bool rows_supported(const Pool2dParams& p, const Strides4& is, const Strides4& vs,
                           const Strides4* xs) {
  const int64_t step = p.stride_w * is.w;
  return vs.w == 1 && (!xs || xs->w == 1) && is.w >= 0 && step < (int64_t(1) << 26);
}

// The kernels of one ISA (kernels_impl.h), defined by avx512.cpp and avx2.cpp.
namespace avx512 {
extern const Kernels kKernels;
}
namespace avx2 {
extern const Kernels kKernels;
}

}  // namespace convpool::cpu::pool
