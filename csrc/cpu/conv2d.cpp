// CPU conv2d: fprop, dgrad, wgrad and grad_bias as GEMMs over our own im2col / col2im.
//
// Output rows are numbered globally, row = n * out_height + oh, and processed in tiles of rows, so
// a small feature map batches several images into one GEMM and a large one is split; every
// workspace is bounded by kWorkspaceElements, never proportional to the batch. Tensors are read
// and written through their strides, so NCHW, channels_last and arbitrary views need no copy.
// Half and bfloat16 are converted to float on the way into the workspace (float accumulation).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../conv2d_op.h"
#include "gemm.h"

namespace convpool::cpu {
namespace {

template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

constexpr int64_t kWorkspaceElements = int64_t(1) << 21;

// Output rows per tile so that `elements_per_row` workspace elements per row stay in budget.
int64_t rows_per_tile(int64_t elements_per_row) {
  return std::max<int64_t>(1, kWorkspaceElements / std::max<int64_t>(1, elements_per_row));
}

// Parallel grain (in rows of length `row_length`) that gives each task a useful amount of work.
int64_t grain_for(int64_t row_length) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_length));
}

// col[k][j], k = (c, kh, kw) within `group`, j = (row - row_begin) * out_width + ow.
template <typename scalar_t, typename acc>
void im2col(const Conv2dParams& p, const scalar_t* input, Strides4 s, int64_t group,
            int64_t row_begin, int64_t row_end, acc* col) {
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t wo = p.out_width;
  const int64_t cols = (row_end - row_begin) * wo;
  at::parallel_for(0, p.gemm_k(), grain_for(cols), [&](int64_t k_begin, int64_t k_end) {
    for (int64_t k = k_begin; k < k_end; ++k) {
      const int64_t c = group * p.in_channels_per_group() + k / taps;
      const int64_t kh = (k % taps) / p.kernel_w;
      const int64_t kw = k % p.kernel_w;
      const int64_t iw0 = kw * p.dilation_w - p.pad_w;
      acc* dst = col + k * cols;
      for (int64_t row = row_begin; row < row_end; ++row, dst += wo) {
        const int64_t n = row / p.out_height;
        const int64_t ih = (row % p.out_height) * p.stride_h - p.pad_h + kh * p.dilation_h;
        if (ih < 0 || ih >= p.in_height) {
          std::fill(dst, dst + wo, acc(0));
          continue;
        }
        const scalar_t* src = input + n * s.n + c * s.c + ih * s.h;
        for (int64_t ow = 0; ow < wo; ++ow) {
          const int64_t iw = iw0 + ow * p.stride_w;
          dst[ow] = (iw >= 0 && iw < p.in_width) ? static_cast<acc>(src[iw * s.w]) : acc(0);
        }
      }
    }
  });
}

// grad_input_block[n - n_begin][c][ih][iw] += col[k][j]: the adjoint of im2col. Each task owns
// whole channels, so no two tasks write the same element and the sum order is fixed.
template <typename acc>
void col2im_add(const Conv2dParams& p, const acc* col, int64_t group, int64_t row_begin,
                int64_t row_end, int64_t n_begin, acc* grad_input_block) {
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t wo = p.out_width;
  const int64_t cols = (row_end - row_begin) * wo;
  const int64_t plane = p.in_height * p.in_width;
  const int64_t cg = p.in_channels_per_group();
  at::parallel_for(0, cg, 1, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c_local = c_begin; c_local < c_end; ++c_local) {
      const int64_t c = group * cg + c_local;
      for (int64_t tap = 0; tap < taps; ++tap) {
        const int64_t kh = tap / p.kernel_w;
        const int64_t kw = tap % p.kernel_w;
        const int64_t iw0 = kw * p.dilation_w - p.pad_w;
        const acc* src = col + (c_local * taps + tap) * cols;
        for (int64_t row = row_begin; row < row_end; ++row, src += wo) {
          const int64_t n = row / p.out_height;
          const int64_t ih = (row % p.out_height) * p.stride_h - p.pad_h + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_height) continue;
          acc* dst = grad_input_block + ((n - n_begin) * p.in_channels + c) * plane + ih * p.in_width;
          for (int64_t ow = 0; ow < wo; ++ow) {
            const int64_t iw = iw0 + ow * p.stride_w;
            if (iw >= 0 && iw < p.in_width) dst[iw] += src[ow];
          }
        }
      }
    }
  });
}

// dst[c][j] = t[n][c_begin + c][oh][ow] for the rows of a tile: a (channels x pixels) matrix.
template <typename scalar_t, typename acc>
void gather_rows(const Conv2dParams& p, const scalar_t* t, Strides4 s, int64_t c_begin,
                 int64_t channels, int64_t row_begin, int64_t row_end, acc* dst) {
  const int64_t wo = p.out_width;
  const int64_t cols = (row_end - row_begin) * wo;
  at::parallel_for(0, channels, grain_for(cols), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      acc* out = dst + c * cols;
      for (int64_t row = row_begin; row < row_end; ++row, out += wo) {
        const scalar_t* src =
            t + (row / p.out_height) * s.n + (c_begin + c) * s.c + (row % p.out_height) * s.h;
        for (int64_t ow = 0; ow < wo; ++ow) out[ow] = static_cast<acc>(src[ow * s.w]);
      }
    }
  });
}

// t[n][c_begin + c][oh][ow] = src[c][j] + bias[c]: the inverse of gather_rows, fused with bias.
template <typename scalar_t, typename acc>
void scatter_rows(const Conv2dParams& p, const acc* src, const acc* bias, int64_t c_begin,
                  int64_t channels, int64_t row_begin, int64_t row_end, scalar_t* t, Strides4 s) {
  const int64_t wo = p.out_width;
  const int64_t cols = (row_end - row_begin) * wo;
  at::parallel_for(0, channels, grain_for(cols), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const acc b = bias ? bias[c] : acc(0);
      const acc* in = src + c * cols;
      for (int64_t row = row_begin; row < row_end; ++row, in += wo) {
        scalar_t* out =
            t + (row / p.out_height) * s.n + (c_begin + c) * s.c + (row % p.out_height) * s.h;
        for (int64_t ow = 0; ow < wo; ++ow) out[ow * s.w] = static_cast<scalar_t>(in[ow] + b);
      }
    }
  });
}

// Same as scatter_rows for a tile stored pixel-major, src[j][c]: each output pixel's channels
// are written in one run, unit-stride in channels_last.
template <typename scalar_t, typename acc>
void scatter_rows_pixel_major(const Conv2dParams& p, const acc* src, const acc* bias,
                              int64_t c_begin, int64_t channels, int64_t row_begin,
                              int64_t row_end, scalar_t* t, Strides4 s) {
  const int64_t wo = p.out_width;
  at::parallel_for(row_begin, row_end, grain_for(wo * channels), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const acc* in = src + (row - row_begin) * wo * channels;
      scalar_t* out = t + (row / p.out_height) * s.n + c_begin * s.c + (row % p.out_height) * s.h;
      for (int64_t ow = 0; ow < wo; ++ow, in += channels) {
        scalar_t* px = out + ow * s.w;
        if (bias) {
          for (int64_t c = 0; c < channels; ++c) px[c * s.c] = static_cast<scalar_t>(in[c] + bias[c]);
        } else {
          for (int64_t c = 0; c < channels; ++c) px[c * s.c] = static_cast<scalar_t>(in[c]);
        }
      }
    }
  });
}

// The weight as a float/double [groups, out_channels_per_group, gemm_k] matrix stack.
template <typename scalar_t>
at::Tensor weight_matrices(const Conv2dParams& p, const at::Tensor& weight) {
  const auto acc_dtype = c10::CppTypeToScalarType<acc_t<scalar_t>>::value;
  return weight.to(acc_dtype).contiguous().view({p.groups, p.out_channels_per_group(), p.gemm_k()});
}

template <typename scalar_t>
void fprop_impl(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                const at::Tensor* bias, at::Tensor& output) {
  using acc = acc_t<scalar_t>;
  const auto acc_options = input.options().dtype(c10::CppTypeToScalarType<acc>::value);
  const at::Tensor w = weight_matrices<scalar_t>(p, weight);
  const at::Tensor b = bias ? bias->to(acc_options.dtype()).contiguous() : at::Tensor();
  const int64_t k = p.gemm_k();
  const int64_t cog = p.out_channels_per_group();
  const int64_t rows_total = p.batch * p.out_height;
  const int64_t tile_rows = std::min(rows_total, rows_per_tile((k + cog) * p.out_width));
  at::Tensor col = at::empty({k * tile_rows * p.out_width}, acc_options);
  at::Tensor out_tile = at::empty({cog * tile_rows * p.out_width}, acc_options);
  const scalar_t* in_ptr = input.const_data_ptr<scalar_t>();
  scalar_t* out_ptr = output.mutable_data_ptr<scalar_t>();
  // channels_last output: compute the tile pixel-major ([pixels x C_out]) so that it is stored
  // in unit-stride runs; otherwise channel-major ([C_out x pixels]), rows of an NCHW plane.
  const bool pixel_major = is_channels_last(output);
  const acc* w_ptr = w.const_data_ptr<acc>();
  acc* col_ptr = col.mutable_data_ptr<acc>();
  acc* tile_ptr = out_tile.mutable_data_ptr<acc>();
  for (int64_t r0 = 0; r0 < rows_total; r0 += tile_rows) {
    const int64_t r1 = std::min(rows_total, r0 + tile_rows);
    const int64_t cols = (r1 - r0) * p.out_width;
    for (int64_t g = 0; g < p.groups; ++g) {
      const acc* w_g = w_ptr + g * cog * k;
      const acc* b_g = b.defined() ? b.const_data_ptr<acc>() + g * cog : nullptr;
      im2col(p, in_ptr, strides4(input), g, r0, r1, col_ptr);
      if (pixel_major) {
        gemm::gemm_strided<acc>(cols, cog, k, col_ptr, 1, cols, w_g, 1, k, tile_ptr, cog, false);
        scatter_rows_pixel_major(p, tile_ptr, b_g, g * cog, cog, r0, r1, out_ptr, strides4(output));
      } else {
        gemm::gemm_strided<acc>(cog, cols, k, w_g, k, 1, col_ptr, cols, 1, tile_ptr, cols, false);
        scatter_rows(p, tile_ptr, b_g, g * cog, cog, r0, r1, out_ptr, strides4(output));
      }
    }
  }
}

template <typename scalar_t>
void dgrad_impl(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                at::Tensor& grad_input) {
  using acc = acc_t<scalar_t>;
  const auto acc_options = grad_output.options().dtype(c10::CppTypeToScalarType<acc>::value);
  const at::Tensor w = weight_matrices<scalar_t>(p, weight);
  const int64_t k = p.gemm_k();
  const int64_t cog = p.out_channels_per_group();
  const int64_t image = p.in_channels * p.in_height * p.in_width;
  // Gradients of a block of whole images accumulate in float/double, then are stored once.
  const int64_t block_images = std::min(p.batch, std::max<int64_t>(1, kWorkspaceElements / std::max<int64_t>(1, image)));
  const int64_t tile_rows =
      std::min(block_images * p.out_height, rows_per_tile((k + cog) * p.out_width));
  at::Tensor block = at::empty({block_images * image}, acc_options);
  at::Tensor col = at::empty({k * tile_rows * p.out_width}, acc_options);
  at::Tensor go_tile = at::empty({cog * tile_rows * p.out_width}, acc_options);
  const scalar_t* go_ptr = grad_output.const_data_ptr<scalar_t>();
  scalar_t* gi_ptr = grad_input.mutable_data_ptr<scalar_t>();
  const acc* w_ptr = w.const_data_ptr<acc>();
  acc* col_ptr = col.mutable_data_ptr<acc>();
  acc* go_buf = go_tile.mutable_data_ptr<acc>();
  const Strides4 gi_s = strides4(grad_input);
  for (int64_t n0 = 0; n0 < p.batch; n0 += block_images) {
    const int64_t n1 = std::min(p.batch, n0 + block_images);
    acc* block_ptr = block.mutable_data_ptr<acc>();
    std::fill(block_ptr, block_ptr + (n1 - n0) * image, acc(0));
    for (int64_t r0 = n0 * p.out_height; r0 < n1 * p.out_height; r0 += tile_rows) {
      const int64_t r1 = std::min(n1 * p.out_height, r0 + tile_rows);
      const int64_t cols = (r1 - r0) * p.out_width;
      for (int64_t g = 0; g < p.groups; ++g) {
        gather_rows(p, go_ptr, strides4(grad_output), g * cog, cog, r0, r1, go_buf);
        // col [k x cols] = W_g^T [k x cog] * go [cog x cols]
        gemm::gemm_strided<acc>(k, cols, cog, w_ptr + g * cog * k, 1, k, go_buf, cols, 1, col_ptr,
                                cols, false);
        col2im_add(p, col_ptr, g, r0, r1, n0, block_ptr);
      }
    }
    // Store the block through grad_input's strides (any layout).
    const int64_t planes = (n1 - n0) * p.in_channels;
    at::parallel_for(0, planes, 1, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t n = n0 + q / p.in_channels;
        const int64_t c = q % p.in_channels;
        const acc* src = block_ptr + q * p.in_height * p.in_width;
        for (int64_t ih = 0; ih < p.in_height; ++ih) {
          scalar_t* dst = gi_ptr + n * gi_s.n + c * gi_s.c + ih * gi_s.h;
          for (int64_t iw = 0; iw < p.in_width; ++iw) dst[iw * gi_s.w] = static_cast<scalar_t>(*src++);
        }
      }
    });
  }
}

template <typename scalar_t>
void wgrad_impl(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                at::Tensor& grad_weight) {
  using acc = acc_t<scalar_t>;
  const auto acc_options = input.options().dtype(c10::CppTypeToScalarType<acc>::value);
  const int64_t k = p.gemm_k();
  const int64_t cog = p.out_channels_per_group();
  const int64_t rows_total = p.batch * p.out_height;
  const int64_t tile_rows = std::min(rows_total, rows_per_tile((k + cog) * p.out_width));
  at::Tensor sum = at::zeros({p.groups, cog, k}, acc_options);
  at::Tensor col = at::empty({k * tile_rows * p.out_width}, acc_options);
  at::Tensor go_tile = at::empty({cog * tile_rows * p.out_width}, acc_options);
  const scalar_t* in_ptr = input.const_data_ptr<scalar_t>();
  const scalar_t* go_ptr = grad_output.const_data_ptr<scalar_t>();
  acc* col_ptr = col.mutable_data_ptr<acc>();
  acc* go_buf = go_tile.mutable_data_ptr<acc>();
  acc* sum_ptr = sum.mutable_data_ptr<acc>();
  for (int64_t r0 = 0; r0 < rows_total; r0 += tile_rows) {
    const int64_t r1 = std::min(rows_total, r0 + tile_rows);
    const int64_t cols = (r1 - r0) * p.out_width;
    for (int64_t g = 0; g < p.groups; ++g) {
      im2col(p, in_ptr, strides4(input), g, r0, r1, col_ptr);
      gather_rows(p, go_ptr, strides4(grad_output), g * cog, cog, r0, r1, go_buf);
      // sum_g [cog x k] += go [cog x cols] * col^T [cols x k]; tiles in order: deterministic.
      gemm::gemm_strided<acc>(cog, k, cols, go_buf, cols, 1, col_ptr, 1, cols, sum_ptr + g * cog * k,
                              k, true);
    }
  }
  grad_weight.copy_(sum.view(grad_weight.sizes()));
}

template <typename scalar_t>
void grad_bias_impl(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  const Strides4 s = strides4(grad_output);
  const int64_t n_size = grad_output.size(0), h_size = grad_output.size(2), w_size = grad_output.size(3);
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  scalar_t* out = grad_bias.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, grad_output.size(1), 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      // Double accumulation: a long sum in float (or bf16) loses the small terms.
      double total = 0;
      for (int64_t n = 0; n < n_size; ++n)
        for (int64_t h = 0; h < h_size; ++h) {
          const scalar_t* row = go + n * s.n + c * s.c + h * s.h;
          for (int64_t w = 0; w < w_size; ++w) total += static_cast<double>(row[w * s.w]);
        }
      out[c] = static_cast<scalar_t>(total);
    }
  });
}

#define CONVPOOL_DISPATCH_CONV_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

}  // namespace

struct Conv2dBackend {
  static void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor* bias, at::Tensor& output) {
    CONVPOOL_DISPATCH_CONV_TYPES(input.scalar_type(), "conv2d", [&] {
      fprop_impl<scalar_t>(p, input, weight, bias, output);
    });
  }
  static void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    at::Tensor& grad_input) {
    CONVPOOL_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "conv2d_grad_input", [&] {
      dgrad_impl<scalar_t>(p, grad_output, weight, grad_input);
    });
  }
  static void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                    at::Tensor& grad_weight) {
    CONVPOOL_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "conv2d_grad_weight", [&] {
      wgrad_impl<scalar_t>(p, grad_output, input, grad_weight);
    });
  }
  static void grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias) {
    CONVPOOL_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "conv2d_grad_bias", [&] {
      grad_bias_impl<scalar_t>(grad_output, grad_bias);
    });
  }
};

TORCH_LIBRARY_IMPL(convpool, CPU, m) {
  m.impl("conv2d", &convpool::conv2d<Conv2dBackend>);
  m.impl("conv2d_grad_input", &convpool::conv2d_grad_input<Conv2dBackend>);
  m.impl("conv2d_grad_weight", &convpool::conv2d_grad_weight<Conv2dBackend>);
  m.impl("conv2d_grad_bias", &convpool::conv2d_grad_bias<Conv2dBackend>);
}

}  // namespace convpool::cpu
