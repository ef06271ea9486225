// Winograd F(4x4, 3x3) for 3x3, stride-1, undilated, ungrouped CPU convolutions (Lavin & Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016): 36 multiplications per 4x4 output
// tile and channel pair instead of 144. Used by fprop and by stride-1 dgrad (which runs as an
// fprop); float32, and half / bfloat16 through float tiles. Float64 keeps the direct GEMM path.
//
// CONVPOOL_CPU_WINOGRAD=0|1|auto (read at first use; convpool._C._cpu_winograd_mode() reads and
// sets it at run time): 0 never, 1 whenever the convolution has that shape and dtype, auto (the
// default) where it is measured to be faster (preferred() below). A shorthand for the registry:
// 0 makes winograd_f4x4 inapplicable, 1 makes the heuristic prefer it wherever it applies.
#pragma once

#include <ATen/core/Tensor.h>

#include "../../params.h"

namespace convpool::cpu::winograd {

// The current mode, "0", "1" or "auto".
const char* mode_name();
// Sets the mode from "0", "1" or "auto"; anything else raises.
void set_mode(const char* name);

// Whether Winograd can compute conv2d's fprop of `p` in `dtype` (its registry entry,
// winograd_f4x4, is applicable): the shape and dtype above, and a mode other than "0".
bool applies(const Conv2dParams& p, c10::ScalarType dtype);
// Whether the heuristic takes it where it applies: mode "1", or the measured thresholds.
bool preferred(const Conv2dParams& p);

// output = input (*) weight + bias for a problem applies() accepted (any strides, any layout).
// Returns false if a value came out inf or NaN: an inf/NaN input or weight spreads over whole
// 4x4 tiles (and inf - inf turns into NaN), unlike the direct sum, so the caller recomputes the
// output with the direct path, which then matches PyTorch's non-finite results.
bool fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output);

}  // namespace convpool::cpu::winograd
