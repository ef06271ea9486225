// What the depthwise dispatcher (dispatch.cpp) and the vector kernels compiled once per ISA
// (kernels_impl.h, built by avx2.cpp and avx512.cpp) share: a correlation's geometry, a call's
// operands as raw pointers and strides, and the table of kernel functions each ISA fills. Plain
// C++ (no torch), so the per-ISA files include nothing of torch's.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

#include "../../params.h"
#include "../helpers.h"

namespace convpool::cpu::depthwise {

// A correlation's geometry (see dispatch.cpp's header comment); `in` is what it reads, `out` what it writes.
struct Correlation {
  int64_t in_h, in_w, out_h, out_w;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t off_h, off_w;    // input row/column of tap 0 = output row/column * stride + off
  int64_t step_h, step_w;  // between taps
};

inline Correlation fprop_correlation(const Conv2dParams& p) {
  return {p.in_height, p.in_width, p.out_height, p.out_width, p.kernel_h, p.kernel_w,
          p.stride_h, p.stride_w, -p.pad_h, -p.pad_w, p.dilation_h, p.dilation_w};
}

// stride-1 dgrad: grad_input[i] = sum over taps of w[tap] * grad_output[i + pad - tap * dilation].
inline Correlation dgrad_correlation(const Conv2dParams& p) {
  return {p.out_height, p.out_width, p.in_height, p.in_width, p.kernel_h, p.kernel_w,
          1, 1, p.pad_h, p.pad_w, -p.dilation_h, -p.dilation_w};
}

// Output columns for which every tap lands inside the input row.
inline Range interior(const Correlation& g) {
  int64_t lo = 0, hi = g.out_w;
  for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
    const Range r = outputs_inside(g.off_w + kw * g.step_w, g.stride_w, g.in_w, g.out_w);
    lo = std::max(lo, r.begin);
    hi = std::min(hi, r.end);
  }
  lo = std::min(lo, g.out_w);  // a tap that never lands inside leaves no interior at all
  return {lo, std::max(lo, hi)};
}

// Output columns [begin, end) for which tap kw lands inside the input row.
struct Columns {
  int64_t begin, end, offset;  // iw = ow * stride_w + offset
};

inline Columns columns_for_tap(const Conv2dParams& p, int64_t kw) {
  const int64_t offset = kw * p.dilation_w - p.pad_w;
  const Range r = outputs_inside(offset, p.stride_w, p.in_width, p.out_width);
  return {r.begin, r.end, offset};
}

struct Args {
  Conv2dParams p;
  Correlation geo;
  int64_t channels;
  const float* x;  // what is read: input (fprop, wgrad) or grad_output (dgrad)
  Strides4 xs;
  float* y;        // what is written: output, grad_input or grad_weight
  Strides4 ys;
  const float* go;  // wgrad: grad_output
  Strides4 gos;
  const float* w;  // tap-major [taps][C] (channels_last kernels) or [C][taps] (planes)
  const float* bias;
  int64_t band_rows;  // output rows per task of the channel-blocked NCHW kernel
};

// A tile's floats, left uninitialized (the kernels write before they read).
inline std::unique_ptr<float[]> tile_buffer(int64_t floats) { return std::unique_ptr<float[]>(new float[floats]); }

struct Kernels {
  int64_t lanes;  // floats per vector
  void (*correlate_cl)(const Args&, int64_t, int64_t);
  void (*correlate_planes)(const Args&, int64_t, int64_t);
  void (*correlate_blocked)(const Args&, int64_t, int64_t);
  void (*correlate_flat)(const Args&, int64_t, int64_t);
  void (*wgrad_flat)(const Args&, int64_t, int64_t);
  void (*dgrad_strided_cl)(const Args&, int64_t, int64_t);
  void (*dgrad_strided_blocked)(const Args&, int64_t, int64_t);
  void (*wgrad_cl)(const Args&, int64_t, int64_t, int64_t, int64_t, double*);
  void (*wgrad_planes)(const Args&, int64_t, int64_t);
  void (*wgrad_blocked)(const Args&, int64_t, int64_t);
};

// The kernels of one ISA (kernels_impl.h), defined by avx512.cpp and avx2.cpp.
namespace avx512 {
extern const Kernels kKernels;
}
namespace avx2 {
extern const Kernels kKernels;
}

}  // namespace convpool::cpu::depthwise
