// CUDA max_pool2d: forward (values + int64 indices, or the values alone) with PyTorch's rules, and
// a gather backward.
//
// Forward, one thread per output element: the window starts from its first in-bounds,
// dilation-aligned element with value `lowest` (-inf); an element replaces the maximum if it is
// greater or NaN, so the first of tied maxima wins and the last NaN wins. A window without any input
// element (ceil_mode + padding/dilation) gives -inf and kNoInputIndex.
//
// Backward, one thread per input element: it visits the (at most KH x KW) windows that can contain
// it, in increasing output order, and adds the gradient of those whose index chose it. No atomics,
// a fixed order: deterministic, and the same sums in the same order as the CPU kernel.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "kernels.h"
#include "indexing.cuh"
#include "launch.cuh"

namespace convpool::CONVPOOL_KERNEL_NS {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ inline bool replaces_max(T value, T current) {
  if constexpr (std::is_integral_v<T>) {
    return value > current;
  } else {
    const float v = static_cast<float>(value);  // exact for half/bfloat16; double stays double
    if constexpr (std::is_same_v<T, double>) {
      return value > current || value != value;
    } else {
      return v > static_cast<float>(current) || v != v;
    }
  }
}

// First tap of [0, kernel) at start + tap * dilation >= 0, and one past the last below size.
__device__ inline void valid_taps(int64_t start, int64_t kernel, int64_t dilation, int64_t size,
                                  int64_t& begin, int64_t& end) {
  begin = start < 0 ? (-start + dilation - 1) / dilation : 0;
  end = start >= size ? 0 : (size - start + dilation - 1) / dilation;
  if (end > kernel) end = kernel;
  if (end < begin) end = begin;
}

template <typename T, bool kStoreIndices>
__global__ void __launch_bounds__(kThreads)
    max_pool2d_forward_kernel(Pool2dParams p, const T* input, Strides4 is, T lowest, T* values,
                              Strides4 vs, int64_t* indices, Strides4 xs, bool channels_fastest) {
  const int64_t total = p.batch * p.channels * p.out_height * p.out_width;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const Coord o = coord(e, p.channels, p.out_height, p.out_width, channels_fastest);
    const int64_t h0 = o.h * p.stride_h - p.pad_h, w0 = o.w * p.stride_w - p.pad_w;
    int64_t kh_begin, kh_end, kw_begin, kw_end;
    valid_taps(h0, p.kernel_h, p.dilation_h, p.in_height, kh_begin, kh_end);
    valid_taps(w0, p.kernel_w, p.dilation_w, p.in_width, kw_begin, kw_end);
    T best = lowest;
    int64_t best_index = kNoInputIndex;
    if (kh_begin < kh_end && kw_begin < kw_end) {
      best_index = (h0 + kh_begin * p.dilation_h) * p.in_width + w0 + kw_begin * p.dilation_w;
    }
    const T* plane = input + o.n * is.n + o.c * is.c;
    for (int64_t kh = kh_begin; kh < kh_end; ++kh) {
      const int64_t ih = h0 + kh * p.dilation_h;
      for (int64_t kw = kw_begin; kw < kw_end; ++kw) {
        const int64_t iw = w0 + kw * p.dilation_w;
        const T v = plane[ih * is.h + iw * is.w];
        if (replaces_max(v, best)) {
          best = v;
          if constexpr (kStoreIndices) best_index = ih * p.in_width + iw;
        }
      }
    }
    values[o.n * vs.n + o.c * vs.c + o.h * vs.h + o.w * vs.w] = best;
    if constexpr (kStoreIndices)
      indices[o.n * xs.n + o.c * xs.c + o.h * xs.h + o.w * xs.w] = best_index;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    max_pool2d_backward_kernel(Pool2dParams p, const T* grad_output, Strides4 gs,
                               const int64_t* indices, Strides4 xs, T* grad_input, Strides4 is,
                               bool channels_fastest) {
  using Acc = acc_type<T>;
  const int64_t total = p.batch * p.channels * p.in_height * p.in_width;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const Coord i = coord(e, p.channels, p.in_height, p.in_width, channels_fastest);
    const int64_t self = i.h * p.in_width + i.w;
    Acc sum = Acc(0);
    // Larger taps belong to earlier windows: kh, kw descending visit oh, ow ascending.
    for (int64_t kh = p.kernel_h - 1; kh >= 0; --kh) {
      const int64_t th = i.h + p.pad_h - kh * p.dilation_h;
      if (th < 0 || th % p.stride_h != 0) continue;
      const int64_t oh = th / p.stride_h;
      if (oh >= p.out_height) continue;
      for (int64_t kw = p.kernel_w - 1; kw >= 0; --kw) {
        const int64_t tw = i.w + p.pad_w - kw * p.dilation_w;
        if (tw < 0 || tw % p.stride_w != 0) continue;
        const int64_t ow = tw / p.stride_w;
        if (ow >= p.out_width) continue;
        if (indices[i.n * xs.n + i.c * xs.c + oh * xs.h + ow * xs.w] == self)
          sum += static_cast<Acc>(grad_output[i.n * gs.n + i.c * gs.c + oh * gs.h + ow * gs.w]);
      }
    }
    grad_input[i.n * is.n + i.c * is.c + i.h * is.h + i.w * is.w] = static_cast<T>(sum);
  }
}

unsigned blocks_for(int64_t total) {
  const int64_t blocks = ceil_div(total, kThreads);
  return grid_dim(blocks < 65536 ? blocks : 65536, kMaxGridX);
}

}  // namespace

template <typename T>
void max_pool2d_forward(const Pool2dParams& p, const T* input, Strides4 is, T lowest, T* values,
                        Strides4 vs, int64_t* indices, Strides4 xs, void* stream) {
  const int64_t total = p.batch * p.channels * p.out_height * p.out_width;
  const bool channels_fastest = vs.c == 1 && p.channels > 1;
  if (indices) {
    launch(max_pool2d_forward_kernel<T, true>, dim3(blocks_for(total)), dim3(kThreads), 0, stream,
           p, input, is, lowest, values, vs, indices, xs, channels_fastest);
  } else {
    launch(max_pool2d_forward_kernel<T, false>, dim3(blocks_for(total)), dim3(kThreads), 0, stream,
           p, input, is, lowest, values, vs, indices, xs, channels_fastest);
  }
}

template <typename T>
void max_pool2d_backward(const Pool2dParams& p, const T* grad_output, Strides4 gs,
                         const int64_t* indices, Strides4 xs, T* grad_input, Strides4 is,
                         void* stream) {
  const int64_t total = p.batch * p.channels * p.in_height * p.in_width;
  launch(max_pool2d_backward_kernel<T>, dim3(blocks_for(total)), dim3(kThreads), 0, stream, p,
         grad_output, gs, indices, xs, grad_input, is, is.c == 1 && p.channels > 1);
}

#define CONVPOOL_INSTANTIATE_MAX_POOL2D_FORWARD(T)                                           \
  template void max_pool2d_forward<T>(const Pool2dParams&, const T*, Strides4, T, T*, Strides4, \
                                      int64_t*, Strides4, void*);
#define CONVPOOL_INSTANTIATE_MAX_POOL2D_BACKWARD(T)                                       \
  template void max_pool2d_backward<T>(const Pool2dParams&, const T*, Strides4, const int64_t*, \
                                       Strides4, T*, Strides4, void*);

CONVPOOL_INSTANTIATE_MAX_POOL2D_FORWARD(float)
CONVPOOL_INSTANTIATE_MAX_POOL2D_FORWARD(double)
CONVPOOL_INSTANTIATE_MAX_POOL2D_FORWARD(c10::Half)
CONVPOOL_INSTANTIATE_MAX_POOL2D_FORWARD(c10::BFloat16)
CONVPOOL_INSTANTIATE_MAX_POOL2D_FORWARD(uint8_t)
CONVPOOL_INSTANTIATE_MAX_POOL2D_FORWARD(int8_t)
CONVPOOL_INSTANTIATE_MAX_POOL2D_FORWARD(int16_t)
CONVPOOL_INSTANTIATE_MAX_POOL2D_FORWARD(int32_t)
CONVPOOL_INSTANTIATE_MAX_POOL2D_FORWARD(int64_t)
CONVPOOL_INSTANTIATE_MAX_POOL2D_BACKWARD(float)
CONVPOOL_INSTANTIATE_MAX_POOL2D_BACKWARD(double)
CONVPOOL_INSTANTIATE_MAX_POOL2D_BACKWARD(c10::Half)
CONVPOOL_INSTANTIATE_MAX_POOL2D_BACKWARD(c10::BFloat16)

}  // namespace convpool::CONVPOOL_KERNEL_NS
