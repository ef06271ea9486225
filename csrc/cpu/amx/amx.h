// Convolution on AMX tiles (amx/dispatch.cpp): the conv registry's "amx_bf16" entries, bfloat16
// fprop, wgrad and stride-1 dgrad (an fprop of grad_output with the flipped weight), where the CPU has
// AMX-BF16 and Linux grants the tile data permission (the entries need Isa::amx, isa.h).
#pragma once

#include <ATen/core/Tensor.h>

#include "../../params.h"

namespace convpool::cpu::amx {

// bfloat16 conv2d, any layout, not depthwise and at most 32x the multiply-adds in channel padding
// (the workspace grows with it; autotuning runs every applicable entry); the registry checks the
// CPU (isa_reached(Isa::amx)).
bool fprop_applies(const Conv2dParams& p, c10::ScalarType dtype);
// Where the heuristic wants it (measured: the rule's comment).
bool fprop_preferred(const Conv2dParams& p);
void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output);

// wgrad, bfloat16, any geometry and layout (an input holding inf or NaN runs gemm_im2col).
bool wgrad_applies(const Conv2dParams& p, c10::ScalarType dtype);
bool wgrad_preferred(const Conv2dParams& p);
void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
           at::Tensor& grad_weight);

// Stride-1 dgrad as an fprop (conv_gemm::dgrad_as_fprop), bfloat16.
bool dgrad_applies(const Conv2dParams& p, c10::ScalarType dtype);
bool dgrad_preferred(const Conv2dParams& p);
void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
           at::Tensor& grad_input);

}  // namespace convpool::cpu::amx
