// Vectorized float32 kernels for depthwise convolution with one output channel per input channel
// (MobileNet's layers): AVX-512 or AVX2 + FMA, chosen at run time with the GEMM (isa.h).
// channels_last tensors are vectorized along channels, NCHW-like ones (unit-stride rows) along the
// width. Each function returns false where it does not apply (other dtypes, channel multipliers,
// layouts or strides, or a CPU without AVX2); the caller then runs the portable templates of
// depthwise_conv2d.h, which define the results these must reproduce.
#pragma once

#include <ATen/core/Tensor.h>

#include "../params.h"

namespace convpool::cpu::depthwise {

bool fprop_simd(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                const at::Tensor* bias, at::Tensor& output);
bool dgrad_simd(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                at::Tensor& grad_input);
bool wgrad_simd(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                at::Tensor& grad_weight);

}  // namespace convpool::cpu::depthwise
