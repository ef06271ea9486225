// Vectorized float32 kernels for depthwise convolution with one output channel per input channel
// (MobileNet's layers): AVX-512 or AVX2 + FMA, chosen at run time with the GEMM (isa.h).
// Each pass walks its tensors one of four ways (Walk); the registry (conv2d.cpp) lists one entry
// per walk, asks walk_fits whether it can run and walk_preferred whether the heuristic wants it.
// The portable templates of depthwise_conv2d.h define the results these must reproduce.
#pragma once

#include <ATen/core/Tensor.h>

#include "../params.h"

namespace convpool::cpu::depthwise {

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

}  // namespace convpool::cpu::depthwise
