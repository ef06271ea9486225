// conv2d_grad_bias's kernels (grad_bias.h).
#include "grad_bias.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../shape.h"

namespace convpool::cpu {
namespace {

// grad_bias's operands: grad_output's strides, channels, height, width, rows (N * H) and data.
template <typename scalar_t>
struct BiasOperands {
  Strides4 s;
  int64_t channels, h_size, w_size, rows;
  const scalar_t* go;
  scalar_t* out;
};
template <typename scalar_t>
BiasOperands<scalar_t> bias_operands(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  return {strides4(grad_output), grad_output.size(1), grad_output.size(2), grad_output.size(3),
          grad_output.size(0) * grad_output.size(2), grad_output.const_data_ptr<scalar_t>(),
          grad_bias.mutable_data_ptr<scalar_t>()};
}

// grad_bias: double accumulation (a long sum in float or bf16 loses the small terms). The order
// of every sum is fixed by the shape alone, never by the thread count.
//
// channels_last (unit channel stride): a channel's values are a pixel apart, so sum whole pixels
// (one independent sum per channel, which vectorizes) over a fixed number of row blocks, then
// add the blocks.
template <typename scalar_t>
void channels_last(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  const auto [s, channels, h_size, w_size, rows, go, out] =
      bias_operands<scalar_t>(grad_output, grad_bias);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(rows, 16));
  std::vector<double> part(blocks * channels, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double* acc = part.data() + b * channels;
      for (int64_t r = rows * b / blocks; r < rows * (b + 1) / blocks; ++r) {
        const scalar_t* row = go + (r / h_size) * s.n + (r % h_size) * s.h;
        for (int64_t w = 0; w < w_size; ++w)
          for (int64_t c = 0; c < channels; ++c) acc[c] += static_cast<double>(row[w * s.w + c]);
      }
    }
  });
  for (int64_t c = 0; c < channels; ++c) {
    double total = 0;
    for (int64_t b = 0; b < blocks; ++b) total += part[b * channels + c];
    out[c] = static_cast<scalar_t>(total);
  }
}

// Any layout: one channel per task, rows of the plane in order.
template <typename scalar_t>
void planes(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  const auto [s, channels, h_size, w_size, rows, go, out] =
      bias_operands<scalar_t>(grad_output, grad_bias);
  at::parallel_for(0, channels, 1, [&](int64_t c0, int64_t c1) {
    constexpr int kChains = 8;  // independent partial sums: one chain would wait on every add
    for (int64_t c = c0; c < c1; ++c) {
      double part[kChains] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* row = go + (r / h_size) * s.n + c * s.c + (r % h_size) * s.h;
        int64_t w = 0;
        for (; w + kChains <= w_size; w += kChains)
          for (int l = 0; l < kChains; ++l) part[l] += static_cast<double>(row[(w + l) * s.w]);
        for (; w < w_size; ++w) part[w % kChains] += static_cast<double>(row[w * s.w]);
      }
      double total = 0;
      for (int l = 0; l < kChains; ++l) total += part[l];
      out[c] = static_cast<scalar_t>(total);
    }
  });
}

}  // namespace

void grad_bias_channels_last(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "conv2d_grad_bias", [&] { channels_last<scalar_t>(grad_output, grad_bias); });
}

void grad_bias_planes(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "conv2d_grad_bias", [&] { planes<scalar_t>(grad_output, grad_bias); });
}

}  // namespace convpool::cpu
