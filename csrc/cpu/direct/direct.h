// Direct convolution vectorized over output channels (direct/dispatch.cpp): the conv registry's
// "direct_hwc" entries (fprop, wgrad and, by stride phase, dgrad). Float32, any layout.
#pragma once

#include <ATen/core/Tensor.h>

#include "../../params.h"

namespace convpool::cpu::direct {

// Any conv2d in float32.
bool fprop_applies(const Conv2dParams& p, c10::ScalarType dtype);
// Where the heuristic wants it (measured: the rule's comment).
bool fprop_preferred(const Conv2dParams& p, const at::Tensor& output);
void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output);

// Any conv2d in float32.
bool wgrad_applies(const Conv2dParams& p, c10::ScalarType dtype);
bool wgrad_preferred(const Conv2dParams& p);
void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
           at::Tensor& grad_weight);

// Float32, undilated, strides up to 16 (dgrad_phases_applies).
bool dgrad_applies(const Conv2dParams& p, c10::ScalarType dtype);
bool dgrad_preferred(const Conv2dParams& p, const at::Tensor& grad_input);
void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
           at::Tensor& grad_input);

}  // namespace convpool::cpu::direct
