// The CPU backends of the op bodies (conv2d_op.h, max_pool2d_op.h): each member selects its
// algorithm in the registry (registry.h) and runs it. Registered for the CPU dispatch key by
// csrc/cpu_registration.cpp, which is also where the CUDA emulator's routing lives: nothing under
// cpu/ knows of the emulator.
#pragma once

#include <ATen/core/Tensor.h>

#include "../params.h"

namespace convpool::cpu {

struct Conv2dBackend {
  static void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor* bias, at::Tensor& output);
  static void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    at::Tensor& grad_input);
  static void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                    at::Tensor& grad_weight);
  static void grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias);
};

struct MaxPool2dBackend {
  // indices: nullptr for the values alone.
  static void forward(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                      at::Tensor* indices);
  static void backward(const Pool2dParams& p, const at::Tensor& grad_output,
                       const at::Tensor& indices, at::Tensor& grad_input);
};

}  // namespace convpool::cpu
