// Host entry points of the CUDA kernels (conv2d.cu, max_pool2d.cu): raw pointers, element strides
// and a params struct, nothing of torch. They are compiled twice: by nvcc into convpool::cuda, and
// by the host compiler for the emulator into convpool::emu (csrc/emu/kernels.cpp).
// `stream` is a cudaStream_t (ignored by the emulator).
#pragma once

#include <cstdint>
#include <type_traits>

#include "../params.h"

#ifndef CONVPOOL_KERNEL_NS
#define CONVPOOL_KERNEL_NS cuda
#endif

namespace convpool::CONVPOOL_KERNEL_NS {

// Accumulation type: double for double, float for float, half and bfloat16.
template <typename T>
using acc_type = std::conditional_t<std::is_same_v<T, double>, double, float>;

// The conv GEMMs run on tensor cores (WMMA, fp32 accumulation) for half and bfloat16, and for
// float when `allow_tf32` (TF32 inputs); on CUDA cores for double and float without TF32.

// fprop: output = input (*) weight + bias (bias may be null).
template <typename T>
void conv2d_fprop(const Conv2dParams& p, const T* input, Strides4 is, const T* weight, Strides4 ws,
                  const T* bias, T* output, Strides4 os, bool allow_tf32, void* stream);

// dgrad: grad_input from grad_output and weight.
template <typename T>
void conv2d_dgrad(const Conv2dParams& p, const T* grad_output, Strides4 gs, const T* weight,
                  Strides4 ws, T* grad_input, Strides4 is, bool allow_tf32, void* stream);

// wgrad: the reduction over N * H_out * W_out is split in conv2d_wgrad_splits(p) parts whose
// partial sums go to `workspace` (conv2d_wgrad_workspace(p) elements of acc_type<T>), then are
// added in a fixed order: deterministic.
int64_t conv2d_wgrad_splits(const Conv2dParams& p);
int64_t conv2d_wgrad_workspace(const Conv2dParams& p);
template <typename T>
void conv2d_wgrad(const Conv2dParams& p, const T* grad_output, Strides4 gs, const T* input,
                  Strides4 is, acc_type<T>* workspace, T* grad_weight, Strides4 ws,
                  bool allow_tf32, void* stream);

// grad_bias[c] = sum over n, h, w of grad_output[n][c][h][w] (sizes n, c, h, w).
template <typename T>
void conv2d_grad_bias(const T* grad_output, Strides4 gs, int64_t n, int64_t c, int64_t h,
                      int64_t w, T* grad_bias, void* stream);

// max_pool2d: values and int64 indices (h * W + w per plane), or the values alone when `indices`
// is nullptr; `lowest` is -inf (or the lowest integer), the value of a window without any input
// element.
template <typename T>
void max_pool2d_forward(const Pool2dParams& p, const T* input, Strides4 is, T lowest, T* values,
                        Strides4 vs, int64_t* indices, Strides4 xs, void* stream);

// Gather: each grad_input element sums the grad_output of the windows whose index chose it.
template <typename T>
void max_pool2d_backward(const Pool2dParams& p, const T* grad_output, Strides4 gs,
                         const int64_t* indices, Strides4 xs, T* grad_input, Strides4 is,
                         void* stream);

}  // namespace convpool::CONVPOOL_KERNEL_NS
