// Routing of the CPU dispatch key: under convpool.testing.cuda_emulation() the CPU registrations
// run the CUDA kernels through the emulator (csrc/emu/) instead of the CPU kernels. Without
// CONVPOOL_WITH_EMU the routed backends are the CPU backends themselves, at no cost.
#pragma once

#include <ATen/core/Tensor.h>

#include "../params.h"

namespace convpool {

#ifdef CONVPOOL_WITH_EMU
namespace emulated {

// True inside convpool.testing.cuda_emulation() (a process-wide switch, csrc/emu/backend.cpp).
bool active();

// The CUDA backends (csrc/cuda/backend.h) with their kernels compiled for the emulator.
void conv2d_fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                  const at::Tensor* bias, at::Tensor& output);
void conv2d_dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                  at::Tensor& grad_input);
void conv2d_wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                  at::Tensor& grad_weight);
void conv2d_grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias);
void max_pool2d_forward(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                        at::Tensor* indices);
void max_pool2d_backward(const Pool2dParams& p, const at::Tensor& grad_output,
                         const at::Tensor& indices, at::Tensor& grad_input);

}  // namespace emulated

template <class Cpu>
struct RoutedConv2dBackend {
  static void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor* bias, at::Tensor& output) {
    emulated::active() ? emulated::conv2d_fprop(p, input, weight, bias, output)
                         : Cpu::fprop(p, input, weight, bias, output);
  }
  static void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    at::Tensor& grad_input) {
    emulated::active() ? emulated::conv2d_dgrad(p, grad_output, weight, grad_input)
                         : Cpu::dgrad(p, grad_output, weight, grad_input);
  }
  static void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                    at::Tensor& grad_weight) {
    emulated::active() ? emulated::conv2d_wgrad(p, grad_output, input, grad_weight)
                         : Cpu::wgrad(p, grad_output, input, grad_weight);
  }
  static void grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias) {
    emulated::active() ? emulated::conv2d_grad_bias(grad_output, grad_bias)
                         : Cpu::grad_bias(grad_output, grad_bias);
  }
};

template <class Cpu>
struct RoutedMaxPool2dBackend {
  static void forward(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                      at::Tensor* indices) {
    emulated::active() ? emulated::max_pool2d_forward(p, input, values, indices)
                         : Cpu::forward(p, input, values, indices);
  }
  static void backward(const Pool2dParams& p, const at::Tensor& grad_output,
                       const at::Tensor& indices, at::Tensor& grad_input) {
    emulated::active() ? emulated::max_pool2d_backward(p, grad_output, indices, grad_input)
                         : Cpu::backward(p, grad_output, indices, grad_input);
  }
};

#else

template <class Cpu>
using RoutedConv2dBackend = Cpu;
template <class Cpu>
using RoutedMaxPool2dBackend = Cpu;

#endif

}  // namespace convpool
