// The portable depthwise kernels (one input channel per group, any channel multiplier, any
// dtype; registry entries depthwise_channels_last and depthwise_rows, run by dispatch.cpp): a
// GEMM per group would be a 1-row matrix product, all overhead. Each output row is built tap by
// tap along unit-stride rows, so the inner loops vectorize; tensors are read through their
// strides (any layout). Half and bfloat16 accumulate in float. Every task owns its output
// elements and sums in a fixed order: results are deterministic. The weight layouts here are the
// vector kernels' too; columns_for_tap (kernels.h) is shared the other way.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../../params.h"
#include "../../shape.h"
#include "../helpers.h"
#include "depthwise.h"
#include "kernels.h"

namespace convpool::cpu::depthwise {

template <typename scalar_t>
std::vector<acc_t<scalar_t>> weights_as_acc(const at::Tensor& weight) {
  // (C_out, 1, kH, kW) in any layout -> dense [C_out][kH * kW]
  const int64_t co = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  std::vector<acc_t<scalar_t>> out(co * kh * kw);
  const scalar_t* w = weight.const_data_ptr<scalar_t>();
  for (int64_t c = 0; c < co; ++c)
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j)
        out[(c * kh + i) * kw + j] = static_cast<acc_t<scalar_t>>(
            w[c * weight.stride(0) + i * weight.stride(2) + j * weight.stride(3)]);
  return out;
}

// weights as [kH * kW][C] so a tap's channel vector is contiguous
template <typename scalar_t>
std::vector<acc_t<scalar_t>> tap_major_weights(const Conv2dParams& p, const at::Tensor& weight) {
  const auto w = weights_as_acc<scalar_t>(weight);
  const int64_t taps = p.kernel_h * p.kernel_w;
  std::vector<acc_t<scalar_t>> out(w.size());
  for (int64_t c = 0; c < p.out_channels; ++c)
    for (int64_t t = 0; t < taps; ++t) out[t * p.out_channels + c] = w[c * taps + t];
  return out;
}

namespace portable {

// ---- channels_last, channel multiplier 1: channels are the unit-stride inner loop ---------------

template <typename scalar_t>
void fprop_channels_last(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor* bias, at::Tensor& output) {
  using acc = acc_t<scalar_t>;
  const int64_t channels = p.in_channels;
  const auto w = tap_major_weights<scalar_t>(p, weight);
  std::vector<acc> b(channels, acc(0));
  if (bias)
    for (int64_t c = 0; c < channels; ++c)
      b[c] = static_cast<acc>(bias->const_data_ptr<scalar_t>()[c * bias->stride(0)]);
  const Strides4 is = strides4(input), os = strides4(output);
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out = output.mutable_data_ptr<scalar_t>();
  const int64_t rows = p.batch * p.out_height;
  at::parallel_for(0, rows, 1, [&](int64_t r0, int64_t r1) {
    std::vector<acc> sum(p.out_width * channels);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r % p.out_height, n = r / p.out_height;
      for (int64_t ow = 0; ow < p.out_width; ++ow)
        std::copy(b.begin(), b.end(), sum.begin() + ow * channels);
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
        if (ih < 0 || ih >= p.in_height) continue;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const acc* wt = w.data() + (kh * p.kernel_w + kw) * channels;
          const Columns cols = columns_for_tap(p, kw);
          for (int64_t ow = cols.begin; ow < cols.end; ++ow) {
            const scalar_t* src = in + n * is.n + ih * is.h + (ow * p.stride_w + cols.offset) * is.w;
            acc* dst = sum.data() + ow * channels;
            for (int64_t c = 0; c < channels; ++c) dst[c] += wt[c] * static_cast<acc>(src[c]);
          }
        }
      }
      for (int64_t ow = 0; ow < p.out_width; ++ow) {
        scalar_t* dst = out + n * os.n + oh * os.h + ow * os.w;
        const acc* src = sum.data() + ow * channels;
        for (int64_t c = 0; c < channels; ++c) dst[c] = static_cast<scalar_t>(src[c]);
      }
    }
  });
}

// grad_input as a gather: each input pixel collects from the output pixels whose windows cover it.
template <typename scalar_t>
void dgrad_channels_last(const Conv2dParams& p, const at::Tensor& grad_output,
                         const at::Tensor& weight, at::Tensor& grad_input) {
  using acc = acc_t<scalar_t>;
  const int64_t channels = p.in_channels;
  const auto w = tap_major_weights<scalar_t>(p, weight);
  const Strides4 gs = strides4(grad_output), is = strides4(grad_input);
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, p.batch * p.in_height, 1, [&](int64_t r0, int64_t r1) {
    std::vector<acc> sum(channels);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t ih = r % p.in_height, n = r / p.in_height;
      for (int64_t iw = 0; iw < p.in_width; ++iw) {
        std::fill(sum.begin(), sum.end(), acc(0));
        for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
          const int64_t h = ih + p.pad_h - kh * p.dilation_h;  // = oh * stride_h
          if (h < 0 || h % p.stride_h != 0 || h / p.stride_h >= p.out_height) continue;
          const int64_t oh = h / p.stride_h;
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
            const int64_t v = iw + p.pad_w - kw * p.dilation_w;
            if (v < 0 || v % p.stride_w != 0 || v / p.stride_w >= p.out_width) continue;
            const scalar_t* src = go + n * gs.n + oh * gs.h + (v / p.stride_w) * gs.w;
            const acc* wt = w.data() + (kh * p.kernel_w + kw) * channels;
            for (int64_t c = 0; c < channels; ++c) sum[c] += wt[c] * static_cast<acc>(src[c]);
          }
        }
        scalar_t* dst = gi + n * is.n + ih * is.h + iw * is.w;
        for (int64_t c = 0; c < channels; ++c) dst[c] = static_cast<scalar_t>(sum[c]);
      }
    }
  });
}

// grad_weight: a task owns a block of channels; per output row the tap sums run in float, rows
// are added in double (long reductions keep their precision; the order is fixed).
template <typename scalar_t>
void wgrad_channels_last(const Conv2dParams& p, const at::Tensor& grad_output,
                         const at::Tensor& input, at::Tensor& grad_weight) {
  using acc = acc_t<scalar_t>;
  constexpr int64_t kBlock = 64;
  const int64_t channels = p.in_channels, taps = p.kernel_h * p.kernel_w;
  const Strides4 gs = strides4(grad_output), is = strides4(input), ws = strides4(grad_weight);
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* gw = grad_weight.mutable_data_ptr<scalar_t>();
  const int64_t blocks = (channels + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t c0 = blk * kBlock, width = std::min(kBlock, channels - c0);
      std::vector<double> total(taps * width, 0.0);
      std::vector<acc> row(taps * width);
      for (int64_t n = 0; n < p.batch; ++n) {
        for (int64_t oh = 0; oh < p.out_height; ++oh) {
          std::fill(row.begin(), row.end(), acc(0));
          for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
            if (ih < 0 || ih >= p.in_height) continue;
            for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
              const Columns cols = columns_for_tap(p, kw);
              acc* dst = row.data() + (kh * p.kernel_w + kw) * width;
              for (int64_t ow = cols.begin; ow < cols.end; ++ow) {
                const scalar_t* g = go + n * gs.n + c0 + oh * gs.h + ow * gs.w;
                const scalar_t* x = in + n * is.n + c0 + ih * is.h + (ow * p.stride_w + cols.offset) * is.w;
                for (int64_t c = 0; c < width; ++c) dst[c] += static_cast<acc>(g[c]) * static_cast<acc>(x[c]);
              }
            }
          }
          for (int64_t i = 0; i < taps * width; ++i) total[i] += static_cast<double>(row[i]);
        }
      }
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = 0; c < width; ++c)
          gw[(c0 + c) * ws.n + (t / p.kernel_w) * ws.h + (t % p.kernel_w) * ws.w] =
              static_cast<scalar_t>(total[t * width + c]);
    }
  });
}


// ---- any layout: rows along the width (depthwise_rows) ---------------------------------

template <typename scalar_t>
void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output) {
  using acc = acc_t<scalar_t>;
  const auto w = weights_as_acc<scalar_t>(weight);
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t multiplier = p.out_channels_per_group();
  const Strides4 is = strides4(input), os = strides4(output);
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  const scalar_t* b = bias ? bias->const_data_ptr<scalar_t>() : nullptr;
  const int64_t b_stride = bias ? bias->stride(0) : 0;
  scalar_t* out = output.mutable_data_ptr<scalar_t>();
  const int64_t rows = p.batch * p.out_channels * p.out_height;
  const int64_t grain = grain_for(p.out_width * taps, 16384);
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<acc> sum(p.out_width);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r % p.out_height;
      const int64_t co = (r / p.out_height) % p.out_channels;
      const int64_t n = r / (p.out_height * p.out_channels);
      const int64_t c = co / multiplier;
      std::fill(sum.begin(), sum.end(), b ? static_cast<acc>(b[co * b_stride]) : acc(0));
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
        if (ih < 0 || ih >= p.in_height) continue;
        const scalar_t* row = in + n * is.n + c * is.c + ih * is.h;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const acc wv = w[co * taps + kh * p.kernel_w + kw];
          const Columns cols = columns_for_tap(p, kw);
          const int64_t step = p.stride_w * is.w;
          const scalar_t* src = row + cols.offset * is.w;
          for (int64_t ow = cols.begin; ow < cols.end; ++ow)
            sum[ow] += wv * static_cast<acc>(src[ow * step]);
        }
      }
      scalar_t* dst = out + n * os.n + co * os.c + oh * os.h;
      for (int64_t ow = 0; ow < p.out_width; ++ow) dst[ow * os.w] = static_cast<scalar_t>(sum[ow]);
    }
  });
}

// grad_input: one (n, c) input plane per task; it collects from the `multiplier` output channels
// of its group, tap by tap (the adjoint of fprop's gather).
template <typename scalar_t>
void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
           at::Tensor& grad_input) {
  using acc = acc_t<scalar_t>;
  const auto w = weights_as_acc<scalar_t>(weight);
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t multiplier = p.out_channels_per_group();
  const Strides4 gs = strides4(grad_output), is = strides4(grad_input);
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t plane = p.in_height * p.in_width;
  at::parallel_for(0, p.batch * p.in_channels, 1, [&](int64_t q0, int64_t q1) {
    std::vector<acc> sum(plane);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t n = q / p.in_channels, c = q % p.in_channels;
      std::fill(sum.begin(), sum.end(), acc(0));
      for (int64_t m = 0; m < multiplier; ++m) {
        const int64_t co = c * multiplier + m;
        for (int64_t oh = 0; oh < p.out_height; ++oh) {
          const scalar_t* go_row = go + n * gs.n + co * gs.c + oh * gs.h;
          for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
            if (ih < 0 || ih >= p.in_height) continue;
            acc* dst = sum.data() + ih * p.in_width;
            for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
              const acc wv = w[co * taps + kh * p.kernel_w + kw];
              const Columns cols = columns_for_tap(p, kw);
              for (int64_t ow = cols.begin; ow < cols.end; ++ow)
                dst[ow * p.stride_w + cols.offset] += wv * static_cast<acc>(go_row[ow * gs.w]);
            }
          }
        }
      }
      scalar_t* dst = gi + n * is.n + c * is.c;
      for (int64_t ih = 0; ih < p.in_height; ++ih)
        for (int64_t iw = 0; iw < p.in_width; ++iw)
          dst[ih * is.h + iw * is.w] = static_cast<scalar_t>(sum[ih * p.in_width + iw]);
    }
  });
}

// grad_weight: one output channel per task; each tap's sum runs over rows in a fixed order
// (a short float sum per row, rows added in double so long reductions keep their precision).
template <typename scalar_t>
void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
           at::Tensor& grad_weight) {
  using acc = acc_t<scalar_t>;
  const int64_t multiplier = p.out_channels_per_group();
  const Strides4 gs = strides4(grad_output), is = strides4(input), ws = strides4(grad_weight);
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* gw = grad_weight.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, p.out_channels, 1, [&](int64_t c0, int64_t c1) {
    std::vector<double> total(p.kernel_h * p.kernel_w);
    for (int64_t co = c0; co < c1; ++co) {
      const int64_t c = co / multiplier;
      std::fill(total.begin(), total.end(), 0.0);
      for (int64_t n = 0; n < p.batch; ++n) {
        for (int64_t oh = 0; oh < p.out_height; ++oh) {
          const scalar_t* go_row = go + n * gs.n + co * gs.c + oh * gs.h;
          for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
            if (ih < 0 || ih >= p.in_height) continue;
            const scalar_t* in_row = in + n * is.n + c * is.c + ih * is.h;
            for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
              const Columns cols = columns_for_tap(p, kw);
              const int64_t step = p.stride_w * is.w;
              const scalar_t* src = in_row + cols.offset * is.w;
              acc row_sum = 0;
              for (int64_t ow = cols.begin; ow < cols.end; ++ow)
                row_sum += static_cast<acc>(go_row[ow * gs.w]) * static_cast<acc>(src[ow * step]);
              total[kh * p.kernel_w + kw] += static_cast<double>(row_sum);
            }
          }
        }
      }
      for (int64_t kh = 0; kh < p.kernel_h; ++kh)
        for (int64_t kw = 0; kw < p.kernel_w; ++kw)
          gw[co * ws.n + kh * ws.h + kw * ws.w] = static_cast<scalar_t>(total[kh * p.kernel_w + kw]);
    }
  });
}

}  // namespace portable
}  // namespace convpool::cpu::depthwise
