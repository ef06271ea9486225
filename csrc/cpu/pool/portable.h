// The portable max_pool2d kernels (any dtype, any strides): the forward over rows or over
// channels_last pixels, and the backward's scatters. What the vector kernels of kernels_impl.h
// do not take (other dtypes, views they do not handle, planes of 2^31 elements or more) runs
// here, and so do the vector backward kernels' reruns when an index is not where they expect it.
// Included by dispatch.cpp only (torch headers).
//
// Rules shared with PyTorch: a window starts from its first in-bounds, dilation-aligned element
// with value -inf (lowest for integers); an element replaces the maximum if it is greater or NaN.
// So the first of tied maxima wins, the last NaN wins, padding is never selected, and an all -inf
// window reports its first valid element. Tensors are read and written through their strides.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../../shape.h"
#include "../helpers.h"
#include "kernels.h"

namespace convpool::cpu::pool::portable {

// What every forward loop reads and writes: strides and data of input, values and (when asked
// for) indices.
template <typename scalar_t>
struct ForwardOperands {
  Strides4 is, vs, xs;
  const scalar_t* in;
  scalar_t* out;
  int64_t* idx;  // nullptr: values only
};

template <typename scalar_t>
ForwardOperands<scalar_t> forward_operands(const at::Tensor& input, at::Tensor& values,
                                           at::Tensor* indices) {
  return {strides4(input), strides4(values), indices ? strides4(*indices) : Strides4{},
          input.const_data_ptr<scalar_t>(), values.mutable_data_ptr<scalar_t>(),
          indices ? indices->mutable_data_ptr<int64_t>() : nullptr};
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
    return value > current || value != value;  // NaN wins
  }
}

// For j in [begin, end): element v = src[j * src_step]; if it replaces best[j] (greater, or NaN),
// best[j] = v and, with kIndices, best_index[j] = index0 + j * index_step. Written without
// branches: the comparisons are data-dependent and would mispredict half the time.
template <bool kIndices>
struct UpdateMaxGeneric {
  template <typename scalar_t, typename index_t>
  void operator()(const scalar_t* __restrict src, int64_t src_step, int64_t begin, int64_t end,
                  int64_t index_step, int64_t index0, scalar_t* __restrict best,
                  index_t* __restrict best_index) const {
    for (int64_t j = begin; j < end; ++j) {
      const scalar_t v = src[j * src_step];
      const bool take = replaces_max(v, best[j]);
      best[j] = take ? v : best[j];
      if constexpr (kIndices)
        best_index[j] = take ? static_cast<index_t>(index0 + j * index_step) : best_index[j];
    }
  }
};


// Index of a window's first in-bounds element, or kNoInputIndex.
inline int64_t first_index(const Pool2dParams& p, int64_t oh, int64_t ow) {
  const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
  const Range th = taps_inside(h0, p.kernel_h, p.dilation_h, p.in_height);
  const Range tw = taps_inside(w0, p.kernel_w, p.dilation_w, p.in_width);
  if (th.begin == th.end || tw.begin == tw.end) return kNoInputIndex;
  return (h0 + th.begin * p.dilation_h) * p.in_width + (w0 + tw.begin * p.dilation_w);
}


// One output row of one plane at a time, taps outermost and output columns innermost, so the
// inner loop streams along the input row. Every output still sees its taps in row-major order,
// which is what makes the tie and NaN rules identical to a per-window loop.
template <typename scalar_t, typename index_t, bool kIndices, typename Update>
void forward_rows(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                  at::Tensor* indices, Update update) {
  const auto [is, vs, xs, in, out, idx] = forward_operands<scalar_t>(input, values, indices);
  const int64_t wo = p.out_width;
  const int64_t rows = p.batch * p.channels * p.out_height;
  const int64_t work_per_row = std::max<int64_t>(1, wo * p.kernel_h * p.kernel_w);
  at::parallel_for(0, rows, grain_for(work_per_row), [&](int64_t r0, int64_t r1) {
    std::vector<scalar_t> best(wo);
    std::vector<index_t> best_index(kIndices ? wo : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r % p.out_height;
      const int64_t c = (r / p.out_height) % p.channels;
      const int64_t n = r / (p.out_height * p.channels);
      std::fill(best.begin(), best.end(), lowest<scalar_t>());
      if constexpr (kIndices)
        for (int64_t ow = 0; ow < wo; ++ow) best_index[ow] = static_cast<index_t>(first_index(p, oh, ow));
      const int64_t h0 = oh * p.stride_h - p.pad_h;
      const Range th = taps_inside(h0, p.kernel_h, p.dilation_h, p.in_height);
      for (int64_t kh = th.begin; kh < th.end; ++kh) {
        const int64_t ih = h0 + kh * p.dilation_h;
        const scalar_t* row = in + n * is.n + c * is.c + ih * is.h;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const Range cols = columns_hitting(p, kw);
          const int64_t offset = kw * p.dilation_w - p.pad_w;
          const int64_t row_index = ih * p.in_width + offset;
          update(row + offset * is.w, p.stride_w * is.w, cols.begin, cols.end, p.stride_w,
                     row_index, best.data(), best_index.data());
        }
      }
      scalar_t* out_row = out + n * vs.n + c * vs.c + oh * vs.h;
      for (int64_t ow = 0; ow < wo; ++ow) out_row[ow * vs.w] = best[ow];
      if constexpr (kIndices) {
        int64_t* idx_row = idx + n * xs.n + c * xs.c + oh * xs.h;
        for (int64_t ow = 0; ow < wo; ++ow) idx_row[ow * xs.w] = best_index[ow];
      }
    }
  });
}

// channels_last: one output pixel at a time with all its channels, channels innermost
// (unit stride in input and outputs).
template <typename scalar_t, typename index_t, bool kIndices, typename Update>
void forward_channels_last(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                           at::Tensor* indices, Update update) {
  const auto [is, vs, xs, in, out, idx] = forward_operands<scalar_t>(input, values, indices);
  const int64_t channels = p.channels;
  const int64_t pixels = p.batch * p.out_height * p.out_width;
  const int64_t work_per_pixel = std::max<int64_t>(1, channels * p.kernel_h * p.kernel_w);
  at::parallel_for(0, pixels, grain_for(work_per_pixel), [&](int64_t q0, int64_t q1) {
    std::vector<scalar_t> best(channels);
    std::vector<index_t> best_index(kIndices ? channels : 0);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t ow = q % p.out_width;
      const int64_t oh = (q / p.out_width) % p.out_height;
      const int64_t n = q / (p.out_width * p.out_height);
      std::fill(best.begin(), best.end(), lowest<scalar_t>());
      if constexpr (kIndices)
        std::fill(best_index.begin(), best_index.end(), static_cast<index_t>(first_index(p, oh, ow)));
      const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
      const Range th = taps_inside(h0, p.kernel_h, p.dilation_h, p.in_height);
      const Range tw = taps_inside(w0, p.kernel_w, p.dilation_w, p.in_width);
      for (int64_t kh = th.begin; kh < th.end; ++kh) {
        const int64_t ih = h0 + kh * p.dilation_h;
        for (int64_t kw = tw.begin; kw < tw.end; ++kw) {
          const int64_t iw = w0 + kw * p.dilation_w;
          const scalar_t* src = in + n * is.n + ih * is.h + iw * is.w;
          // Channels are the unit-stride "columns" here, all at the same input position.
          update(src, 1, 0, channels, 0, ih * p.in_width + iw, best.data(), best_index.data());
        }
      }
      scalar_t* out_pixel = out + n * vs.n + oh * vs.h + ow * vs.w;
      for (int64_t c = 0; c < channels; ++c) out_pixel[c * vs.c] = best[c];
      if constexpr (kIndices) {
        int64_t* idx_pixel = idx + n * xs.n + oh * xs.h + ow * xs.w;
        for (int64_t c = 0; c < channels; ++c) idx_pixel[c * xs.c] = best_index[c];
      }
    }
  });
}

// channels_last (channels unit-stride in the input and every output) or not.
inline bool channels_innermost(const Pool2dParams& p, const at::Tensor& input,
                               const at::Tensor& values, const at::Tensor* indices) {
  return p.channels > 1 && input.stride(1) == 1 && values.stride(1) == 1 &&
         (!indices || indices->stride(1) == 1);
}

inline void check_index(const Pool2dParams& p, int64_t index, int64_t n, int64_t c, int64_t oh,
                        int64_t ow) {
  TORCH_CHECK(index >= 0 && index < p.in_height * p.in_width, "max_pool2d_backward: index ", index,
              " at output position (", n, ", ", c, ", ", oh, ", ", ow,
              ") is outside the input plane of ", p.in_height, "x", p.in_width, " elements");
}


// Whether count indices (unit stride) all lie in [-1, plane_size): one check before a run of the
// scatter, instead of a compare and branch per element inside it (40% of its time).
inline bool indices_in_range(const int64_t* index, int64_t count, int64_t plane_size) {
  bool valid = true;
  for (int64_t j = 0; j < count; ++j)
    valid &= static_cast<uint64_t>(index[j] + 1) <= static_cast<uint64_t>(plane_size);
  return valid;
}

// Scatter by indices, one (n, c) plane per task: tasks never share an element and the sum order
// is fixed, so the result is deterministic. Reduced-precision gradients accumulate in float.
template <typename scalar_t>
void backward_planes(const Pool2dParams& p, const at::Tensor& grad_output,
                     const at::Tensor& indices, at::Tensor& grad_input) {
  using acc = acc_t<scalar_t>;
  const Strides4 gs = strides4(grad_output), xs = strides4(indices), is = strides4(grad_input);
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t plane_size = p.in_height * p.in_width;
  // float/double planes stored row-major accumulate in place, zeroed here while in cache.
  const bool in_place = std::is_same_v<scalar_t, acc> && is.w == 1 && is.h == p.in_width;
  at::parallel_for(0, p.batch * p.channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> buffer(in_place ? 0 : plane_size);
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / p.channels, c = q % p.channels;
      acc* sums = in_place ? reinterpret_cast<acc*>(gi + n * is.n + c * is.c) : buffer.data();
      std::fill(sums, sums + plane_size, acc(0));
      // Dense index planes are checked whole, others a row at a time.
      const bool dense_indices = xs.w == 1 && xs.h == p.out_width;
      const bool plane_checked =
          dense_indices && indices_in_range(idx + n * xs.n + c * xs.c, p.out_height * p.out_width, plane_size);
      for (int64_t oh = 0; oh < p.out_height; ++oh) {
        const int64_t* index_row = idx + n * xs.n + c * xs.c + oh * xs.h;
        const scalar_t* grad_row = go + n * gs.n + c * gs.c + oh * gs.h;
        const bool checked = plane_checked || (xs.w == 1 && !dense_indices &&
                                               indices_in_range(index_row, p.out_width, plane_size));
        for (int64_t ow = 0; ow < p.out_width; ++ow) {
          const int64_t index = index_row[ow * xs.w];
          if (index == kNoInputIndex) continue;
          if (!checked) check_index(p, index, n, c, oh, ow);
          sums[index] += static_cast<acc>(grad_row[ow * gs.w]);
        }
      }
      if (in_place) continue;
      scalar_t* plane = gi + n * is.n + c * is.c;
      for (int64_t ih = 0; ih < p.in_height; ++ih)
        for (int64_t iw = 0; iw < p.in_width; ++iw)
          plane[ih * is.h + iw * is.w] = static_cast<scalar_t>(sums[ih * p.in_width + iw]);
    }
  });
}

// channels_last: a task owns one image and a block of channels and walks the output pixels in
// order, so the channel loop is unit-stride, no two tasks share an element and the sum order is
// fixed (deterministic). Reduced-precision gradients accumulate in a float copy of the block.
template <typename scalar_t>
void backward_channels_last(const Pool2dParams& p, const at::Tensor& grad_output,
                            const at::Tensor& indices, at::Tensor& grad_input) {
  using acc = acc_t<scalar_t>;
  // Whole pixels when there are images enough for every thread (each pass over an image's pixels
  // then handles all its channels); else blocks of channels (a multiple of 16, at most 64) giving
  // every thread two, so small batches still split: ResNet's 64-channel stem at batch 1 was one
  // task.
  const int64_t threads = at::get_num_threads();
  const int64_t per_task = (p.channels * p.batch + 2 * threads - 1) / (2 * threads);
  const int64_t kBlock = p.batch >= threads ? p.channels : std::clamp<int64_t>((per_task + 15) / 16 * 16, 16, 64);
  const Strides4 gs = strides4(grad_output), xs = strides4(indices), is = strides4(grad_input);
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t blocks = (p.channels + kBlock - 1) / kBlock;
  const int64_t plane_size = p.in_height * p.in_width;
  // float/double in a dense channels_last image accumulate in place (zeroed here first):
  // element (index, c) of the block is then at index * is.w + c.
  const bool in_place = std::is_same_v<scalar_t, acc> && is.c == 1 && is.h == p.in_width * is.w;
  at::parallel_for(0, p.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> buffer;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / blocks;
      const int64_t c0 = (t % blocks) * kBlock;
      const int64_t width = std::min(kBlock, p.channels - c0);
      const int64_t pitch = in_place ? is.w : width;
      if (!in_place) buffer.assign(plane_size * width, acc(0));
      acc* sums = in_place ? reinterpret_cast<acc*>(gi + n * is.n + c0) : buffer.data();
      if (in_place)
        for (int64_t e = 0; e < plane_size; ++e) std::fill(sums + e * pitch, sums + e * pitch + width, acc(0));
      for (int64_t oh = 0; oh < p.out_height; ++oh) {
        for (int64_t ow = 0; ow < p.out_width; ++ow) {
          const int64_t* pixel_idx = idx + n * xs.n + c0 * xs.c + oh * xs.h + ow * xs.w;
          const scalar_t* pixel_go = go + n * gs.n + c0 * gs.c + oh * gs.h + ow * gs.w;
          const bool checked = xs.c == 1 && indices_in_range(pixel_idx, width, plane_size);
          for (int64_t c = 0; c < width; ++c) {
            const int64_t index = pixel_idx[c * xs.c];
            if (index == kNoInputIndex) continue;
            if (!checked) check_index(p, index, n, c0 + c, oh, ow);
            sums[index * pitch + c] += static_cast<acc>(pixel_go[c * gs.c]);
          }
        }
      }
      if (in_place) continue;
      for (int64_t e = 0; e < plane_size; ++e) {
        scalar_t* dst = gi + n * is.n + c0 * is.c + (e / p.in_width) * is.h + (e % p.in_width) * is.w;
        for (int64_t c = 0; c < width; ++c) dst[c * is.c] = static_cast<scalar_t>(sums[e * width + c]);
      }
    }
  });
}

}  // namespace convpool::cpu::pool::portable
