// The GEMM-based conv algorithms (conv_gemm.cpp): convolution as a matrix product of our own GEMM
// (gemm.h) over tiles of output rows, the col operand packed straight from the input (implicit
// im2col, im2col.h). Registry entries (conv2d.cpp): gemm_im2col (fprop, stride-1 dgrad, wgrad),
// gemm_col2im (dgrad, any stride) and winograd_f4x4, whose Winograd result falls back to the
// GEMM where it is not finite. Each function dispatches on the dtype (float, double, half,
// bfloat16; half types accumulate in float).
#pragma once

#include <ATen/core/Tensor.h>

#include "../params.h"

namespace convpool::cpu::conv_gemm {

// For stride 1, dgrad is itself a convolution: grad_output (*) the weight with in/out channels
// swapped and taps flipped, padded by dilation * (kernel - 1) - pad (when that is >= 0). Same
// products, summed in another order; it runs on the fprop path (implicit im2col, no col2im).
bool dgrad_as_fprop(const Conv2dParams& p);
// The convolution that stride-1 dgrad of `p` computes (dgrad_as_fprop(p) must hold).
Conv2dParams dgrad_as_fprop_params(const Conv2dParams& p);

// gemm_im2col.
void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output);
void dgrad_by_fprop(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    at::Tensor& grad_input);
void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
           at::Tensor& grad_weight);

// gemm_col2im: col = W^T * grad_output per tile, then col2im (any stride).
// The heuristic prefers it where the stride-1 route (dgrad_by_fprop) does not apply, and over
// that route where grad_output has few pixels: dgrad_by_fprop re-lays the whole weight out
// (C_out x C_in x kH x kW values) per call, a cost the GEMM amortizes over N * H_out * W_out.
bool dgrad_col2im_preferred(const Conv2dParams& p, const at::Tensor& grad_input);
void dgrad_col2im(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                  at::Tensor& grad_input);

// winograd_f4x4 (winograd.h), recomputed by fprop above where a value came out inf or NaN.
void winograd_fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor* bias, at::Tensor& output);
void winograd_dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    at::Tensor& grad_input);

}  // namespace convpool::cpu::conv_gemm
