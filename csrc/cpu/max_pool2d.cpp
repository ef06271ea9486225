// CPU max_pool2d: forward (values + int64 indices) and backward.
//
// Rules shared with PyTorch: a window starts from its first in-bounds, dilation-aligned element
// with value -inf (lowest for integers); an element replaces the maximum if it is greater or NaN.
// So the first of tied maxima wins, the last NaN wins, padding is never selected, and an all -inf
// window reports its first valid element. Tensors are read and written through their strides.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/NumericUtils.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "../max_pool2d_op.h"
#include "../emu/routing.h"

namespace convpool::cpu {
namespace {

// Taps [begin, end) of one window dimension that land inside [0, size).
struct TapRange {
  int64_t begin, end;
};

inline TapRange valid_taps(int64_t start, int64_t kernel, int64_t dilation, int64_t size) {
  const int64_t begin = start < 0 ? (-start + dilation - 1) / dilation : 0;
  const int64_t end = start >= size ? 0 : std::min(kernel, (size - start + dilation - 1) / dilation);
  return {begin, std::max(begin, end)};
}

template <typename scalar_t>
scalar_t lowest() {
  if constexpr (std::numeric_limits<scalar_t>::has_infinity) {
    return -std::numeric_limits<scalar_t>::infinity();
  } else {
    return std::numeric_limits<scalar_t>::lowest();
  }
}

template <typename scalar_t>
inline bool replaces_max(scalar_t value, scalar_t current) {
  if constexpr (std::is_integral_v<scalar_t>) {
    return value > current;
  } else {
    return value > current || at::_isnan(value);
  }
}

template <typename scalar_t>
void forward_impl(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                  at::Tensor& indices) {
  const Strides4 is = strides4(input), vs = strides4(values), xs = strides4(indices);
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out = values.mutable_data_ptr<scalar_t>();
  int64_t* idx = indices.mutable_data_ptr<int64_t>();
  const int64_t pixels = p.out_height * p.out_width;
  const int64_t window = p.kernel_h * p.kernel_w;
  at::parallel_for(0, p.batch * p.channels * pixels, std::max<int64_t>(1, 8192 / window),
                   [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      // Channel fastest when the input is channels_last, width fastest otherwise.
      int64_t n, c, oh, ow;
      if (is.c == 1 && p.channels > 1) {
        c = i % p.channels;
        const int64_t pix = (i / p.channels) % pixels;
        n = i / (p.channels * pixels);
        oh = pix / p.out_width;
        ow = pix % p.out_width;
      } else {
        ow = i % p.out_width;
        oh = (i / p.out_width) % p.out_height;
        c = (i / pixels) % p.channels;
        n = i / (pixels * p.channels);
      }
      const int64_t h0 = oh * p.stride_h - p.pad_h;
      const int64_t w0 = ow * p.stride_w - p.pad_w;
      const TapRange th = valid_taps(h0, p.kernel_h, p.dilation_h, p.in_height);
      const TapRange tw = valid_taps(w0, p.kernel_w, p.dilation_w, p.in_width);
      const scalar_t* plane = in + n * is.n + c * is.c;
      scalar_t best = lowest<scalar_t>();
      int64_t best_index = kNoInputIndex;
      if (th.begin < th.end && tw.begin < tw.end) {
        best_index = (h0 + th.begin * p.dilation_h) * p.in_width + (w0 + tw.begin * p.dilation_w);
      }
      for (int64_t kh = th.begin; kh < th.end; ++kh) {
        const int64_t ih = h0 + kh * p.dilation_h;
        for (int64_t kw = tw.begin; kw < tw.end; ++kw) {
          const int64_t iw = w0 + kw * p.dilation_w;
          const scalar_t v = plane[ih * is.h + iw * is.w];
          if (replaces_max(v, best)) {
            best = v;
            best_index = ih * p.in_width + iw;
          }
        }
      }
      out[n * vs.n + c * vs.c + oh * vs.h + ow * vs.w] = best;
      idx[n * xs.n + c * xs.c + oh * xs.h + ow * xs.w] = best_index;
    }
  });
}

// Scatter by indices, one (n, c) plane per task: tasks never share an element and the sum order
// is fixed, so the result is deterministic. Reduced-precision gradients accumulate in float.
template <typename scalar_t>
void backward_impl(const Pool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                   at::Tensor& grad_input) {
  using acc = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const Strides4 gs = strides4(grad_output), xs = strides4(indices), is = strides4(grad_input);
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t plane_size = p.in_height * p.in_width;
  at::parallel_for(0, p.batch * p.channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> sums(plane_size);
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / p.channels, c = q % p.channels;
      std::fill(sums.begin(), sums.end(), acc(0));
      for (int64_t oh = 0; oh < p.out_height; ++oh) {
        for (int64_t ow = 0; ow < p.out_width; ++ow) {
          const int64_t index = idx[n * xs.n + c * xs.c + oh * xs.h + ow * xs.w];
          if (index == kNoInputIndex) continue;
          TORCH_CHECK(index >= 0 && index < plane_size,
                      "max_pool2d_backward: index ", index, " at output position (", n, ", ", c,
                      ", ", oh, ", ", ow, ") is outside the input plane of ", p.in_height, "x",
                      p.in_width, " elements");
          sums[index] += static_cast<acc>(go[n * gs.n + c * gs.c + oh * gs.h + ow * gs.w]);
        }
      }
      scalar_t* plane = gi + n * is.n + c * is.c;
      for (int64_t ih = 0; ih < p.in_height; ++ih)
        for (int64_t iw = 0; iw < p.in_width; ++iw)
          plane[ih * is.h + iw * is.w] = static_cast<scalar_t>(sums[ih * p.in_width + iw]);
    }
  });
}

}  // namespace

struct MaxPool2dBackend {
  static void forward(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                      at::Tensor& indices) {
    AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_pool2d", [&] {
      forward_impl<scalar_t>(p, input, values, indices);
    });
  }
  static void backward(const Pool2dParams& p, const at::Tensor& grad_output,
                       const at::Tensor& indices, at::Tensor& grad_input) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                    "max_pool2d_backward", [&] {
      backward_impl<scalar_t>(p, grad_output, indices, grad_input);
    });
  }
};

// Routed: the emulated CUDA kernels instead under convpool.testing.cuda_emulation().
using CpuMaxPool2dBackend = RoutedMaxPool2dBackend<MaxPool2dBackend>;

TORCH_LIBRARY_IMPL(convpool, CPU, m) {
  m.impl("max_pool2d", &convpool::max_pool2d<CpuMaxPool2dBackend>);
  m.impl("max_pool2d_backward", &convpool::max_pool2d_backward<CpuMaxPool2dBackend>);
}

}  // namespace convpool::cpu
