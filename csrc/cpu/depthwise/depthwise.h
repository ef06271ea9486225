// Depthwise convolution on the CPU (one output channel per input channel, MobileNet's layers; the
// portable kernels take any channel multiplier): what the conv registry (conv2d.cpp) calls. Every
// function here is one registry entry's predicate or kernel, defined by the one dispatcher,
// dispatch.cpp.
//   portable   depthwise_channels_last, depthwise_rows: portable.h's templates, any dtype.
//   vector     depthwise_vec_{channels_last,flat,planes,tiles}: float32, AVX2 or AVX-512, one
//              entry per walk (Walk); the kernels are written once (kernels_impl.h) and built once
//              per ISA (avx2.cpp, avx512.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include "../../params.h"

namespace convpool::cpu {

inline bool is_depthwise(const Conv2dParams& p) {
  return p.groups > 1 && p.in_channels_per_group() == 1;
}

namespace depthwise {

// Channel multiplier 1 with channels unit-stride in both tensors (channels_last).
inline bool channels_innermost(const Conv2dParams& p, const at::Tensor& a, const at::Tensor& b) {
  return p.out_channels == p.in_channels && p.in_channels > 1 && a.stride(1) == 1 &&
         b.stride(1) == 1;
}

// ---- the portable kernels (any dtype, any channel multiplier) ------------------------------------

// depthwise_channels_last: channels are the unit-stride inner loop (channels_innermost).
void fprop_channels_last(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor* bias, at::Tensor& output);
void dgrad_channels_last(const Conv2dParams& p, const at::Tensor& grad_output,
                         const at::Tensor& weight, at::Tensor& grad_input);
void wgrad_channels_last(const Conv2dParams& p, const at::Tensor& grad_output,
                         const at::Tensor& input, at::Tensor& grad_weight);
// depthwise_rows: any layout, rows along the width.
void fprop_rows(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                const at::Tensor* bias, at::Tensor& output);
void dgrad_rows(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                at::Tensor& grad_input);
void wgrad_rows(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                at::Tensor& grad_weight);

// ---- the vector kernels (float32, one output channel per input channel) -------------------------

// How a pass walks its tensors: along channels (channels_last), whole small planes flattened
// (flat, stride 1), along unit-stride rows (planes, stride 1), or in channel-blocked tiles
// (blocked: 16 planes interleaved, banded rows; any layout and stride).
enum class Walk { channels_last, flat, planes, blocked };
enum class Pass { fprop, dgrad, wgrad };

// Whether `walk` can run `pass` of `p` on these tensors: float32, one output channel per input
// channel, and the walk's layout. `x` is what the pass reads along the correlation (fprop and
// wgrad: input; dgrad: grad_output), `y` what it writes (output, grad_input) or, for wgrad,
// grad_output. The CPU's AVX2 is the registry's check.
bool walk_fits(Walk walk, Pass pass, const Conv2dParams& p, const at::Tensor& x,
               const at::Tensor& y);
// The hand-tuned part: whether the heuristic takes `walk` where it fits (before the next walk).
bool walk_preferred(Walk walk, Pass pass, const Conv2dParams& p, const at::Tensor& x,
                    const at::Tensor& y);

void fprop_simd(Walk walk, const Conv2dParams& p, const at::Tensor& input,
                const at::Tensor& weight, const at::Tensor* bias, at::Tensor& output);
void dgrad_simd(Walk walk, const Conv2dParams& p, const at::Tensor& grad_output,
                const at::Tensor& weight, at::Tensor& grad_input);
void wgrad_simd(Walk walk, const Conv2dParams& p, const at::Tensor& grad_output,
                const at::Tensor& input, at::Tensor& grad_weight);

}  // namespace depthwise
}  // namespace convpool::cpu
