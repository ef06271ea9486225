// The GEMM-based conv algorithms (conv_gemm.h): fprop, dgrad and wgrad as GEMMs of our own
// (gemm.h) over the implicit im2col operands of im2col.h.
//
// Output rows are numbered globally, row = n * out_height + oh, and processed in tiles of rows, so
// a small feature map batches several images into one GEMM and a large one is split; every
// workspace is bounded (tiles, packing panels), never proportional to the batch. Tensors are read
// and written through their strides, so NCHW, channels_last and arbitrary views need no copy.
// Half and bfloat16 are converted to float on the way into the panels (float accumulation).
//
//   fprop  tile = W * col (NCHW output) or col^T * W^T (channels_last output, stored unit-stride);
//          col is never built: packers read it from the input (implicit im2col).
//   dgrad  stride 1: a convolution of grad_output with the flipped weight (the fprop path, and
//          Winograd's); any stride: col = W^T * grad_output per tile, then col2im.
//   wgrad  sum += grad_output * col^T over tiles, in tile order (deterministic).
#include "conv_gemm.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <type_traits>

#include "../shape.h"
#include "gemm/gemm.h"
#include "helpers.h"
#include "im2col.h"
#include "winograd/winograd.h"

namespace convpool::cpu::conv_gemm {

bool dgrad_as_fprop(const Conv2dParams& p) {
  return p.stride_h == 1 && p.stride_w == 1 && p.pad_h <= p.dilation_h * (p.kernel_h - 1) &&
         p.pad_w <= p.dilation_w * (p.kernel_w - 1);
}

Conv2dParams dgrad_as_fprop_params(const Conv2dParams& p) {
  Conv2dParams q = p;
  q.in_channels = p.out_channels;
  q.in_height = p.out_height;
  q.in_width = p.out_width;
  q.out_channels = p.in_channels;
  q.pad_h = p.dilation_h * (p.kernel_h - 1) - p.pad_h;
  q.pad_w = p.dilation_w * (p.kernel_w - 1) - p.pad_w;
  q.out_height = p.in_height;
  q.out_width = p.in_width;
  return q;
}

// Measured on AMD EPYC Zen 4 (family 25 model 17), 2 threads, 2026-12-02 (benchmarks/results/
// cpu-dgrad-zen4-2026-12-02.txt): at N * H_out * W_out = 49 and 98, gemm_col2im ran 1.6-3.9x
// faster than dgrad_by_fprop (ResNet-50 layer4 3x3 and 1x1, VGG-16 conv5 at 7x7) in both layouts;
// at 196-392 still 1.16-1.5x in NCHW, and in channels_last for a 3x3 kernel (VGG-16 conv5_2 at
// 14x14, batch 1: 9.3 ms against 11.9; 1.78x in the quick report of the same day) but not for
// 1x1 (ResNet-50 256->1024 @14: 6.1 ms against 2.9); at 1568 and beyond dgrad_by_fprop (or
// Winograd, preferred before both) won.
constexpr int64_t kCol2imPixels = 128;   // any layout and kernel
constexpr int64_t kCol2imPixelsMore = 512;  // NCHW grad_input, or a kernel larger than 1x1

bool dgrad_col2im_preferred(const Conv2dParams& p, const at::Tensor& grad_input) {
  if (!dgrad_as_fprop(p)) return true;
  const int64_t pixels = p.batch * p.out_height * p.out_width;
  if (pixels <= kCol2imPixels) return true;
  const bool pointwise = p.kernel_h == 1 && p.kernel_w == 1;
  return pixels <= kCol2imPixelsMore && (!pointwise || !is_channels_last(grad_input));
}

namespace {

using namespace im2col;

at::Tensor dgrad_as_fprop_weight(const Conv2dParams& p, const at::Tensor& weight) {
  // [groups, cog, cig, kh, kw] -> [groups * cig, cog, kh, kw], taps reversed.
  return weight
      .reshape({p.groups, p.out_channels_per_group(), p.in_channels_per_group(), p.kernel_h,
                p.kernel_w})
      .transpose(1, 2)
      .flip({3, 4})
      .reshape({p.in_channels, p.out_channels_per_group(), p.kernel_h, p.kernel_w});
}

constexpr int64_t kWorkspaceElements = int64_t(1) << 21;

// Output rows per tile so that `elements_per_row` workspace elements per row stay in budget.
int64_t rows_per_tile(int64_t elements_per_row) {
  return std::max<int64_t>(1, kWorkspaceElements / std::max<int64_t>(1, elements_per_row));
}

// A float weight laid out channels_last ([C_out][kh][kw][C_in/groups] in memory, as a model
// converted to channels_last holds it): the GEMMs read it in place, with the reduction ordered
// (kh, kw, c), instead of copying it (8 MiB for DCGAN's 512 -> 256 4x4) on every call.
template <typename scalar_t>
bool float_channels_last_weight(const at::Tensor& weight) {
  return std::is_same_v<scalar_t, float> && !weight.is_contiguous() &&
         weight.is_contiguous(at::MemoryFormat::ChannelsLast);
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
  // float channels_last input (unit channel stride): the register-transpose packer, with the
  // weight as [C_out][kh][kw][C_in/groups] (in place where it is laid out so).
  const bool pixel_major = is_channels_last(output);
  const bool cl_float = pixel_major && std::is_same_v<scalar_t, float> && input.stride(1) == 1 &&
                        p.in_channels_per_group() >= 8;
  const bool w_in_place = cl_float && float_channels_last_weight<scalar_t>(weight);
  const at::Tensor w = w_in_place ? at::Tensor() : weight_matrices<scalar_t>(p, weight);
  const at::Tensor w_cl = !cl_float     ? at::Tensor()
                          : w_in_place ? weight
                                       : w.view(weight.sizes()).permute({0, 2, 3, 1}).contiguous();
  const at::Tensor b = bias ? bias->to(acc_options.dtype()).contiguous() : at::Tensor();
  const int64_t k = p.gemm_k();
  const int64_t cog = p.out_channels_per_group();
  const int64_t rows_total = p.batch * p.out_height;
  // Only the output tile is a workspace: the GEMM packs its col operand from the input.
  // A tile of about 2 MiB: its GEMM output is still in cache when scattered.
  const int64_t tile_rows =
      std::min(rows_total, std::max<int64_t>(1, (int64_t(1) << 19) / std::max<int64_t>(1, cog * p.out_width)));
  at::Tensor out_tile = at::empty({cog * tile_rows * p.out_width}, acc_options);
  const scalar_t* in_ptr = input.const_data_ptr<scalar_t>();
  scalar_t* out_ptr = output.mutable_data_ptr<scalar_t>();
  // channels_last output: compute the tile pixel-major ([pixels x C_out]) so that it is stored
  // in unit-stride runs; otherwise channel-major ([C_out x pixels]), rows of an NCHW plane.
  acc* tile_ptr = out_tile.mutable_data_ptr<acc>();
  for (int64_t r0 = 0; r0 < rows_total; r0 += tile_rows) {
    const int64_t r1 = std::min(rows_total, r0 + tile_rows);
    const int64_t cols = (r1 - r0) * p.out_width;
    for (int64_t g = 0; g < p.groups; ++g) {
      const acc* w_g = w.defined() ? w.const_data_ptr<acc>() + g * cog * k : nullptr;
      const acc* b_g = b.defined() ? b.const_data_ptr<acc>() + g * cog : nullptr;
      const auto col = col_packer<scalar_t, acc>(p, in_ptr, strides4(input), g, r0);
      if (cl_float) {
        // As below with k = (kh, kw, c): w_cl is the weight as [C_out][kh][kw][C_in/groups].
        if constexpr (std::is_same_v<scalar_t, float>)
          gemm::gemm<float>(cols, cog, k, ChannelsLastColTAsA{&p, in_ptr, strides4(input), g, r0},
                            gemm::StridedB<float>{w_cl.const_data_ptr<float>() + g * cog * k, 1, k},
                            tile_ptr, cog, false);
        scatter_rows_pixel_major(p, tile_ptr, b_g, g * cog, cog, r0, r1, out_ptr, strides4(output));
      } else if (pixel_major) {
        // tile [cols x cog] = col^T [cols x k] * W_g^T [k x cog]
        gemm::gemm<acc>(cols, cog, k, ColTAsA<scalar_t, acc>{col},
                        gemm::StridedB<acc>{w_g, 1, k}, tile_ptr, cog, false);
        scatter_rows_pixel_major(p, tile_ptr, b_g, g * cog, cog, r0, r1, out_ptr, strides4(output));
      } else {
        // tile [cog x cols] = W_g [cog x k] * col [k x cols]
        gemm::gemm<acc>(cog, cols, k, gemm::StridedA<acc>{w_g, k, 1}, ColAsB<scalar_t, acc>{col},
                        tile_ptr, cols, false);
        scatter_rows(p, tile_ptr, b_g, g * cog, cog, r0, r1, out_ptr, strides4(output));
      }
    }
  }
}

// Winograd where every value comes out finite; else (inf/NaN spread over whole tiles) the GEMM
// recomputes the output, which then matches PyTorch's non-finite results.
template <typename scalar_t>
void winograd_fprop_t(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor* bias, at::Tensor& output) {
  if (!winograd::fprop(p, input, weight, bias, output))
    fprop_impl<scalar_t>(p, input, weight, bias, output);
}

template <typename scalar_t>
void dgrad_by_fprop_t(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    at::Tensor& grad_input, bool winograd) {
  const Conv2dParams q = dgrad_as_fprop_params(p);
  const at::Tensor w = dgrad_as_fprop_weight(p, weight);
  if (winograd) {
    winograd_fprop_t<scalar_t>(q, grad_output, w, nullptr, grad_input);
  } else {
    fprop_impl<scalar_t>(q, grad_output, w, nullptr, grad_input);
  }
}

// col = W^T * grad_output per tile, then col2im (any stride).
template <typename scalar_t>
void dgrad_impl(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                at::Tensor& grad_input) {
  using acc = acc_t<scalar_t>;
  const auto acc_options = grad_output.options().dtype(c10::CppTypeToScalarType<acc>::value);
  // W^T's rows (the reduction k) ordered as the weight lies: (c, kh, kw), or (kh, kw, c) for a
  // float channels_last weight read in place; col2im_add reads col in the same order.
  const bool tap_major = float_channels_last_weight<scalar_t>(weight);
  const at::Tensor w = tap_major ? weight : weight_matrices<scalar_t>(p, weight);
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
        col2im_add(p, col_ptr, g, r0, r1, n0, block_ptr, tap_major);
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
  const int64_t tile_rows = std::min(rows_total, rows_per_tile(cog * p.out_width));
  at::Tensor sum = at::zeros({p.groups, cog, k}, acc_options);
  at::Tensor go_tile = at::empty({cog * tile_rows * p.out_width}, acc_options);
  const scalar_t* in_ptr = input.const_data_ptr<scalar_t>();
  const scalar_t* go_ptr = grad_output.const_data_ptr<scalar_t>();
  acc* go_buf = go_tile.mutable_data_ptr<acc>();
  acc* sum_ptr = sum.mutable_data_ptr<acc>();
  // float channels_last input: k ordered (kh, kw, c) so packing copies channel runs; the sum is
  // permuted back to the weight's layout at the end. A dense channels_last grad_output is read in
  // place as the [cog x pixels] operand (uniform pixel stride), without a gather.
  const Strides4 gs = strides4(grad_output);
  const bool cl_float = std::is_same_v<scalar_t, float> && is_channels_last(input) &&
                        input.stride(1) == 1 && p.in_channels_per_group() >= 8;
  const bool go_direct = cl_float && gs.c == 1 && gs.w == p.out_channels &&
                         gs.h == p.out_width * gs.w && gs.n == p.out_height * gs.h;
  for (int64_t r0 = 0; r0 < rows_total; r0 += tile_rows) {
    const int64_t r1 = std::min(rows_total, r0 + tile_rows);
    const int64_t cols = (r1 - r0) * p.out_width;
    for (int64_t g = 0; g < p.groups; ++g) {
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (cl_float) {
          const ChannelsLastColTAsB col{&p, in_ptr, strides4(input), g, r0};
          if (go_direct) {
            const float* go_g = go_ptr + r0 * p.out_width * gs.w + g * cog;
            gemm::gemm<float>(cog, k, cols, gemm::StridedA<float>{go_g, 1, gs.w}, col,
                              sum_ptr + g * cog * k, k, true);
          } else {
            gather_rows(p, go_ptr, gs, g * cog, cog, r0, r1, go_buf);
            gemm::gemm<float>(cog, k, cols, gemm::StridedA<float>{go_buf, cols, 1}, col,
                              sum_ptr + g * cog * k, k, true);
          }
          continue;
        }
      }
      gather_rows(p, go_ptr, strides4(grad_output), g * cog, cog, r0, r1, go_buf);
      // sum_g [cog x k] += go [cog x cols] * col^T [cols x k]; tiles in order: deterministic.
      const auto col = col_packer<scalar_t, acc>(p, in_ptr, strides4(input), g, r0);
      gemm::gemm<acc>(cog, k, cols, gemm::StridedA<acc>{go_buf, cols, 1}, ColTAsB<scalar_t, acc>{col},
                      sum_ptr + g * cog * k, k, true);
    }
  }
  if (cl_float) {
    grad_weight.copy_(
        sum.view({p.out_channels, p.kernel_h, p.kernel_w, p.in_channels_per_group()}).permute({0, 3, 1, 2}));
  } else {
    grad_weight.copy_(sum.view(grad_weight.sizes()));
  }
}

}  // namespace

#define CONVPOOL_DISPATCH_CONV_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output) {
  CONVPOOL_DISPATCH_CONV_TYPES(input.scalar_type(), "conv2d", [&] {
    fprop_impl<scalar_t>(p, input, weight, bias, output);
  });
}

void dgrad_by_fprop(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    at::Tensor& grad_input) {
  CONVPOOL_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "conv2d_grad_input", [&] {
    dgrad_by_fprop_t<scalar_t>(p, grad_output, weight, grad_input, false);
  });
}

void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
           at::Tensor& grad_weight) {
  CONVPOOL_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "conv2d_grad_weight", [&] {
    wgrad_impl<scalar_t>(p, grad_output, input, grad_weight);
  });
}

void dgrad_col2im(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                  at::Tensor& grad_input) {
  CONVPOOL_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "conv2d_grad_input", [&] {
    dgrad_impl<scalar_t>(p, grad_output, weight, grad_input);
  });
}

void winograd_fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor* bias, at::Tensor& output) {
  CONVPOOL_DISPATCH_CONV_TYPES(input.scalar_type(), "conv2d", [&] {
    winograd_fprop_t<scalar_t>(p, input, weight, bias, output);
  });
}

void winograd_dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    at::Tensor& grad_input) {
  CONVPOOL_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "conv2d_grad_input", [&] {
    dgrad_by_fprop_t<scalar_t>(p, grad_output, weight, grad_input, true);
  });
}

#undef CONVPOOL_DISPATCH_CONV_TYPES

}  // namespace convpool::cpu::conv_gemm
